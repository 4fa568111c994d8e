"""Out of memory, anywhere in a run: one line that names the phase, the memory it needed and had,
the last checkpoint (intact: checkpoints are written atomically), and the flag to change; exit
code 3 (other errors exit 2, tracebacks 1)."""
from __future__ import annotations

import re

import torch

from plumbing import timing
from plumbing.cli import UserError

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


def line(e: BaseException, device: torch.device, phase: str | None, kept: str, advice: str) -> str:
    """The one line of an out-of-memory error in `phase` (None: between phases)."""
    return (f"out of memory {f'in the {phase} phase' if phase else 'between phases'} on {device}: "
            f"{needed_and_had(e, device)}; {kept}; {advice}")


def outside(e: BaseException) -> OutOfMemory:
    """An out-of-memory error outside the epochs (setting up or finishing a run), as one line."""
    cuda = isinstance(e, torch.OutOfMemoryError) and torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return OutOfMemory(f"out of memory outside the epochs (setting up or finishing the run) on {device}: "
                       f"{needed_and_had(e, device)}; lower --batch_size or the network's size "
                       "(--init_channels, --layers)")
