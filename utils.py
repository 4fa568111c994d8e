"""Shared machinery of the scripts: the entry point, seeding and determinism, logging, metrics,
learning rates, evaluation, memory format and model complexity (the run directory's layout is
rundir.py's, checkpoints are checkpoints.py's)."""
from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import traceback
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from plumbing import cli, distributed, rundir, stops
from plumbing.cli import ArgumentParser, UserError  # noqa: F401  (the scripts' utils.ArgumentParser)
from plumbing.fileio import atomic_write, write_json  # noqa: F401  (utils.write_json for the scripts)

logger = logging.getLogger("fpdarts")


def run_cli(main, argv: list[str] | None = None):
    """Call a script's `main`: user errors (bad flags, genotypes, missing data sets, a full disk) and
    the stops of stops.py (out of memory, a lost process, SIGTERM, Ctrl-C) become one line on
    stderr (exit code 2; 3, 4, 130, 143); the torchrun process group is left always."""
    from data import DatasetMissing
    from genotypes import GenotypeError

    return cli.run_cli(lambda args: stops.guarded(main, args), argv, errors=(GenotypeError, DatasetMissing, OSError),
                       succeeded=distributed.wait_for_all, cleanup=distributed.shutdown)


def run_script(main) -> None:
    """A script's entry point: `run_cli(main)` on the command line's arguments. Under torchrun the
    process then ends at once (`distributed.leave`: a finished run must not abort in the
    interpreter's teardown), with the exit code and message it would have had."""
    if distributed.launched_processes() == 1:
        run_cli(main)
        return
    try:
        run_cli(main)
    except SystemExit as e:
        distributed.leave(e.code)
    except BaseException:  # (a bug: its traceback, as Python would print it)
        traceback.print_exc()
        distributed.leave(1)
    distributed.leave(0)


# ---------------------------------------------------------------- environment

def per_process_batch(batch_size: int, world_size: int, flag: str = "--batch_size") -> int:
    """Each process's share of a global batch size (`torchrun`); it must divide evenly."""
    if batch_size % world_size:
        raise UserError(f"{flag} {batch_size} is the global batch and must be divisible by the "
                        f"number of processes ({world_size})")
    return batch_size // world_size


def add_memory_format_flags(group, default: str, help_on: str) -> None:
    """--channels_last / --no_channels_last, one 3-state flag in every script: "on", "off", or
    "auto" (on for the CPU, off on CUDA)."""
    group.add_argument("--channels_last", dest="channels_last", action="store_const", const="on", default=default,
                       help=f"channels_last memory format ({help_on})")
    group.add_argument("--no_channels_last", dest="channels_last", action="store_const", const="off",
                       default=argparse.SUPPRESS, help="contiguous (NCHW) memory format")


def memory_format(choice: str, device: torch.device) -> torch.memory_format:
    """The memory format that --channels_last `choice` ("on", "off", "auto") gives on `device`."""
    on = choice == "on" or (choice == "auto" and device.type == "cpu")
    return torch.channels_last if on else torch.contiguous_format


def resolve_seed(seed: int) -> int:
    """The authors' convention: a negative seed draws one in [0, 10000), which is then logged
    (under torchrun, rank 0 draws it for every process)."""
    return distributed.broadcast(random.randrange(10000) if seed < 0 else seed)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


WORKERS_HELP = "data loader worker processes (default: 2 on CUDA, as the authors' code; 0 on a CPU)"


def on_device(args: argparse.Namespace, device: torch.device) -> None:
    """What a run (or its `--plan`) settles once its device is known: cuDNN as --deterministic asks,
    and --workers where it was left to its default (None: 2 on CUDA, 0 on a CPU)."""
    set_determinism(args.deterministic)
    if args.workers is None:
        args.workers = 2 if device.type == "cuda" else 0


def set_determinism(deterministic: bool) -> None:
    """--deterministic: PyTorch's deterministic algorithms and cuDNN settings (bit-identical CPU
    runs, GPU runs as deterministic as PyTorch allows); otherwise let cuDNN pick fast kernels."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic or torch.are_deterministic_algorithms_enabled():
        # (only when needed: the call imports torch's compiler stack, 2-3 s at start-up)
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def rng_state(device: torch.device) -> dict:
    """The states of every random generator a process draws from (Python, NumPy, torch, and the
    CUDA generator of its own GPU `device`: the one it draws drop-path and dropout masks from)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what `rng_state` saved; the CUDA state goes to this process's GPU `device` (whichever
    index the writer's was: a resume may see other GPUs, or none)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def rng_states(device: torch.device) -> list[dict]:
    """`rng_state(device)` of every process, in rank order (what checkpoints hold)."""
    return distributed.gather(rng_state(device))


def restore_rng(states: list[dict], world: distributed.World, seed: int) -> None:
    """Restore this process's random states from a checkpoint's `rng_states()`. A run resumed on
    another number of processes cannot continue their streams: each process is seeded afresh."""
    if len(states) == world.world_size:
        set_rng_state(states[world.rank], world.device)
    else:
        logger.info("resumed on %d processes instead of %d: random streams seeded afresh",
                    world.world_size, len(states))
        set_seed(seed + 1000 * len(states) + world.rank)


def shared_run_dir(world: distributed.World, make) -> Path:
    """The run directory, created by rank 0 (`make()`) and announced to the other processes."""
    return Path(distributed.broadcast(str(make()) if world.is_main else None))


# ---------------------------------------------------------------- run directory and logging

class _LogFile(logging.FileHandler):
    """log.txt, where a write that fails (a full disk) is one warning line on stderr, not a
    traceback for every record; the screen keeps the log."""
    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            sys.stderr.write(f"warning: cannot write {self.baseFilename} ({sys.exc_info()[1]}); "
                             "the log goes on on the screen only\n")


def setup_logging(run_dir: Path | None, main: bool = True) -> None:
    """Log to stdout and `<run_dir>/log.txt` (appending, so a resumed run continues its log).
    Under torchrun only rank 0 (`main`) logs; the other processes report warnings only."""
    fmt = logging.Formatter("%(asctime)s %(message)s", datefmt="%m/%d %I:%M:%S %p")
    logger.handlers.clear()
    logger.setLevel(logging.INFO if main else logging.WARNING)
    logger.propagate = False
    handlers = [logging.StreamHandler(sys.stdout if main else sys.stderr)]
    if run_dir is not None and main:
        handlers.append(_LogFile(run_dir / rundir.LOG))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)


# ---------------------------------------------------------------- metrics

class AverageMeter:
    """Running weighted average."""

    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / max(self.count, 1)


def pooled_averages(meters: dict[str, AverageMeter], device: torch.device) -> dict[str, float]:
    """{name: average} of `meters` over every process (torchrun), in one all-reduce on `device`,
    the collective's (NCCL takes CUDA tensors only); the meters themselves are left as they are
    (this process's, as checkpoints hold them)."""
    totals = torch.tensor([[m.sum, float(m.count)] for m in meters.values()], dtype=torch.float64, device=device)
    return pooled_totals(list(meters), totals)


def pooled_totals(names: list[str], totals: torch.Tensor) -> dict[str, float]:
    """{name: sum / count} of `totals` (one row (sum, count) per name, float64 on the collective's
    device) summed over every process, read on the host at once."""
    distributed.all_reduce_sum(totals)
    averages = totals[:, 0] / totals[:, 1].clamp(min=1)
    return dict(zip(names, averages.tolist()))


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` where `enabled` (--amp), else a context that does nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def hits(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> list[torch.Tensor]:
    """Top-k accuracies as shares in [0, 1], float32 tensors on the device (no host read)."""
    maxk = min(max(topk), output.size(1))
    pred = output.topk(maxk, 1).indices  # (N, maxk)
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, : min(k, maxk)].any(1).float().mean() for k in topk]


def accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> list[float]:
    """Top-k accuracies in percent (one host read)."""
    return [share * 100.0 for share in torch.stack(hits(output, target, topk)).tolist()]


@torch.no_grad()
def evaluate(model: nn.Module, loader, criterion, device: torch.device) -> dict:
    """Eval-mode loss, top-1 and top-5 (percent) over `loader`, pooled over processes. The sums
    stay on the device (float64, the arithmetic of AverageMeter's Python floats): one host read
    for the whole pass."""
    model.eval()
    totals = torch.zeros(3, 2, dtype=torch.float64, device=device)  # (loss, top1, top5) x (sum, count)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        logits = logits[0] if isinstance(logits, tuple) else logits
        acc1, acc5 = hits(logits, y, (1, 5))
        n = y.size(0)
        values = torch.stack([criterion(logits, y).double(), acc1.double() * 100.0, acc5.double() * 100.0])
        totals[:, 0] += values * n
        totals[:, 1] += n
    return pooled_totals(["loss", "top1", "top5"], totals)


class Stream:
    """An endless stream of batches from a shuffled loader, pass after pass, that can be saved and
    restored at any batch (replaces DARTS' next(iter(queue)) per step). Pass k is shuffled by
    `loader.sampler.set_epoch(k)`, so the state is just (pass, batches consumed)."""

    def __init__(self, loader):
        self.loader = loader
        self.passes = -1
        self._new_pass()

    def _new_pass(self) -> None:
        self.passes += 1
        self.loader.sampler.set_epoch(self.passes)
        self.consumed = 0
        self._it = iter(self.loader)

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        try:
            batch = next(self._it)
        except StopIteration:
            self._new_pass()
            batch = next(self._it)
        self.consumed += 1
        return batch

    def state_dict(self) -> dict:
        return {"passes": self.passes, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        """Re-create the saved pass and skip the batches it had already given."""
        self.passes = state["passes"] - 1
        self._new_pass()
        for _ in range(min(state["consumed"], len(self.loader))):
            next(self._it)
        self.consumed = state["consumed"]


# ---------------------------------------------------------------- learning rate

def cosine_lr(epoch: int, epochs: int, base: float, minimum: float = 0.0) -> float:
    """Cosine annealing from `base` (epoch 0) to `minimum` (epoch `epochs`), as CosineAnnealingLR."""
    return minimum + (base - minimum) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def warmup_cosine_nb201_lr(epoch: int, fraction: float, *, epochs: int, warmup: int, base: float,
                           minimum: float) -> float:
    """NAS-Bench-201's search schedule as its config (warm-up 10, epochs 30 of 40 in all) makes it:
    during the `warmup` epochs, linear from 0 to `base`, at every step (`fraction` = step / steps
    per epoch); then a cosine of period T = epochs - warmup from `base` to `minimum`, constant
    within an epoch, that is cut off at epoch T (the scheduler compares the absolute epoch with
    its own epoch count): `minimum` from there on. With 40 and 10 the cosine covers epochs 10-29
    and stops near 0.0081."""
    if epoch < warmup:
        return base * (epoch + fraction) / warmup
    period = epochs - warmup
    if epoch < period:
        return minimum + (base - minimum) * (1 + math.cos(math.pi * (epoch - warmup) / period)) / 2
    return minimum


def linear_lr(epoch: int, epochs: int, base: float) -> float:
    """The authors' ImageNet `linear` schedule: linear decay to a small value 5 epochs before the
    end, then linear to 0 over the last 5 epochs."""
    if epochs <= 5:
        return base * (epochs - epoch) / epochs
    if epochs - epoch > 5:
        return base * (epochs - 5 - epoch) / (epochs - 5)
    return base * (epochs - epoch) / ((epochs - 5) * 5)


def step_lr(epoch: int, base: float, gamma: float = 0.97) -> float:
    """DARTS' ImageNet schedule: multiply by `gamma` every epoch."""
    return base * gamma**epoch


def warmup_lr(lr: float, epoch: int, warmup_epochs: int = 5) -> float:
    """Linear warm-up over the first epochs: lr * (epoch + 1) / warmup_epochs."""
    return lr * (epoch + 1) / warmup_epochs if epoch < warmup_epochs else lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


# ---------------------------------------------------------------- checkpoints

def truncate_to(path: Path, size: int) -> None:
    """Cut an append-only file back to `size` bytes: what was written after a checkpoint goes."""
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)


# ---------------------------------------------------------------- model complexity

def count_parameters_in_M(model: nn.Module) -> float:
    """Parameters in millions, the DARTS way: the auxiliary head is not counted."""
    aux = getattr(model, "auxiliary_head", None)
    excluded = {id(p) for p in aux.parameters()} if aux is not None else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded) / 1e6


@torch.no_grad()
def count_multadds_in_M(model: nn.Module, image_size: int, channels: int = 3) -> float:
    """Mult-adds in millions of one eval-mode forward pass of a single image.

    Counted by PyTorch's own `torch.utils.flop_counter`, which sees convolutions and matrix
    products (linear layers) only; mult-adds = FLOPs / 2. Pooling, BN and activations are free.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, image_size, image_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 2 / 1e6
