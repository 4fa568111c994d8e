"""Time and memory accounting: the phase timer, the ETA arithmetic, that a real search's and a
real training run's phases add up to their wall time, with progress lines giving rates and ETAs,
and the peak memory of their phases."""
import json
import time

import pytest
import torch

from conftest import run_cli
from plumbing import timing


def test_phase_timer_accumulates_laps_and_round_trips():
    timer = timing.PhaseTimer()
    with timer("a"):
        time.sleep(0.02)
    for _ in timer.iterate([1, 2], "data"):
        with timer("b"):
            time.sleep(0.01)
    lap = timer.lap()
    assert set(lap) == {"a", "b", "data"} and lap["a"] >= 0.02 and lap["b"] >= 0.02
    with timer("a"):
        time.sleep(0.01)
    second = timer.lap()
    assert set(second) == {"a"} and 0.01 <= second["a"] < lap["a"]  # phases without time left out
    clone = timing.PhaseTimer()
    clone.load_state_dict(timer.state_dict())
    assert clone.total == timer.total and clone.lap() == {}


def test_duration_and_search_eta():
    assert [timing.duration(s) for s in (4.4, 65, 3600 + 7 * 60 + 20)] == ["4s", "1m05s", "1h07m"]
    epoch, search = timing.search_eta(steps_left=10, step_seconds=2.0, epochs_after=3, steps_per_epoch=100,
                                      events_in_epoch=1, events_after=5, event_seconds=30.0,
                                      validation_seconds=4.0)
    assert epoch == 10 * 2 + 30 + 4
    assert search == epoch + 3 * (100 * 2 + 4) + 5 * 30


def test_search_phases_add_up_to_its_wall_time(search_runs):
    run_dir = search_runs["restricted"]
    results = json.loads((run_dir / "results.json").read_text())
    seconds = results["time_seconds"]
    assert {"data", "arch", "weight", "saliency", "compare", "validation", "files"} <= set(seconds)
    assert sum(seconds.values()) == pytest.approx(results["search_cost_seconds"], rel=0.1)
    log = (run_dir / "log.txt").read_text()
    assert "epoch 2 time: data" in log and " img/s, epoch ETA " in log and ", search ETA " in log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (run_dir / "tb").glob("events.out.tfevents.*")
    tags = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"time/arch", "time/weight", "time/saliency", "memory/weight", "memory/saliency"} <= set(tags)


def test_search_reports_its_peak_memory(search_runs):
    """Per phase and epoch in the log and TensorBoard, per phase over the run in results.json (the
    process's RSS on a CPU)."""
    run_dir = search_runs["restricted"]
    memory = json.loads((run_dir / "results.json").read_text())["memory"]
    assert memory["kind"] == "cpu_rss" and {"arch", "weight", "saliency", "validation"} <= set(memory["peak_MB"])
    assert all(v > 0 for v in memory["peak_MB"].values()) and memory["max_MB"] == max(memory["peak_MB"].values())
    assert "epoch 2 memory (cpu_rss): " in (run_dir / "log.txt").read_text()


def test_peak_memory_of_a_phase_sees_its_allocations():
    timer = timing.PhaseTimer(torch.device("cpu"))
    with timer("small"):
        pass
    with timer("big"):
        block = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
        del block
    peaks = timer.memory_lap()
    assert peaks["big"] >= peaks["small"] + 32 and timer.memory_lap() == {}
    again = timing.PhaseTimer()
    again.load_state_dict(timer.state_dict())  # (a resumed run's peaks go on from the checkpoint's)
    assert again.peak == timer.peak and again.peak_reserved == timer.peak_reserved


def test_training_phases_add_up_and_progress_lines_give_etas(tmp_path):
    run_cli("train.py", "--arch", "DARTS_V2", "--dataset", "digits", "--epochs", "2", "--batch_size", "128",
            "--init_channels", "4", "--layers", "3", "--no_auxiliary", "--report_freq", "4", "--out_dir", tmp_path)
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    seconds = results["time_seconds"]
    assert set(seconds) == {"setup", "train", "eval", "files"}
    assert sum(seconds.values()) == pytest.approx(results["wall_time_seconds"], rel=0.1)
    log = (run_dir / "log.txt").read_text()
    assert log.count(", run ETA ") >= 4 and "epoch 1 time: train" in log
