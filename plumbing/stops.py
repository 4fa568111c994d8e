"""How a run stops when something outside its code fails: one line that says what happened and
where, the last checkpoint (intact: checkpoints are written atomically) and what to do, with an
exit code of its own:

- 2: a user error (cli.UserError: a bad flag, a missing data set, a full disk);
- 3: out of memory (oom.py's line);
- 4: another process of the run is lost (under torchrun: it died, or hangs past --dist_timeout);
- 130 (128 + SIGINT): stopped by Ctrl-C;
- 143 (128 + SIGTERM): stopped by SIGTERM (torchrun stopping the others after one died, a
  scheduler at its time limit).
"""
from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from plumbing import checkpoints, oom
from plumbing.cli import UserError

LOST_EXIT_CODE = 4
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT  # (what a shell reports for a program Ctrl-C ended)
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM, raised in the main thread where it was running (a BaseException, as
    KeyboardInterrupt is: no `except Exception` swallows it)."""


class Stopped(UserError):
    """A run stopped from outside (a lost process, SIGTERM): one line and its own exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


_stopping = threading.Event()  # set once a stop is being said: a SIGTERM or Ctrl-C then changes nothing


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within: SIGTERM raises Terminated and Ctrl-C KeyboardInterrupt, until a stop is being said."""
    # In the main thread only (Python runs handlers there), the previous handlers put back after.
    # Once the stop is being said (after a first signal, or after the error of a collective whose
    # peer died, which torchrun follows with SIGTERM) both are ignored: the line being written says
    # what happened, and a second Ctrl-C does not turn it into a traceback.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if not _stopping.is_set():
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    # SIGINT only where Python raises KeyboardInterrupt for it: not where it is ignored (a run
    # started with `nohup` or in the background of a script).
    interruptible = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    caught = [signal.SIGTERM] + [signal.SIGINT] * interruptible
    previous = {number: signal.signal(number, handler) for number in caught}
    try:
        yield
    finally:
        for number, before in previous.items():
            signal.signal(number, before)


def signalled(e: BaseException) -> tuple[str, int] | None:
    """(what stopped the run, its exit code) where `e` is a signal's: SIGTERM or Ctrl-C."""
    if isinstance(e, Terminated):
        return "SIGTERM", TERMINATED_EXIT_CODE
    if isinstance(e, KeyboardInterrupt):
        return "Ctrl-C (SIGINT)", INTERRUPTED_EXIT_CODE
    return None


# What gloo raises (a RuntimeError) when a peer died or stopped answering.
_GLOO = ("closed by peer", "reset by peer", "broken pipe", "pair closure", "timed out", "timeout", "gloo",
         "ProcessGroup")
# What NCCL raises, as PyTorch 2.x words it (ProcessGroupNCCL.cpp, NCCLUtils.hpp): with
# TORCH_NCCL_BLOCKING_WAIT=1 the collective itself raises DistBackendError ('[PG ID 0 ... Rank 1]
# Watchdog caught collective operation timeout: WorkNCCL(...) ran for 600013 milliseconds before
# timing out.', 'NCCL error: remote process exited or there was a network error, NCCL version
# 2.21.5\nncclRemoteError: ...'), and a communicator aborted by an earlier error refuses the next
# ('NCCL communicator was aborted on rank 1. Original reason for failure was: ...'). The texts also
# match where an older PyTorch raised them as a plain RuntimeError.
_NCCL = ("NCCL error", "ncclRemoteError", "ncclSystemError", "Watchdog caught collective operation timeout",
         "Some NCCL operations have failed or timed out", "timed out in blocking wait",
         "NCCL communicator was aborted")
_LOST = re.compile("|".join(map(re.escape, _GLOO + _NCCL)), re.I)
_TIMEOUT = re.compile(r"timed out|timeout", re.I)


def is_lost_process(e: BaseException) -> bool:
    """Whether `e` is a collective failing because another process of the run is gone or hangs."""
    # Any DistError: DistBackendError (NCCL's errors and timeouts), DistNetworkError and
    # DistStoreError (the rendezvous store's, when torchrun's agent or rank 0 is gone).
    return isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and bool(_LOST.search(str(e))))


def reason(e: BaseException) -> str:
    """The collective's error without its source location and boilerplate: 'Connection closed by
    peer [127.0.0.1]:32688', 'Timed out waiting 600000ms for recv operation to complete', 'NCCL
    error: remote process exited or there was a network error'."""
    lines = str(e).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else type(e).__name__
    text = re.sub(r"^NCCL error in: \S+:\d+, ", "NCCL error: ", text)  # (PyTorch's file and line)
    text = re.sub(r", NCCL version [\w.+-]+$", "", text)
    return text.split(". This is typically")[0].rstrip(". ")


def _process() -> tuple[int, int]:
    """(rank, number of processes) of this process (0, 1 without a process group)."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def checkpoint_position(path: Path) -> str | None:
    """Where the run stood at its checkpoint ('epoch 3, step 97' or 'the end of epoch 3'), read
    lazily (memory-mapped); None without a readable checkpoint."""
    try:
        return checkpoints.position(torch.load(path, map_location="cpu", mmap=True, weights_only=False))
    except Exception:  # (absent, or unreadable: said as "no checkpoint")
        return None


def lost_line(e: BaseException, where: str, kept: str) -> str:
    """The line of a process that lost the others of its run `where` ('in the train phase')."""
    rank, size = _process()
    waited = ", after waiting --dist_timeout" if _TIMEOUT.search(str(e)) else ""
    return (f"process {rank} of {size} lost contact with the others {where} ({reason(e)}{waited}): another "
            f"process died or hangs, its own lines say why; {kept}")


class Guard:
    """`with Guard(...):` around a run's epochs turns an out-of-memory error, the loss of another
    process, SIGTERM and Ctrl-C into one line each (Stopped, oom.OutOfMemory): the phase (the phase
    timer's current one), the last checkpoint and how far it got, and what to do; `advice[phase]`
    (`advice[None]` for other phases) says what to change when out of memory."""

    def __init__(self, device: torch.device, timer, checkpoint: Path, advice: dict):
        self.device, self.timer, self.checkpoint, self.advice = device, timer, Path(checkpoint), advice

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, kind, e, traceback) -> None:
        if e is None:
            return
        _stopping.set()
        size = _process()[1]
        out_of_memory, lost, stop = oom.is_out_of_memory(e), size > 1 and is_lost_process(e), signalled(e)
        if not (out_of_memory or lost or stop):
            return
        phase = self.timer.current
        where = f"in the {phase} phase" if phase else "between phases"
        position = checkpoint_position(self.checkpoint)
        kept = (f"the last checkpoint, {self.checkpoint} (at {position}), is intact" if position
                else "no checkpoint had been written yet")
        if out_of_memory:
            advice = self.advice.get(phase, self.advice.get(None, ""))
            raise oom.OutOfMemory(oom.line(e, self.device, phase, kept, advice)) from None
        resume = (f"resume with the same flags and --resume {self.checkpoint.parent}"
                  + (f" on {size} processes" if size > 1 else "") if position else "start it again")
        if lost:
            raise Stopped(f"{lost_line(e, where, kept)}; {resume}", LOST_EXIT_CODE) from None
        what, code = stop
        why = (" (torchrun stops every process when one of them dies: its lines say why)"
               if size > 1 and code == TERMINATED_EXIT_CODE else "")
        raise Stopped(f"stopped by {what} {where}{why}; {kept}; {resume}", code) from None


def guarded(main: Callable, argv: list[str] | None):
    """`main(argv)` with SIGTERM and Ctrl-C raising (signals_raise); what no Guard said in one line
    (an out-of-memory error, a lost process, SIGTERM or Ctrl-C while setting up or finishing a run)
    is said in one line here."""
    outside = "outside the epochs (setting up or finishing the run)"
    _stopping.clear()
    with signals_raise():
        try:
            return main(argv)
        except BaseException as e:
            _stopping.set()  # (from here on a SIGTERM or Ctrl-C changes nothing: this is said)
            if stop := signalled(e):
                raise Stopped(f"stopped by {stop[0]} {outside}", stop[1]) from None
            if oom.is_out_of_memory(e):
                raise oom.outside(e) from None
            if _process()[1] > 1 and is_lost_process(e):
                kept = "any checkpoint of the run is intact: --resume it, or start it again"
                raise Stopped(lost_line(e, outside, kept), LOST_EXIT_CODE) from None
            raise
