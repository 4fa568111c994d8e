"""The faults long runs meet, each injected through the real code path: nothing finished is lost,
the user gets one line, and what can be resumed resumes."""
import json
import os
import stat
import subprocess
import sys

import pytest
import torch.distributed as dist

from conftest import ROOT, THREADS, run_cli
from plumbing import stops

# (contiguous: PyTorch 2.14's CPU backward of a 1x1 stride-2 convolution of <= 4 channels_last
# channels corrupts memory on some CPUs, which 1-node cells of 4 channels meet in FactorizedReduce)
SEARCH = ["--dataset", "digits", "--subset", "64", "--batch_size", "16", "--init_channels", "4", "--layers",
          "3", "--steps", "1", "--epochs", "2", "--warmup", "1", "--report_freq", "100", "--seed", "0",
          "--no_channels_last"]
TRAIN = ["--arch", "DARTS_V2", "--dataset", "digits", "--epochs", "1", "--batch_size", "64",
         "--init_channels", "4", "--layers", "3", "--no_auxiliary", "--report_freq", "100", "--seed", "0"]


@pytest.fixture(scope="module")
def no_graphviz(tmp_path_factory):
    """A PYTHONPATH on which `import graphviz` fails, as on a GPU image without the package."""
    shim = tmp_path_factory.mktemp("shim") / "graphviz"
    shim.mkdir()
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'graphviz'\")\n")
    return {"PYTHONPATH": f"{shim.parent}{os.pathsep}{ROOT}"}


@pytest.mark.parametrize("script, args", [("train_search.py", SEARCH), ("train.py", TRAIN)])
def test_results_before_pictures_without_graphviz(tmp_path, no_graphviz, script, args):
    """A search and a retrain run to their end without the graphviz package: the results are
    written, the drawing is one warning line."""
    done = run_cli(script, *args, "--out_dir", tmp_path, env=no_graphviz)
    (run,) = tmp_path.iterdir()
    assert (run / "results.json").is_file() and not list(run.glob("genotype_*.png"))
    warnings = [line for line in done.stdout.splitlines() if "no drawing of the cells" in line]
    assert len(warnings) == 1 and "ImportError: No module named 'graphviz'" in warnings[0]
    assert "python visualize.py" in warnings[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_follow_the_users_umask(tmp_path, mask, mode):
    """On a shared folder: results, checkpoints and every other file as any program writes them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": THREADS}
    subprocess.run([sys.executable, str(ROOT / "train.py"), *TRAIN, "--out_dir", str(tmp_path)], env=env,
                   check=True, capture_output=True, preexec_fn=lambda: os.umask(mask))
    (run,) = tmp_path.iterdir()
    for name in ("results.json", "checkpoint.pt", "args.json", "log.txt"):
        assert stat.S_IMODE((run / name).stat().st_mode) == mode, name


def test_a_full_disk_while_checkpointing_loses_nothing(tmp_path, monkeypatch, capsys):
    """ENOSPC when the second checkpoint lands (os.replace, inside the atomic write): one line
    naming the file, the first checkpoint intact, no temporary file left; resumed once there is
    room, the run ends as an uninterrupted one."""
    import errno

    import torch

    import train
    import utils
    from conftest import fail_on_call
    from plumbing import fileio

    args = [*TRAIN, "--epochs", "2"]
    utils.run_cli(train.main, [*args, "--out_dir", str(tmp_path / "ref")])
    # renames: args.json, epoch 0's checkpoint, epoch 0's kept as the previous one, epoch 1's
    fail_on_call(monkeypatch, fileio.os, "replace", 4, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(SystemExit) as stop:
        utils.run_cli(train.main, [*args, "--out_dir", str(tmp_path / "cut")])
    (run,) = (tmp_path / "cut").iterdir()
    line = capsys.readouterr().err.strip()
    assert stop.value.code == 2
    assert line == f"error: [Errno 28] cannot write {run / 'checkpoint.pt'}: No space left on device"
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 0
    assert not list(run.glob("*.tmp")) and not (run / "results.json").exists()  # nothing half-written
    monkeypatch.undo()
    stale = run / ".checkpoint.pt.k1ll3d.tmp"  # what a writer SIGKILLed mid-write leaves
    stale.write_bytes(b"half a checkpoint")
    utils.run_cli(train.main, [*args, "--resume", str(run)])
    assert not stale.exists()
    (ref,) = (tmp_path / "ref").iterdir()
    a, b = (json.loads((d / "results.json").read_text()) for d in (ref, run))
    assert a["final_test_top1"] == b["final_test_top1"]
    wa, wb = (torch.load(d / "checkpoint.pt", weights_only=False)["model"] for d in (ref, run))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_diverging_search_stops_where_it_diverges(tmp_path):
    """Learning rates of 1e9: the first non-finite tensor stops the search with one line naming
    it and where; no op is pruned on a NaN saliency; the last checkpoint is finite."""
    import torch

    done = run_cli("train_search.py", *SEARCH, "--epochs", "3", "--learning_rate", "1e9",
                   "--arch_learning_rate", "1e9", "--no_summary", "--out_dir", tmp_path, check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(errors) == 1
    assert errors[0].startswith("error: the search diverged: ") and "became non-finite in epoch " in errors[0]
    (run,) = tmp_path.iterdir()
    events = run / "prune_events.jsonl"
    assert not events.exists() or events.read_text() == ""
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_second_process_on_a_run_directory_is_refused_until_the_first_dies(tmp_path):
    """A rerun while the first still runs gets one line and touches nothing; once the first is
    killed (SIGKILL), its lock is gone."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": THREADS}
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TRAIN, "--epochs", "200", "--out_dir",
                              str(tmp_path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.glob("*/checkpoint.pt")):
            time.sleep(0.05)
        (run,) = tmp_path.iterdir()
        log = (run / "log.txt").read_bytes()
        second = run_cli("train.py", *TRAIN, "--epochs", "200", "--resume", run, check=False)
        assert second.returncode == 2
        assert second.stderr.startswith(f"error: {run} is in use by process {first.pid} ")
        assert (run / "log.txt").read_bytes()[:len(log)] == log  # (its log was not cut back)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    from plumbing import rundir

    rundir.lock(run)  # free once its holder is dead (it would raise while the first runs)
    assert f"process {os.getpid()} " in (run / ".lock").read_text()


def damage(path, how: str) -> None:
    """Cut a file to half its length, or flip 256 bytes in its middle (more than the padding
    between the records of a checkpoint's zip)."""
    data = bytearray(path.read_bytes())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        middle = len(data) // 2
        data[middle:middle + 256] = bytes(b ^ 0xFF for b in data[middle:middle + 256])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_checkpoint_gives_way_to_the_previous_one(tmp_path, capsys, how):
    """The newest checkpoint cut short or with a flipped byte (caught by its digest): the run
    resumes from the one before with a warning naming what is done again, and ends as it ended."""
    import torch

    import train
    import utils

    args = [*TRAIN, "--epochs", "2"]
    utils.run_cli(train.main, [*args, "--out_dir", str(tmp_path)])
    (run,) = tmp_path.iterdir()
    before = json.loads((run / "results.json").read_text())
    weights = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    damage(run / "checkpoint.pt", how)
    (run / "results.json").unlink()  # as if the run had died right after its last checkpoint
    capsys.readouterr()
    utils.run_cli(train.main, [*args, "--resume", str(run)])
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"warning: {run / 'checkpoint.pt'}: corrupt") and len(warning.splitlines()) == 1
    taken = f"the previous checkpoint, {run / 'checkpoint.prev.pt'}, instead (at the end of epoch 0)"
    assert f"resuming from {taken}" in warning
    after = json.loads((run / "results.json").read_text())
    assert after["final_test_top1"] == before["final_test_top1"]
    resumed = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)


def test_no_good_checkpoint_left_is_one_line(tmp_path, capsys):
    import train
    import utils

    utils.run_cli(train.main, [*TRAIN, "--epochs", "2", "--out_dir", str(tmp_path)])
    (run,) = tmp_path.iterdir()
    damage(run / "checkpoint.pt", "truncate")
    damage(run / "checkpoint.prev.pt", "flip")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        utils.run_cli(train.main, [*TRAIN, "--epochs", "2", "--resume", str(run)])
    line = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(line.splitlines()) == 1
    assert "checkpoint.pt: corrupt or truncated checkpoint" in line and "; and " in line
    assert "checkpoint.prev.pt: corrupt" in line


@pytest.mark.parametrize("given", ["run", "checkpoint"])
def test_a_missing_checkpoint_gives_way_to_the_previous_one(tmp_path, capsys, given):
    """checkpoint.pt gone, checkpoint.prev.pt there (--resume naming the run or its checkpoint): the
    previous one is taken with a warning naming both, and put back under the usual name."""
    from plumbing import checkpoints

    newest, previous = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    for epoch in (0, 1):
        checkpoints.save(newest, {"epoch": epoch}, previous=previous)
    newest.unlink()
    run, state = checkpoints.resume(tmp_path if given == "run" else newest)
    assert run == tmp_path and state["epoch"] == 0 and newest.read_bytes() == previous.read_bytes()
    warning = capsys.readouterr().err
    assert warning == (f"warning: {newest}: missing; resuming from the previous checkpoint, {previous}, "
                       "instead (at the end of epoch 0): what came after it is done again\n")


def test_a_checkpoint_without_a_digest_is_refused_like_a_corrupt_one(tmp_path, capsys):
    """A file that `checkpoints.save` did not write (no digest: torch.save's own, or not even a
    dict) is refused in one line; on --resume the previous checkpoint is taken instead, with the
    warning of a corrupt one."""
    import torch

    from plumbing import checkpoints
    from plumbing.cli import UserError

    newest, previous = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    message = f"{newest}: not a checkpoint of these scripts (it carries no digest of its contents)"
    for content in ({"epoch": 1}, [1, 2]):
        torch.save(content, newest)
        with pytest.raises(UserError) as refused:
            checkpoints.load(newest)
        assert str(refused.value) == message
    for epoch in (0, 1):
        checkpoints.save(newest, {"epoch": epoch}, previous=previous)
    torch.save({"epoch": 1}, newest)
    run, state = checkpoints.resume(tmp_path)
    assert run == tmp_path and state == {"epoch": 0} and newest.read_bytes() == previous.read_bytes()
    assert capsys.readouterr().err == (f"warning: {message}; resuming from the previous checkpoint, {previous}, "
                                       "instead (at the end of epoch 0): what came after it is done again\n")
    torch.save({"epoch": 0}, previous)  # neither has a digest: one line naming both
    newest.unlink()
    torch.save({"epoch": 1}, newest)
    with pytest.raises(UserError) as stop:
        checkpoints.resume(tmp_path)
    assert str(stop.value) == f"{message}; and {previous}: not a checkpoint of these scripts (it carries no " \
                              "digest of its contents)"


def test_no_checkpoint_to_resume_is_one_line(tmp_path):
    """Neither checkpoint there, or only a damaged previous one: one line naming what is wrong."""
    from plumbing import checkpoints
    from plumbing.cli import UserError

    newest, previous = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    with pytest.raises(UserError, match=r"checkpoint.pt: nothing to resume \(no such checkpoint\)$"):
        checkpoints.resume(tmp_path)
    previous.write_bytes(b"half a checkpoint")
    with pytest.raises(UserError) as stop:
        checkpoints.resume(tmp_path)
    assert str(stop.value).startswith(f"{newest}: missing; and {previous}: corrupt or truncated checkpoint (")


def test_a_file_size_limit_stops_the_run_in_one_line(tmp_path):
    """The kernel refuses the write (RLIMIT_FSIZE, EFBIG, as a quota or a full disk would refuse
    it): one line naming the checkpoint, nothing half-written under any name."""
    import resource
    import signal

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))  # the log fits, a checkpoint does not
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (the write then fails with EFBIG)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": THREADS}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *TRAIN, "--out_dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, preexec_fn=limited)
    (run,) = tmp_path.iterdir()
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"error: [Errno 27] cannot write {run / 'checkpoint.pt'}: File too large"
    assert not (run / "checkpoint.pt").exists() and not list(run.glob(".*.tmp"))
    assert (run / "log.txt").is_file()


def test_the_errors_of_a_lost_process_are_told_from_others():
    """gloo's errors as this PyTorch raises them (a peer SIGKILLed, a peer stopped past --dist_timeout);
    NCCL's texts, as earlier versions raised them (a RuntimeError); the rendezvous store's errors."""
    closed = RuntimeError("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] "
                          "Connection closed by peer [127.0.0.1]:32688. This is typically caused by a remote "
                          "worker crashing. Check the logs of the remote worker before reporting an error. "
                          "GLHF!")
    timed = RuntimeError("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
                         "5000ms for recv operation to complete")
    assert stops.is_lost_process(closed) and stops.is_lost_process(timed)
    assert stops.is_lost_process(RuntimeError("Application timeout caused pair closure"))
    assert not stops.is_lost_process(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 2x2)"))
    assert all(stops.is_lost_process(RuntimeError(f"[Rank 0] {text}.")) for text in stops._NCCL)
    assert stops.is_lost_process(dist.DistNetworkError("failed to recv, got 0 bytes"))
    assert stops.is_lost_process(dist.DistStoreError("Socket Timeout"))
    assert not stops.is_lost_process(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert stops.reason(closed) == "Connection closed by peer [127.0.0.1]:32688"
    assert stops.reason(timed) == "Timed out waiting 5000ms for recv operation to complete"


# NCCL's errors as PyTorch 2.x raises them under TORCH_NCCL_BLOCKING_WAIT=1 (DistBackendError, with the
# texts of ProcessGroupNCCL.cpp and NCCLUtils.hpp), and as earlier versions did (a RuntimeError).
TIMEOUT = ("Watchdog caught collective operation timeout: WorkNCCL(SeqNum=5, OpType=ALLREDUCE, NumelIn=1, "
           "NumelOut=1, Timeout(ms)=600000) ran for 600013 milliseconds before timing out")
REMOTE = "remote process exited or there was a network error"
DETAIL = (", NCCL version 2.21.5\nncclRemoteError: A call failed possibly due to a network error or a "
          "remote process exiting prematurely.\nLast error:\nsocketProgressOpt: Call to recv failed")
ABORTED = f"NCCL communicator was aborted on rank 1.  Original reason for failure was: [Rank 1] {TIMEOUT}"
NCCL_ERRORS = {  # kind: (the error, what the line says of it)
    "timeout": (dist.DistBackendError(f"[PG ID 0 PG GUID 0(default_pg) Rank 1] {TIMEOUT}."), TIMEOUT),
    "remote": (dist.DistBackendError(f"NCCL error in: /pytorch/torch/csrc/distributed/c10d/NCCLUtils.hpp:268,"
                                     f" {REMOTE}{DETAIL}"), f"NCCL error: {REMOTE}"),
    "remote, seen waiting": (dist.DistBackendError(f"NCCL error: {REMOTE}{DETAIL}"), f"NCCL error: {REMOTE}"),
    "aborted after a timeout, older": (RuntimeError(f"{ABORTED}."), ABORTED),
}


@pytest.mark.parametrize("kind", NCCL_ERRORS)
def test_the_errors_of_nccl_are_a_lost_process(tmp_path, monkeypatch, kind):
    """Each is a lost process, said shortly (with --dist_timeout waited, for a timeout); inside the
    epochs of one of 2 processes, one line and exit code 4, as gloo's errors are."""
    from types import SimpleNamespace

    import torch

    error, said = NCCL_ERRORS[kind]
    assert stops.is_lost_process(error) and stops.reason(error) == said
    monkeypatch.setattr(stops, "_process", lambda: (1, 2))
    guard = stops.Guard(torch.device("cpu"), SimpleNamespace(current="train"), tmp_path / "checkpoint.pt", {})
    with pytest.raises(stops.Stopped) as stop, guard:
        raise error
    waited = ", after waiting --dist_timeout" if "timeout" in kind else ""
    assert stop.value.exit_code == 4 and str(stop.value) == (
        f"process 1 of 2 lost contact with the others in the train phase ({said}{waited}): another process "
        "died or hangs, its own lines say why; no checkpoint had been written yet; start it again")


def fail_writing(monkeypatch, name: str, code: int) -> None:
    """The atomic write of every file whose path ends with `name` fails at its rename with the
    real OSError `code` (ENOSPC, EDQUOT, EIO), as the kernel gives it."""
    import errno  # noqa: F401  (the codes the callers pass)

    from plumbing import fileio

    real = fileio.os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(name):
            raise OSError(code, os.strerror(code))
        return real(src, dst, *args, **kwargs)
    monkeypatch.setattr(fileio.os, "replace", replace)


# errno 122 (EDQUOT), 5 (EIO)
@pytest.mark.parametrize("name, code", [("results_of_7q/genotype/1.txt", 122), ("results.json", 5)])
def test_a_write_error_in_a_search_loses_nothing_and_resumes_identically(
        tmp_path, monkeypatch, capsys, search_runs, name, code):
    """A quota hit writing epoch 1's genotype file, an I/O error writing results.json: one line
    naming the file, exit 2, no temporary file left, every finished file whole; resumed once the
    disk is back, the search ends byte for byte as the uninterrupted one (conftest's)."""
    import torch

    import train_search
    import utils
    from conftest import TINY_SEARCH

    fail_writing(monkeypatch, name, code)
    with pytest.raises(SystemExit) as stop:
        utils.run_cli(train_search.main, [*TINY_SEARCH, "--out_dir", str(tmp_path)])
    (run,) = tmp_path.iterdir()
    line = capsys.readouterr().err.strip()
    assert stop.value.code == 2
    assert line == f"error: [Errno {code}] cannot write {run / name}: {os.strerror(code)}"
    assert not list(run.rglob("*.tmp")) and not (run / name).exists()
    monkeypatch.undo()
    utils.run_cli(train_search.main, [*TINY_SEARCH, "--resume", str(run)])
    ref = search_runs["restricted"]
    files = [p.relative_to(ref) for p in ref.rglob("*")
             if p.is_file() and p.suffix in (".txt", ".jsonl", ".csv") and p.name != "log.txt"
             and "tensorboard" not in p.parts]
    assert len(files) > 10 and all((run / f).read_bytes() == (ref / f).read_bytes() for f in files)
    a, b = (torch.load(d / "checkpoint.pt", weights_only=False)["model"] for d in (ref, run))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "results.json").read_text())["genotype"] == json.loads(
        (ref / "results.json").read_text())["genotype"]


def test_tensorboard_and_figures_that_cannot_be_written_are_warnings(tmp_path, monkeypatch, capsys):
    """ENOSPC in TensorBoard's event file (its writing thread), in the summary figure and in the
    cell drawing: the search ends, results.json is written, one warning line each."""
    import errno

    import matplotlib.figure
    from tensorboard.summary.writer.record_writer import RecordWriter

    import train_search
    import utils
    import visualize

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for owner, name in ((RecordWriter, "write"), (matplotlib.figure.Figure, "savefig"), (visualize, "draw")):
        monkeypatch.setattr(owner, name, lambda *args, **kwargs: (_ for _ in ()).throw(full))
    utils.run_cli(train_search.main, [*SEARCH, "--out_dir", str(tmp_path)])
    (run,) = tmp_path.iterdir()
    assert (run / "results.json").is_file()
    err, log = capsys.readouterr().err, (run / "log.txt").read_text()
    assert "Traceback" not in err and "Exception in thread" not in err
    for warning in ("TensorBoard stops here (OSError: [Errno 28] No space left on device",
                    "no summary figure (OSError: [Errno 28] No space left on device",
                    "no drawing of the cells (OSError: [Errno 28] No space left on device"):
        assert log.count(warning) == 1, warning


def test_a_log_file_that_cannot_be_written_is_one_warning(tmp_path, capsys):
    import logging

    import utils

    class Full:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

    utils.setup_logging(tmp_path)
    (handler,) = [h for h in utils.logger.handlers if isinstance(h, logging.FileHandler)]
    handler.stream = Full()
    for i in range(3):
        utils.logger.info("line %d", i)
    err = capsys.readouterr().err
    assert err == (f"warning: cannot write {tmp_path / 'log.txt'} ([Errno 28] No space left on device); "
                   "the log goes on on the screen only\n")
    utils.setup_logging(None)
