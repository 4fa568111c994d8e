"""`--plan`: each script projects its run's time and memory with its own flags, writes plan.json
with every phase, leaves no run directory, and rejects bad flags as the run does."""
import json

import pytest
import torch

import train
import train_search
from conftest import fail_on_call, make_image_folder, run_cli
from plumbing.drivers import plan

SEARCH = ["--dataset", "digits", "--subset", "64", "--batch_size", "8", "--init_channels", "4", "--layers", "3",
          "--epochs", "3", "--warmup", "1", "--report_freq", "100"]
TRAIN = ["--arch", "DARTS_V2", "--dataset", "digits", "--epochs", "2", "--batch_size", "32", "--init_channels", "4",
         "--layers", "3", "--no_auxiliary"]
NB201 = ["--arch_str", "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|",
         "--dataset", "digits", "--epochs", "2", "--batch_size", "32", "--init_channels", "4", "--layers", "1"]


def read_plan(folder, name):
    """The only thing in `folder`: the plan's JSON (no run directory)."""
    assert [p.name for p in folder.iterdir()] == [name]
    return json.loads((folder / name).read_text())


def test_a_search_plan_has_every_phase_and_leaves_no_run_directory(tmp_path):
    out = run_cli("train_search.py", *SEARCH, "--sal_second", "--num_compare", "2", "--iter_compare", "1",
                  "--plan", "--out_dir", tmp_path).stdout
    found = read_plan(tmp_path, "plan-search-EXP.json")
    (search,) = found["runs"]
    assert set(search["phases"]) == {"arch", "weight", "saliency", "compare", "validation", "data", "files"}
    assert all(p["seconds"] > 0 for k, p in search["phases"].items() if k != "data")
    assert all(search["phases"][k]["peak_MB"] > 0 for k in ("arch", "weight", "saliency", "validation"))
    assert search["total_seconds"] == pytest.approx(sum(p["seconds"] for p in search["phases"].values()))
    assert search["fits"] and search["capacity_MB"] > search["peak_MB"] > 0
    # 32 weight images in batches of 8: 4 steps, an event every 2 after the warm-up epoch; the
    # pieces measured at the supernet, half way and the DARTS cell (90 events from 196 ops to 16).
    assert search["schedule"] == {"epochs": 3, "steps_per_epoch": 4, "events": 90, "levels_measured": [0, 45, 90],
                                  "live_ops": [196, 106, 16]}
    assert "darts search" in out and "saliency" in out and "plan written to" in out


@pytest.mark.parametrize("script, args, kind", [("train.py", TRAIN, "eval"), ("train_nb201.py", NB201, "nb201")])
def test_a_training_plan(tmp_path, script, args, kind):
    run_cli(script, *args, "--plan", "--out_dir", tmp_path)
    (run,) = read_plan(tmp_path, f"plan-{kind}-EXP.json")["runs"]
    assert set(run["phases"]) == {"train", "eval", "files"} and run["phases"]["train"]["peak_MB"] > 0
    assert run["schedule"] == {"epochs": 2, "steps_per_epoch": 45, "eval_batches_per_epoch": 12}  # 1437 / 360 images
    assert run["params_M"] > 0 and run["fits"]


def test_an_imagenet_plan_reads_the_folder_and_nothing_else(tmp_path):
    data = make_image_folder(tmp_path / "imagenet", size=40, train=6, val=2)
    run_cli("train_imagenet.py", "--arch", "DARTS_V2", "--data", data, "--epochs", "1", "--batch_size", "4",
            "--init_channels", "4", "--layers", "3", "--image_size", "32", "--workers", "0", "--plan",
            "--plan_file", tmp_path / "plans" / "imagenet.json")
    (run,) = json.loads((tmp_path / "plans" / "imagenet.json").read_text())["runs"]
    assert run["schedule"]["steps_per_epoch"] == 5 and run["phases"]["train"]["seconds"] > 0  # 18 images
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imagenet", "plans"]


@pytest.mark.parametrize("script, args, bad, message", [
    ("train_search.py", SEARCH, ["--batch_size", "0"], "--batch_size must be positive"),
    ("train.py", TRAIN, ["--epochs", "0"], "--epochs must be positive"),
])
def test_a_flag_error_in_the_plan_is_the_runs(tmp_path, script, args, bad, message):
    planned = run_cli(script, *args, *bad, "--plan", "--out_dir", tmp_path, check=False)
    ran = run_cli(script, *args, *bad, "--out_dir", tmp_path, check=False)
    assert planned.returncode == ran.returncode == 2 and message in planned.stderr
    assert planned.stderr == ran.stderr and len(planned.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_plan_flags_are_checked(tmp_path):
    result = run_cli("train_search.py", *SEARCH, "--plan_memory", "100", check=False)
    assert result.returncode == 2 and "--plan_memory go with --plan" in result.stderr
    result = run_cli("train.py", *TRAIN, "--plan", "--resume", tmp_path, check=False)
    assert result.returncode == 2 and "plans a new run" in result.stderr


def test_a_run_that_does_not_fit_is_said_so_with_what_would(tmp_path):
    """Against 1 MB nothing fits: the plan says so and measures down to batch 1."""
    out = run_cli("train.py", *TRAIN, "--plan", "--plan_memory", "1", "--out_dir", tmp_path).stdout
    (run,) = read_plan(tmp_path, "plan-eval-EXP.json")["runs"]
    assert not run["fits"] and run["capacity_source"] == "--plan_memory" and run["suggestions"] == {"batch_size": None}
    assert "DOES NOT FIT" in out and "--batch_size: not even 1 fits" in out


def test_the_largest_fitting_value_is_found_by_measuring():
    tried = []

    def measure(value):  # 10 MB per unit; an out-of-memory error above 40
        tried.append(value)
        if value > 40:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
        return 10.0 * value
    device = torch.device("cpu")
    assert plan.largest(measure, 64, limit=255, device=device) == 25
    assert 25 in tried and 26 in tried and all(v < 64 for v in tried)
    assert plan.largest(measure, 64, limit=5, device=device) is None
    with pytest.raises(RuntimeError, match="boom"):
        plan.largest(lambda v: (_ for _ in ()).throw(RuntimeError("boom")), 8, limit=1, device=device)


def test_a_campaign_plans_every_job_in_one_table(tmp_path):
    """The search and its retrain (DARTS_V2 standing in for the cell not searched yet), each
    through its script's --plan; nothing is run."""
    out = run_cli("scripts/campaign_cli.py", "--variants", "s1", "--seeds", "0", "--stages", "search", "retrain",
                  "--plan", "--ckpt", tmp_path, "--search_args", " ".join(SEARCH), "--layers", "3",
                  "--init_channels", "4", "--retrain_args", "--dataset digits --epochs 2 --batch_size 32 --no_auxiliary"
                  ).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["job", "projected", "peak", "MB", "of", "MB", "fits", "to", "fit"]
    assert lines[1].startswith("search-s1-seed0 ") and lines[1].split()[-1] == "yes"
    assert lines[2].startswith("retrain-search-s1-seed0 (DARTS_V2 stand-in) ")
    plans = tmp_path / "campaign" / "plans"
    assert sorted(p.name for p in plans.iterdir()) == ["retrain-search-s1-seed0.json", "search-s1-seed0.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["campaign"]  # no run directory
    assert json.loads((plans / "search-s1-seed0.json").read_text())["runs"][0]["schedule"]["steps_per_epoch"] == 4


@pytest.mark.parametrize("main, args, phase", [(train_search.main, SEARCH, "weight"), (train.main, TRAIN, "train")])
def test_a_plan_that_runs_out_of_memory_says_where_and_what_fits(tmp_path, monkeypatch, capsys, main, args, phase):
    """PyTorch's out-of-memory error in the first measured step: no projection, the phase, and
    the largest batch below it that then ran, measured."""
    fail_on_call(monkeypatch, torch.nn.utils, "clip_grad_norm_", 1, torch.OutOfMemoryError("CUDA out of memory."))
    (run,) = main([*args, "--plan", "--plan_file", str(tmp_path / "plan.json")])["runs"]
    assert run["fits"] is False and run["total_seconds"] is None and run["phase"] == phase
    assert run["out_of_memory"].startswith(f"in the {phase} phase")
    assert run["suggestions"]["batch_size"] == int(args[args.index("--batch_size") + 1]) - 1
    assert "DOES NOT FIT: out of memory in the" in capsys.readouterr().out
    assert json.loads((tmp_path / "plan.json").read_text())["runs"] == [run]
