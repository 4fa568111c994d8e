"""Several processes under `torchrun`: set-up, the collectives the scripts need, and DDP wrapping.

A run started without a launcher is a world of one process: every helper here then returns its
input unchanged, so the scripts have a single code path. Under `torchrun --nproc_per_node N`
(which sets RANK, LOCAL_RANK and WORLD_SIZE), the process group uses NCCL on GPUs and gloo on
CPUs, each process drives the GPU of its local rank, and `--batch_size` stays the global batch:
each process takes batch_size / N images per step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


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


def init(gpu: int = 0) -> World:
    """Join the process group when launched by torchrun (else a world of one) and pick the device:
    the GPU of the local rank (or `--gpu` for a single process) when CUDA is present, else the CPU."""
    if launched_processes() == 1:
        device = torch.device("cuda", gpu) if torch.cuda.is_available() else torch.device("cpu")
        return World(device=device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def shutdown() -> None:
    """Leave the process group (no-op for a single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


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


def sync_buffers(module: nn.Module) -> None:
    """Give every process rank 0's buffers (BN running statistics), as DDP does before each
    forward pass: evaluation and checkpoints then see the same network on every rank."""
    if _active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def wrap(model: nn.Module, world: World, *, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` on several processes; `model` itself otherwise.
    DDP copies rank 0's parameters and buffers to every process here."""
    if not world.distributed:
        return model
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (what checkpoints hold: no `module.` prefix on disk)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
