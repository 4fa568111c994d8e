"""Checkpoints that survive what long runs meet: each written atomically, carrying a digest of its
contents, with the one before it kept beside it (checkpoint.prev.pt, a hard link: no copy); read
back with the digest checked (a file without one is refused), and on --resume the previous one
taken, with a warning, when the newest is missing, cut short, corrupt or without a digest."""
from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np
import torch

from plumbing import rundir
from plumbing.cli import UserError
from plumbing.fileio import atomic_write

DIGEST = "digest"  # the checkpoint's own key: SHA-1 of everything else in it


def digest(obj, h=None) -> str:
    """SHA-1 of a checkpoint's contents: every tensor's and array's bytes, every other value's
    repr, in order (what torch.load gives back hashes the same)."""
    h = h or hashlib.sha1()
    if isinstance(obj, torch.Tensor):
        h.update(obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, dict):
        for key, value in obj.items():
            h.update(repr(key).encode())
            digest(value, h)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            digest(value, h)
    else:
        h.update(repr(obj).encode())
    return h.hexdigest()


def save(path: str | Path, state: dict, previous: str | Path | None = None) -> None:
    """Write `state` atomically (a crash keeps the old file) with its digest; with `previous`, the
    checkpoint it replaces is kept there first (so there is always a complete one)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({**state, DIGEST: digest(state)}, buffer)
    if previous is not None and path.is_file():
        keep(path, Path(previous))
    atomic_write(path, buffer.getvalue())


def keep(source: Path, target: Path) -> None:
    """`target` becomes `source`'s contents, atomically: a hard link (or a copy where the file
    system has none) renamed over it."""
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        try:
            os.link(source, temporary)
        except OSError:
            atomic_write(temporary, source.read_bytes())
        os.replace(temporary, target)
    except OSError as e:  # (a full disk, ...: named, as atomic_write names its files)
        temporary.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {target}: {e.strerror or e}") from None


def load(path: str | Path) -> dict:
    """A checkpoint on the CPU, its digest checked, or UserError naming the file in one line: a
    file that is missing, cut short, corrupt or carries no digest (not written by `save`)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint") from None
    except Exception as e:  # truncated or corrupt files raise many different errors
        raise UserError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or DIGEST not in state:
        raise UserError(f"{path}: not a checkpoint of these scripts (it carries no digest of its contents)")
    stored = state.pop(DIGEST)
    if digest(state) != stored:
        raise UserError(f"{path}: corrupt checkpoint (its contents do not match its digest)")
    return state


def position(state: dict) -> str:
    """Where a run stood at a checkpoint: 'epoch 3, step 97' or 'the end of epoch 3'."""
    step = state.get("step")
    return f"the end of epoch {state['epoch']}" if step is None else f"epoch {state['epoch']}, step {step}"


def resume(path: str | Path) -> tuple[Path, dict]:
    """(run directory, checkpoint) for `--resume`, given a run directory or a checkpoint file. A
    newest checkpoint that is missing, cut short, corrupt or without a digest gives way to the
    previous one (a warning on stderr names it and says which epoch is done again); only when
    neither is good does it stop, in one line."""
    given = Path(path)
    newest = given / rundir.CHECKPOINT if given.is_dir() else given
    previous = newest.with_name(rundir.PREVIOUS)
    try:
        state = load(rundir.checkpoint_of(path))
    except UserError as e:
        if not previous.is_file() or previous == newest:
            raise
        why = f"{newest}: missing" if not newest.exists() else str(e)
        try:
            state = load(previous)
        except UserError as older:
            raise UserError(f"{why}; and {older}") from None
        keep(previous, newest)  # the good one under the usual name: the next save keeps it
        sys.stderr.write(f"warning: {why}; resuming from the previous checkpoint, {previous}, instead (at "
                         f"{position(state)}): what came after it is done again\n")
    return newest.parent, state
