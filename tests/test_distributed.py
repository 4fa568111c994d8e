"""torchrun: two gloo processes on the CPU keep one architecture and one set of weights, split
the data between them, write the run directory once, and resume on another number of processes."""
import json
import os
import subprocess
import sys

import pytest
import torch

import utils
from conftest import HARNESS, ROOT, TINY_SEARCH, make_image_folder
from plumbing import distributed
from test_resume import kill_when


def torchrun(nproc: int, script: str, *args, probe_dir=None, check: bool = True, kill: str = "",
             timeout: int = 600):
    """`torchrun --standalone --nproc_per_node nproc <script> args` (through the probe when
    `probe_dir` is given; `kill` is its PROBE_KILL), one CPU thread per process."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="", PROBE_DIR=str(probe_dir or ""), PROBE_KILL=kill)
    script = [str(ROOT / "tests" / "ddp_probe.py"), script] if probe_dir else [str(ROOT / script)]
    target = [HARNESS, *script]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", str(nproc), *target, *map(str, args)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"torchrun {script} exited {result.returncode}\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def probes(folder, n=2):
    """What each process saved; its returned results as they read in JSON."""
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(n)]
    for r in ranks:
        r["result"] = json.loads(json.dumps(r["result"]))
    return ranks


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


SEARCH = [*TINY_SEARCH, "--num_compare", "2", "--iter_compare", "1"]


def probed(tmp_path, script: str, *args, kill: str = "", check: bool = True):
    """torchrun of `script` on two processes through the probe, in `tmp_path`: (the run directory
    or None, what each process saved or None, torchrun's result)."""
    out, probe = tmp_path / "out", tmp_path / "probe"
    probe.mkdir(parents=True)
    result = torchrun(2, script, *args, *([] if "--resume" in args else ["--out_dir", out]), probe_dir=probe,
                      kill=kill, check=check, timeout=300)
    runs = list(out.iterdir()) if out.exists() else []
    return (runs[0] if runs else None), (probes(probe) if result.returncode == 0 else None), result


@pytest.fixture(scope="module")
def two_process_search(tmp_path_factory):
    """A tiny search on two processes, uninterrupted: (run directory, what each process saved)."""
    run, ranks, _ = probed(tmp_path_factory.mktemp("ddp_search"), "train_search.py", *SEARCH)
    return run, ranks


def test_search_on_two_processes_keeps_one_architecture(two_process_search):
    run, ranks = two_process_search
    # Every process ends with the same alphas, masks, weights and BN statistics, hence genotype.
    assert_same_state(ranks[0]["state"], ranks[1]["state"])
    assert ranks[0]["result"]["genotype"] == ranks[1]["result"]["genotype"]
    keep = ranks[0]["state"]["keep_normal"]
    assert 0 < keep.sum() < keep.numel()  # pruning happened
    # ... and each loaded its own half of the data.
    assert set(ranks[0]["seen"]).isdisjoint(ranks[1]["seen"])
    # The run directory is written once, by rank 0.
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2 and results["genotype"] == ranks[0]["result"]["genotype"]
    log = (run / "log.txt").read_text()
    assert log.count("search done") == 1 and log.count("supernet:") == 1
    events = [json.loads(line) for line in (run / "prune_events.jsonl").read_text().splitlines()]
    keys = [(e["epoch"], e["step"], e["cell"]) for e in events]
    assert len(keys) == len(set(keys)) > 0  # no event recorded twice
    assert json.loads((run / "genotype.json").read_text())["normal"] == results["genotype"]["normal"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("ddp_folder"), size=16, classes=3, train=8, val=2)


TRAIN = ["--arch", "DARTS_V2", "--init_channels", "4", "--layers", "2", "--no_auxiliary",
         "--image_size", "16", "--batch_size", "8", "--report_freq", "100", "--seed", "2"]


@pytest.fixture(scope="module")
def two_process_train(tmp_path_factory, folder):
    """A tiny retrain on two processes, uninterrupted: (run directory, what each process saved)."""
    run, ranks, _ = probed(tmp_path_factory.mktemp("ddp_train"), "train.py", *TRAIN, "--dataset", "folder",
                           "--data", folder, "--epochs", "2")
    return run, ranks


def test_train_on_two_processes_splits_the_data_and_syncs_weights(two_process_train):
    run, ranks = two_process_train
    per_epoch = 24 // 2  # 24 training images, 12 per process per epoch
    for epoch in range(2):
        halves = [set(r["seen"][epoch * per_epoch:(epoch + 1) * per_epoch]) for r in ranks]
        assert len(halves[0]) == len(halves[1]) == per_epoch
        assert halves[0].isdisjoint(halves[1]) and halves[0] | halves[1] == set(range(24))
    assert ranks[0]["seen"][:per_epoch] != ranks[0]["seen"][per_epoch:]  # reshuffled every epoch
    assert_same_state(ranks[0]["state"], ranks[1]["state"])
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2 and results["epochs"] == 2
    pooled = [untimed(r) for r in (results, ranks[0]["result"][0], ranks[1]["result"][0])]
    assert pooled[0] == pooled[1] == pooled[2]  # the same test accuracy, pooled over processes


def untimed(results: dict) -> dict:
    """results.json without what differs between two runs of one seed (times, memory)."""
    varying = ("wall_time_seconds", "time_seconds", "memory", "search_cost_seconds")
    return {k: v for k, v in results.items() if k not in varying}


@pytest.mark.parametrize("script, reference, args, kill, position", [
    ("train.py", "two_process_train", [*TRAIN, "--dataset", "folder", "--epochs", "2"], "1:2", "the end of epoch 0"),
    ("train_search.py", "two_process_search", SEARCH, "0:3", "the end of epoch 1")])
def test_a_dying_process_stops_the_others_and_the_run_resumes_identically(
        tmp_path, request, folder, script, reference, args, kill, position):
    """SIGKILL of one of two gloo processes as an epoch starts (rank 1 of a retrain, rank 0, which
    writes the files, of a search): the other stops at once with one line (the lost collective's
    error, or torchrun's SIGTERM) naming the intact checkpoint; resumed on two processes, the run
    ends as the uninterrupted one did."""
    args = [*args, "--data", folder] if script == "train.py" else args
    ref_run, ref_ranks = request.getfixturevalue(reference)
    run, _, killed = probed(tmp_path / "killed", script, *args, kill=kill, check=False)
    assert killed.returncode != 0
    errors = [line for line in killed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, killed.stderr  # the survivor's; the killed process says nothing
    assert f"{run / 'checkpoint.pt'} (at {position}), is intact" in errors[0]
    assert ("lost contact with the others" in errors[0]) != ("stopped by SIGTERM" in errors[0])
    assert errors[0].endswith(f"resume with the same flags and --resume {run} on 2 processes")
    _, ranks, _ = probed(tmp_path / "resumed", script, *args, "--resume", run)
    assert_same_state(ranks[0]["state"], ref_ranks[0]["state"])
    done, ref = (json.loads((r / "results.json").read_text()) for r in (run, ref_run))
    assert untimed(done) | {"run_dir": None, "checkpoint": None} == untimed(ref) | {"run_dir": None, "checkpoint": None}


def test_training_resumes_on_another_number_of_processes(tmp_path, folder):
    out = tmp_path / "out"
    args = [*TRAIN, "--dataset", "folder", "--data", str(folder), "--epochs", "3"]
    run = kill_when("train.py", args, out, lambda o: any(o.glob("*/checkpoint.pt")))
    done = torch.load(run / "checkpoint.pt", weights_only=False)["epoch"]
    assert done < 2, "the run finished before it could be interrupted"
    torchrun(2, "train.py", *args, "--resume", run)
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 3 and results["world_size"] == 2
    assert "random streams seeded afresh" in (run / "log.txt").read_text()


def test_batch_must_split_evenly_between_processes():
    assert utils.per_process_batch(96, 4) == 24
    with pytest.raises(utils.UserError, match=r"--batch_size 7 is the global batch and must be divisible "
                                              r"by the number of processes \(2\)"):
        utils.per_process_batch(7, 2)


def test_single_process_helpers_are_identities():
    world = distributed.init()
    assert (world.rank, world.world_size, world.is_main) == (0, 1, True)
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_mean(t) is t and distributed.gather("x") == ["x"]
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, world) is model and distributed.unwrap(model) is model


def test_sync_bn_on_cpu_processes_is_refused(monkeypatch, capsys):
    import train

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        train.main([*TRAIN, "--dataset", "digits", "--sync_bn"])
    assert exit_info.value.code == 2
    assert "--sync_bn needs CUDA" in capsys.readouterr().err


def test_search_resumes_on_another_number_of_processes(tmp_path):
    out = tmp_path / "out"
    args = [*TINY_SEARCH[:TINY_SEARCH.index("--epochs")], "--epochs", "4",
            *TINY_SEARCH[TINY_SEARCH.index("--epochs") + 2:]]
    events = lambda o: sum(p.read_text().count("\n") for p in o.glob("*/prune_events.jsonl"))  # noqa: E731
    run = kill_when("train_search.py", args, out, lambda o: events(o) >= 4)
    before = (run / "prune_events.jsonl").read_text().splitlines()
    torchrun(2, "train_search.py", *args, "--resume", run)
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == 2
    lines = (run / "prune_events.jsonl").read_text().splitlines()
    cut = torch.load(run / "checkpoint.pt", weights_only=False)  # the final checkpoint
    assert cut["epoch"] == 3 and lines[:len(before) - 2] == before[:len(before) - 2]  # history kept
    keys = [(e["epoch"], e["step"], e["cell"]) for e in map(json.loads, lines)]
    assert len(keys) == len(set(keys)) > len(before)
    assert "random streams seeded afresh" in (run / "log.txt").read_text()


NB201 = ["--search_space", "nb201", "--dataset", "digits", "--subset", "64", "--batch_size", "16",
         "--init_channels", "4", "--layers", "1", "--warmup", "1", "--prune_interval", "1",
         "--report_freq", "100", "--seed", "3"]


def test_nb201_search_on_two_processes(tmp_path):
    """The NAS-Bench-201 supernet under DDP keeps one architecture; a benchmark file that lacks
    a cell stops every process with the one-line error (rank 0 reads the file, none waits)."""
    from nb201_bench import make_benchmark

    probe = tmp_path / "probe"
    probe.mkdir()
    torchrun(2, "train_search.py", *NB201, "--epochs", "3", "--out_dir", tmp_path / "out", probe_dir=probe)
    ranks = probes(probe)
    assert_same_state(ranks[0]["state"], ranks[1]["state"])
    assert ranks[0]["result"]["arch_str"] == ranks[1]["result"]["arch_str"]
    assert 6 < ranks[0]["state"]["keep_cell"].sum() < 30  # pruning happened
    other = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    bench = make_benchmark(tmp_path / "bench.pth", {other: 50.0})
    failed = torchrun(2, "train_search.py", *NB201, "--epochs", "2", "--nb201_file", bench,
                      "--out_dir", tmp_path / "fails", check=False)
    assert failed.returncode != 0 and "is not in this benchmark file" in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all("is not in this benchmark file" in e for e in errors)  # one per process
