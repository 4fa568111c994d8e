"""Out of memory inside a search's weight step, an s2 Hessian chunk and a retraining step (PyTorch's
own exception, raised from the real call inside the step): one line naming the phase, the memory,
the intact checkpoint and the flag to change; exit code 3; the run resumes from that checkpoint."""
import json

import pytest
import torch

import train
import train_search
import utils
from conftest import fail_on_call
from plumbing import oom

SEARCH = ["--dataset", "digits", "--subset", "64", "--batch_size", "8", "--init_channels", "4", "--layers", "3",
          "--epochs", "3", "--warmup", "1", "--report_freq", "100", "--seed", "0", "--no_summary"]
TRAIN = ["--arch", "DARTS_V2", "--dataset", "digits", "--epochs", "2", "--batch_size", "32", "--init_channels", "4",
         "--layers", "3", "--no_auxiliary", "--report_freq", "100", "--seed", "0"]
CUDA = ("CUDA out of memory. Tried to allocate 20.00 MiB. "
        "GPU 0 has a total capacity of 79.19 GiB of which 2.06 MiB is free.")
CPU = ("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: "
       "can't allocate memory: you tried to allocate 20971520 bytes.")


def stops_out_of_memory(main, argv, capsys) -> str:
    """Run a script's main as its CLI does; it must exit with code 3 and one line on stderr."""
    with pytest.raises(SystemExit) as stop:
        utils.run_cli(main, argv)
    assert stop.value.code == oom.EXIT_CODE == 3
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: out of memory in the ")
    return line


def test_the_search_weight_step(tmp_path, monkeypatch, capsys):
    # 4 steps per epoch, events after steps 1 and 3 from epoch 1: the 7th weight step is epoch 1's
    # third, after the checkpoint of the first event.
    fail_on_call(monkeypatch, torch.nn.utils, "clip_grad_norm_", 7, torch.OutOfMemoryError(CUDA))
    line = stops_out_of_memory(train_search.main, [*SEARCH, "--out_dir", str(tmp_path)], capsys)
    (run,) = tmp_path.iterdir()
    assert "the weight phase on cpu: needed 20.00 MB more" in line
    assert f"the last checkpoint, {run / 'checkpoint.pt'} (at epoch 1, step 1), is intact" in line
    assert "lower --batch_size (now 8; a new run" in line
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 1
    monkeypatch.undo()
    utils.run_cli(train_search.main, [*SEARCH, "--resume", str(run)])
    assert json.loads((run / "results.json").read_text())["pruning_finished"] is False
    assert (run / "prune_events.jsonl").read_text().count("\n") == 8  # 4 events x 2 cells, none twice


def test_an_s2_hessian_chunk_resumes_with_a_smaller_chunk(tmp_path, monkeypatch, capsys):
    # NAS-Bench-201's cell (30 live rows), one s2 batch per event (a budget of 30 rows) in chunks
    # of 8: 4 chunks per event; the 6th is in the second event.
    s2 = [*SEARCH, "--search_space", "nb201", "--layers", "1", "--sal_second", "--sal_second_budget", "30"]
    fail_on_call(monkeypatch, torch.func, "vmap", 6, torch.OutOfMemoryError(CUDA))
    line = stops_out_of_memory(train_search.main, [*s2, "--hessian_chunk", "8", "--out_dir", str(tmp_path)], capsys)
    (run,) = tmp_path.iterdir()
    assert "the saliency phase" in line and "(at epoch 1, step 1), is intact" in line
    assert f"resume with the same flags and --resume {run} --hessian_chunk 4 (now 8)" in line
    monkeypatch.undo()
    utils.run_cli(train_search.main, [*s2, "--resume", str(run), "--hessian_chunk", "4"])
    assert (run / "results.json").is_file() and (run / "prune_events.jsonl").read_text().count("\n") == 4
    assert "resuming" in (run / "log.txt").read_text()


def test_a_retraining_step_with_the_cpu_allocators_error(tmp_path, monkeypatch, capsys):
    # 45 steps per epoch: the 50th is in epoch 1, after epoch 0's checkpoint.
    fail_on_call(monkeypatch, torch.nn.utils, "clip_grad_norm_", 50, RuntimeError(CPU))
    line = stops_out_of_memory(train.main, [*TRAIN, "--out_dir", str(tmp_path)], capsys)
    (run,) = tmp_path.iterdir()
    assert "the train phase on cpu: needed 20.0 MB more" in line
    assert "(at the end of epoch 0), is intact" in line and "lower --batch_size (now 32" in line
    monkeypatch.undo()
    utils.run_cli(train.main, [*TRAIN, "--resume", str(run)])
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


def test_other_errors_pass_through_unchanged(tmp_path, monkeypatch):
    fail_on_call(monkeypatch, torch.nn.utils, "clip_grad_norm_", 1, RuntimeError("something else"))
    with pytest.raises(RuntimeError, match="something else"):
        train.main([*TRAIN, "--epochs", "1", "--out_dir", str(tmp_path)])


def test_out_of_memory_while_setting_up(tmp_path, monkeypatch, capsys):
    """Before the first epoch (the network onto its device): one line too, no checkpoint named."""
    import model

    fail_on_call(monkeypatch, model.NetworkCIFAR, "to", 1, torch.OutOfMemoryError(CUDA))
    with pytest.raises(SystemExit) as stop:
        utils.run_cli(train.main, [*TRAIN, "--out_dir", str(tmp_path)])
    line = capsys.readouterr().err.strip()
    assert stop.value.code == 3 and len(line.splitlines()) == 1
    assert line.startswith("error: out of memory outside the epochs (setting up or finishing the run) on cpu")
