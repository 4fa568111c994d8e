"""Several processes under `torchrun`: set-up, the collectives the scripts need, and DDP wrapping.

A run started without a launcher is a world of one process: every helper here then returns its
input unchanged, so the scripts have a single code path. Under `torchrun --nproc_per_node N`
(which sets RANK, LOCAL_RANK and WORLD_SIZE), the process group uses NCCL on GPUs and gloo on
CPUs, each process drives the GPU of its local rank, and `--batch_size` stays the global batch:
each process takes batch_size / N images per step.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

from plumbing.cli import UserError


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank, the number of processes, and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_processes() -> int:
    """How many processes torchrun started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", 1))


DEFAULT_TIMEOUT = 600  # seconds (NCCL's own default; gloo's is 30 minutes)


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


_seconds.__name__ = "positive number of seconds"  # (argparse's word for a bad value: "invalid positive ...")


def add_flags(group) -> None:
    """--dist_timeout, in every script that runs under torchrun."""
    group.add_argument("--dist_timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                       help="under torchrun: how long a process waits in a collective before it stops with one line")


def _gpu(index: int, what: str) -> torch.device:
    """CUDA device `index`, made the current device (where the allocator, cuDNN, random streams,
    synchronisations and NCCL work without an explicit index; else GPU 0 holds a stray context)."""
    if not 0 <= index < torch.cuda.device_count():
        raise UserError(f"{what} {index}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        f"0 to {torch.cuda.device_count() - 1}")
    device = torch.device("cuda", index)
    torch.cuda.set_device(device)
    return device


# NCCL's defaults end a process whose collective timed out or failed in the watchdog thread
# (std::abort, no Python exception). Blocking waits raise the error in the thread that waits
# instead, and aborting only the communicator leaves the process to report it (stops.Guard: one
# line, exit code 4). The cost: the CPU waits for each collective to finish (DDP's gradient
# all-reduce, once a step). Set either variable yourself to choose otherwise.
NCCL_ERRORS_RAISE = {"TORCH_NCCL_BLOCKING_WAIT": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}


def init(gpu: int = 0, timeout: float = DEFAULT_TIMEOUT) -> World:
    """Join the process group when launched by torchrun (else a world of one) and pick the device:
    the GPU of the local rank (or `--gpu` for a single process) when CUDA is present, else the CPU;
    it becomes the current CUDA device. A collective that waits more than `timeout` seconds for
    the other processes fails, in Python (NCCL_ERRORS_RAISE)."""
    cuda = torch.cuda.is_available()
    if launched_processes() == 1:
        return World(device=_gpu(gpu, "--gpu") if cuda else torch.device("cpu"))
    device = _gpu(int(os.environ["LOCAL_RANK"]), "torchrun's LOCAL_RANK") if cuda else torch.device("cpu")
    if not dist.is_initialized():
        if cuda:
            for name, value in NCCL_ERRORS_RAISE.items():
                os.environ.setdefault(name, value)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout))
    return World(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def shutdown() -> None:
    """Leave the process group (no-op for a single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def leave(code: int | str | None) -> None:
    """End this torchrun process now, with `code` as `sys.exit` reads it, once its output is flushed.

    A DDP wrapper keeps the process group alive past `destroy_process_group` (its reducer and the
    parameters' hooks hold each other in C++, out of the collector's sight), so gloo's threads are
    still running when the interpreter tears itself down; now and then that aborts the process
    (SIGABRT, "terminate called without an active exception") after a run that finished, and
    torchrun reports the run as failed. Leaving without the teardown avoids it; every file is
    closed by then (checkpoints and results are written atomically, the log is flushed here)."""
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if isinstance(code, str) else code or 0)


def wait_for_all() -> None:
    """A barrier: every process has got here (before leaving the group after a run that
    succeeded everywhere, so that no process tears gloo down under one still using it)."""
    if _active():
        dist.barrier()


def _active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over all processes (in place, and returned)."""
    if _active():
        dist.all_reduce(tensor)
        tensor /= dist.get_world_size()
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over all processes (in place, and returned)."""
    if _active():
        dist.all_reduce(tensor)
    return tensor


def average_gradients(params) -> None:
    """Average the gradients of `params` over processes, in one flat all-reduce.

    Parameters without a gradient (pruned ops) are skipped; every process holds the same masks,
    so they skip the same ones.
    """
    if not _active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        flat = torch.cat([g.reshape(-1) for g in grads])
        all_reduce_mean(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


def broadcast(obj, src: int = 0):
    """Rank `src`'s `obj` (any picklable object) on every process."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn):
    """Run `fn()` on rank 0 only (reading a large file, say) and return its value there (None
    elsewhere); an exception it raises is raised on every process, so none waits in a collective."""
    value, error = None, None
    if not _active() or dist.get_rank() == 0:
        try:
            value = fn()
        except Exception as e:  # handed to every process, raised there
            error = e
    error = broadcast(error)
    if error is not None:
        raise error
    return value


def gather(obj) -> list:
    """Every process's `obj`, in rank order, on every process."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def check_agree(what: str, text: str, tensors: list[torch.Tensor]) -> None:
    """Prove that every process holds the same `text` and `tensors` (one line if not: the
    processes ended with different `what`)."""
    digest = hashlib.sha1(text.encode())
    for t in tensors:
        digest.update(t.detach().cpu().numpy().tobytes())
    digests = gather(digest.hexdigest())
    if len(set(digests)) > 1:
        raise UserError(f"the {len(digests)} processes ended with different {what}: {digests}")


def sync_buffers(module: nn.Module) -> None:
    """Give every process rank 0's buffers (BN running statistics), as DDP does before each
    forward pass: evaluation and checkpoints then see the same network on every rank."""
    if _active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def wrap(model: nn.Module, world: World, *, find_unused_parameters: bool = False,
         replicated: tuple[torch.Tensor, ...] = ()) -> nn.Module:
    """DistributedDataParallel around `model` on several processes; `model` itself otherwise.
    DDP copies rank 0's parameters and buffers to every process here, and its buffers before
    every forward pass, but for the `replicated` buffers: every process holds them identically
    already (the supernet's masks: a broadcast would only make them look changed)."""
    if not world.distributed:
        return model
    names = [name for name, b in model.named_buffers() if any(b is r for r in replicated)]
    if names:
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (what checkpoints hold: no `module.` prefix on disk)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
