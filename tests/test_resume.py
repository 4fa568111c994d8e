"""Resuming train.py after SIGKILL gives exactly the uninterrupted run; bad checkpoints are refused."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
import utils
from conftest import HARNESS, ROOT, THREADS, run_cli

ARGS = ["--arch", "DARTS_V2", "--dataset", "digits", "--epochs", "3", "--batch_size", "64",
        "--init_channels", "4", "--layers", "3", "--no_auxiliary", "--report_freq", "100", "--seed", "1"]


def only_run(folder):
    (run,) = list(folder.iterdir())
    return run


def kill_when(script, args, out_dir, ready, sig=signal.SIGKILL, said: list | None = None):
    """Start `script`, send it `sig` as soon as `ready(out_dir)` holds; return its run directory
    (its stderr and exit code are appended to `said`)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=THREADS)
    proc = subprocess.Popen([sys.executable, HARNESS, str(ROOT / script), *args, "--out_dir", str(out_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out_dir.exists() and ready(out_dir):
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    stderr = proc.communicate()[1]
    if said is not None:
        said += [stderr, proc.returncode]
    return only_run(out_dir)


def mid_pruning(out_dir):
    """13 prune-event lines written: mid-epoch, mid-pruning."""
    events = list(out_dir.glob("search-*/prune_events.jsonl"))
    return bool(events) and events[0].read_text().count("\n") >= 13


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run ARGS make, from start to end."""
    out = tmp_path_factory.mktemp("uninterrupted")
    run_cli("train.py", *ARGS, "--out_dir", out)
    return only_run(out)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resume_after_a_kill_is_exact(tmp_path, uninterrupted, sig):
    """SIGKILL (a node lost), SIGTERM (a scheduler's time limit: one line, exit code 143)."""
    ref = uninterrupted
    said = []
    cut = kill_when("train.py", ARGS, tmp_path / "cut",
                    lambda out: bool(list(out.glob("eval-*/checkpoint.pt"))), sig=sig, said=said)
    assert not (cut / "results.json").exists(), "the run finished before it was killed"
    if sig == signal.SIGTERM:
        stderr, code = said
        assert code == 143 and stderr.count("\n") == 1 and stderr.startswith("error: stopped by SIGTERM in the ")
        assert f"{cut / 'checkpoint.pt'} (at the end of epoch " in stderr
        assert stderr.rstrip().endswith(f"resume with the same flags and --resume {cut}")
    run_cli("train.py", *ARGS, "--resume", cut)
    a, b = (json.loads((d / "results.json").read_text()) for d in (ref, cut))
    assert a["final_test_top1"] == b["final_test_top1"] and a["final_test_top5"] == b["final_test_top5"]
    wa, wb = (torch.load(d / "checkpoint.pt", weights_only=False) for d in (ref, cut))
    assert wa["history"] == wb["history"]
    for key, value in wa["model"].items():
        assert torch.equal(value, wb["model"][key]), key
    log = (cut / "log.txt").read_text()
    assert log.count("epoch 1 lr") == 1 and log.count("epoch 2 lr") == 1 and "resuming" in log


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """A finished 1-epoch training run (the refusal tests resume it with other flags)."""
    out = tmp_path_factory.mktemp("one_epoch")
    run_cli("train.py", *ARGS[:4], "--epochs", "1", *ARGS[6:], "--out_dir", out)
    return only_run(out)


def test_truncated_checkpoint_is_refused_in_one_line(one_epoch_run, tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.pt"
    data = (one_epoch_run / "checkpoint.pt").read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit) as info:
        utils.run_cli(train.main, ["--resume", str(ckpt), *ARGS])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "corrupt or truncated checkpoint" in err and err.count("\n") == 1


def test_checkpoint_from_another_configuration_is_refused(one_epoch_run, capsys):
    with pytest.raises(SystemExit) as info:
        utils.run_cli(train.main, ["--resume", str(one_epoch_run), *ARGS])  # 3 epochs, not 1
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "checkpoint from a different configuration (--epochs 1 there, 3 now)" in err


def test_search_resume_after_sigkill_mid_pruning_is_exact(tmp_path):
    from conftest import TINY_SEARCH

    args = [*TINY_SEARCH[:TINY_SEARCH.index("--epochs")], "--epochs", "7",
            *TINY_SEARCH[TINY_SEARCH.index("--warmup"):]]
    run_cli("train_search.py", *args, "--out_dir", tmp_path / "ref")
    ref = only_run(tmp_path / "ref")
    # The interrupted search also runs the saliency audit (at events 1 and 7), which must leave
    # no trace on what the search does, and whose lines are cut back on resume like the others.
    audited = [*args, "--audit_every", "6", "--audit_batches", "1", "--hessian_chunk", "80"]
    cut = kill_when("train_search.py", audited, tmp_path / "cut", mid_pruning)
    assert not (cut / "results.json").exists(), "the search finished before it was killed"
    run_cli("train_search.py", *audited, "--resume", cut)
    for name in ("genotype.json", "prune_events.jsonl", "saliency.jsonl", "results_of_7q/results.csv"):
        assert (ref / name).read_text() == (cut / name).read_text(), name
    audit_lines = [json.loads(line) for line in (cut / "audit.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in audit_lines] == [(1, 0), (1, 0), (4, 0), (4, 0)]
    for epoch in range(7):
        for kind in ("genotype", "alpha"):
            rel = f"results_of_7q/{kind}/{epoch}.txt"
            assert (ref / rel).read_text() == (cut / rel).read_text(), rel
    log = (cut / "log.txt").read_text()
    assert "resuming" in log and log.count("epoch 6 lr") == 1
    again = run_cli("train_search.py", *audited, "--resume", cut, check=False)
    assert again.returncode == 2 and "already finished its 7 epochs" in again.stderr


def test_deterministic_switch():
    try:
        utils.set_determinism(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    finally:
        utils.set_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
