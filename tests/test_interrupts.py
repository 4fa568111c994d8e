"""Ctrl-C, as SIGTERM: one line naming the phase and the intact checkpoint, exit code 130, no
traceback (a second Ctrl-C while the line is said included); the run resumes."""
import os
import re
import signal
from types import SimpleNamespace

import pytest
import torch

import utils
from conftest import TINY_SEARCH
from plumbing import checkpoints, stops
from test_resume import kill_when


@pytest.fixture
def interruptible():
    """SIGINT raising KeyboardInterrupt here and in the processes started here (a test run started in
    the background of a script has it ignored, and its children with it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_a_search_is_one_line_and_it_resumes(tmp_path, interruptible):
    """Ctrl-C once the search is in its epochs (the warm-up epoch's checkpoint written): exit 130
    and one line; resumed with the same flags, the search ends."""
    import train_search

    args, said = [*TINY_SEARCH, "--epochs", "2"], []  # (the second epoch is the one cut short)
    run = kill_when("train_search.py", args, tmp_path, lambda out: bool(list(out.glob("*/checkpoint.pt"))),
                    sig=signal.SIGINT, said=said)
    stderr, code = said
    assert not (run / "results.json").exists(), "the search finished before Ctrl-C"
    assert code == 130 and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    checkpoint, resume = (re.escape(str(path)) for path in (run / "checkpoint.pt", run))
    assert re.fullmatch(r"error: stopped by Ctrl-C \(SIGINT\) (in the \w+ phase|between phases); "
                        rf"the last checkpoint, {checkpoint} \(at (the end of epoch 0|epoch 1, step \d+)\), "
                        rf"is intact; resume with the same flags and --resume {resume}\n", stderr), stderr
    utils.run_cli(train_search.main, [*args, "--resume", str(run)])
    assert (run / "results.json").is_file()


def test_a_second_ctrl_c_while_the_stop_is_said_changes_nothing(tmp_path, interruptible, monkeypatch):
    """Ctrl-C in the epochs, a second one while the Guard reads the checkpoint: one line, exit 130;
    the handlers are put back after."""
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoints.save(checkpoint, {"epoch": 2, "step": 5})
    read = stops.checkpoint_position

    def second_ctrl_c(path):
        os.kill(os.getpid(), signal.SIGINT)
        return read(path)
    monkeypatch.setattr(stops, "checkpoint_position", second_ctrl_c)

    def main(argv):
        with stops.Guard(torch.device("cpu"), SimpleNamespace(current="train"), checkpoint, {}):
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("Ctrl-C did not stop the run")
    with pytest.raises(stops.Stopped) as stop:
        stops.guarded(main, [])
    assert stop.value.exit_code == 130 and str(stop.value) == (
        f"stopped by Ctrl-C (SIGINT) in the train phase; the last checkpoint, {checkpoint} (at epoch 2, "
        f"step 5), is intact; resume with the same flags and --resume {tmp_path}")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_outside_the_epochs_is_one_line(interruptible, capsys):
    def main(argv):
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("Ctrl-C did not stop the run")
    with pytest.raises(SystemExit) as stop:
        utils.run_cli(main, [])
    assert stop.value.code == 130
    err = capsys.readouterr().err
    assert err == "error: stopped by Ctrl-C (SIGINT) outside the epochs (setting up or finishing the run)\n"


def test_an_ignored_ctrl_c_stays_ignored():
    """A run started with SIGINT ignored (nohup, the background of a script) keeps ignoring it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert stops.guarded(lambda argv: signal.getsignal(signal.SIGINT), []) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
