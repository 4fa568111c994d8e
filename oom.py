"""Out of memory, anywhere in a run: one line that names the phase, the memory it needed and had,
the last checkpoint (intact: checkpoints are written atomically), and the flag to change; exit
code 3 (other errors exit 2, tracebacks 1)."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

import checkpoints
import timing
from cli import UserError

EXIT_CODE = 3


class OutOfMemory(UserError):
    """A run ran out of memory: reported as one line, exit code 3."""
    exit_code = EXIT_CODE


def is_out_of_memory(e: BaseException) -> bool:
    """Whether `e` is PyTorch's out-of-memory error: CUDA's (and MPS's) OutOfMemoryError, or the
    CPU allocator's RuntimeError."""
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e)))


def _mb(text: str) -> str:
    return text.replace("GiB", "GB").replace("MiB", "MB").replace("KiB", "KB")


def needed_and_had(e: BaseException, device: torch.device) -> str:
    """'needed 2.00 GB more with 70.1 GB in use; 1.2 GB free of 79.1 GB' from the error and the
    device (what can be known: the allocation that failed, and what was left)."""
    text = str(e)
    asked = re.search(r"[Tt]ried to allocate ([\d.]+ [KMG]iB)", text)
    asked_bytes = re.search(r"tried to allocate (\d+) bytes", text)
    needed = _mb(asked.group(1)) if asked else (f"{int(asked_bytes.group(1)) / 2**20:.1f} MB" if asked_bytes
                                                   else "more than was left")
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        used = torch.cuda.memory_allocated(device)
        return (f"needed {needed} more with {used / 2**30:.2f} GB in use by the run; "
                f"{free / 2**30:.2f} GB free of {total / 2**30:.2f} GB")
    available = timing.available_mb()
    had = "" if available is None else f"; {available / 1024:.2f} GB available on the machine"
    return f"needed {needed} more{had}"


def lower(flag: str, value, part_of: str) -> str:
    """Advice for a flag that cannot change on --resume: 'lower --batch_size (now 64; a new run ...)'."""
    return (f"lower --{flag} (now {value}; a new run: the {flag.replace('_', ' ')} is part of the {part_of}; "
            "--plan --plan_memory MB finds the largest that fits)")


def checkpoint_position(path: Path) -> str | None:
    """Where the run stood at its checkpoint ('epoch 3, step 97' or 'the end of epoch 3'), read
    lazily (memory-mapped); None without a readable checkpoint."""
    try:
        return checkpoints.position(torch.load(path, map_location="cpu", mmap=True, weights_only=False))
    except Exception:  # (absent, or unreadable: said as "no checkpoint")
        return None


class Guard:
    """`with Guard(...):` turns an out-of-memory error inside the block into OutOfMemory, one line:
    the phase (the phase timer's current one), the memory needed and had, the last checkpoint
    and how far it got, and `advice[phase]` (what to change; `advice[None]` for other phases)."""

    def __init__(self, device: torch.device, timer, checkpoint: Path, advice: dict):
        self.device, self.timer, self.checkpoint, self.advice = device, timer, Path(checkpoint), advice

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, kind, e, traceback) -> None:
        if e is None or not is_out_of_memory(e):
            return
        phase = self.timer.current
        position = checkpoint_position(self.checkpoint)
        kept = (f"the last checkpoint, {self.checkpoint} (at {position}), is intact" if position
                else "no checkpoint had been written yet")
        advice = self.advice.get(phase, self.advice.get(None, ""))
        raise OutOfMemory(f"out of memory {f'in the {phase} phase' if phase else 'between phases'} on {self.device}: "
                          f"{needed_and_had(e, self.device)}; {kept}; {advice}") from None


def guarded(main: Callable, argv: list[str] | None):
    """`main(argv)`, with an out-of-memory error that no Guard turned into one line (while setting
    up or finishing a run) said in one line too."""
    try:
        return main(argv)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        cuda = isinstance(e, torch.OutOfMemoryError) and torch.cuda.is_available()
        device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        raise OutOfMemory(f"out of memory outside the epochs (setting up or finishing the run) on {device}: "
                          f"{needed_and_had(e, device)}; lower --batch_size or the network's size "
                          "(--init_channels, --layers)") from None
