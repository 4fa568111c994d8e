"""What a run costs, piece by piece: the seconds and peak memory of each piece of a search
(architecture and weight steps, s1 and s2 saliency batches, evaluation batches, the audit) timed
with the search's own code along a prune trajectory, and the search's schedule integrated over
them step by step; and what reading its data and writing its checkpoints cost. `--plan`
(plan.py) and bench/bench_whole_search.py both use it."""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import audit
import saliency as S
import utils
from data import NUM_CLASSES, SIZES, Digits, get_datasets, make_loader, transforms
from plumbing import checkpoints, rundir, timing
from saliency import PruneSchedule

PHASES = ("arch", "weight", "saliency", "compare", "validation", "audit")


@dataclass(frozen=True)
class Method:
    """What a search does at a prune event."""
    prunes: bool = True  # False: a search that never prunes (the benchmark's baseline)
    second: bool = False  # s2: Hessian rows on ceil(budget / live ops) batches
    num_compare: int = 1  # s1r: the N lowest re-checked on iter_compare + 1 batches each
    arch_steps: bool = False  # s1 from the architecture steps (no saliency pass)
    sal_pass: bool = True  # the criterion reads batches at every event (saliency.Criterion.reads_batches)


def method_of(args) -> Method:
    """The Method of a search's flags."""
    criterion = S.CRITERIA[args.sal_type]
    return Method(second=args.sal_second and criterion.taylor, num_compare=args.num_compare,
                  arch_steps=args.sal_source == "arch_steps", sal_pass=criterion.reads_batches)


def release_memory(device: torch.device) -> None:
    """Hand freed memory back (CUDA's cache; glibc's heap), so the next piece's peak is its own."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif (name := ctypes.util.find_library("c")) is not None:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def synthetic_trajectory(pruner: S.Pruner, seed: int = 0) -> list[list[dict]]:
    """A prune trajectory from the supernet to the end state under the space's rules (random
    saliencies; the masks are left as they were)."""
    masks = [m.clone() for m in pruner.model.masks()]
    generator = torch.Generator().manual_seed(seed)
    compare, pruner.num_compare = pruner.num_compare, 1
    events = []
    try:
        while not pruner.finished():
            shape = torch.stack(list(pruner.model.masks())).shape
            saliency = torch.rand(shape, generator=generator, device="cpu").to(pruner.device)
            decisions = pruner.decide(saliency, lambda: [])
            pruner.apply(decisions)
            events.append([{k: d[k] for k in ("cell", "edge", "op")} for d in decisions])
    finally:
        pruner.num_compare = compare
        for keep, m in zip(pruner.model.masks(), masks):
            keep.copy_(m)
    return events


class Pieces:
    """The costs of a search's pieces along a prune trajectory: live ops, eligible ops and masks
    at every level (events done); seconds and peak MB of the pieces at the levels measured.

    `run` is what `train_search.build` makes, `step` the search's iteration
    (`train_search.search_step`); `batch(n)` gives an (images, labels) batch of n on the device.
    Each piece runs under the run's own phase timer, which gives its seconds and its
    peak memory (the search's accounting)."""

    def __init__(self, run, events: list[list[dict]], batch: Callable[[int], tuple], step: Callable):
        self.run, self.batch, self.step, self.device = run, batch, step, run.pruner.device
        pruner, model = run.pruner, run.model
        start = [m.clone() for m in model.masks()]
        self.masks, self.live, self.eligible = [], [], []
        for decisions in [[]] + events:
            pruner.apply(decisions)
            self.masks.append([m.clone() for m in model.masks()])
            self.live.append(sum(pruner.live_ops()))
            self.eligible.append([int(pruner.space.eligible(c, m, pruner.restrict).sum()) if pruner._unfinished(c, m)
                                  else 0 for c, m in enumerate(model.masks())])
        for keep, m in zip(model.masks(), start):
            keep.copy_(m)
        self.seconds: dict[int, dict[str, float]] = {}
        self.memory: dict[int, dict[str, float]] = {}  # level: {phase: MB}
        # Freed memory handed back before each piece (the bisections of plan.py): otherwise a
        # piece's peak includes what earlier pieces left with the allocator, as in a run.
        self.release = False
        self.hessian_warm = False

    def timed(self, fn: Callable[[], object], repeats: int, warmup: bool = True) -> tuple[dict, dict]:
        """({phase: mean seconds per call}, {phase: peak MB}) of `fn` on a fresh phase timer."""
        if warmup:
            fn()
        if self.release:
            release_memory(self.device)
        self.run.timer = timer = timing.PhaseTimer(self.device)
        for _ in range(repeats):
            fn()
        return {k: v / repeats for k, v in timer.total.items()}, dict(timer.peak)

    def set_level(self, level: int) -> None:
        for keep, m in zip(self.run.model.masks(), self.masks[level]):
            keep.copy_(m)

    def measure(self, level: int, repeats: int, *, batch: int, sal_batch: int, s2_batch: int | None = None,
                hessian_rows: int = 0, arch_steps: bool = False, audit_batch: int | None = None,
                chunk: int = 16) -> dict[str, float]:
        """Time every piece with the masks of `level`: an iteration on batches of `batch`
        (architecture + weight step; with `arch_steps` also the accumulating one), one s1 batch of
        `sal_batch`, one evaluation batch, one s1r comparison batch (a candidate removed); with
        `s2_batch`, s2's gradient batch and `hessian_rows` Hessian rows at once (seconds per
        row); with `audit_batch`, one audit batch."""
        run, model = self.run, self.run.model
        self.set_level(level)
        x, y = self.batch(batch)
        xv, yv = self.batch(batch)
        meters = [utils.AverageMeter(), utils.AverageMeter()]
        lr = run.optimizer.param_groups[0]["lr"]

        def iteration(source: str):
            run.args.sal_source = source
            model.train()
            self.step(run, x, y, xv, yv, lr, meters, "the plan")
            run.pruner.reset_accumulation()

        source, amp = run.args.sal_source, run.args.amp
        out, memory = {}, {}
        seconds, peaks = self.timed(lambda: iteration("pass"), repeats)
        out.update(arch=seconds["arch"], weight=seconds["weight"])
        memory.update(arch=peaks["arch"], weight=peaks["weight"])
        if arch_steps:
            seconds, peaks = self.timed(lambda: iteration("arch_steps"), repeats)
            out["arch_acc"] = seconds["arch"]
        run.args.sal_source = source
        timer = lambda phase, fn: lambda: _in(self.run.timer, phase, fn)
        xs = self.batch(sal_batch)
        seconds, peaks = self.timed(timer("saliency", lambda: S.saliency_first_order(model, [xs], self.device, amp)),
                                    repeats)
        out["s1"], memory["saliency"] = seconds["saliency"], peaks["saliency"]
        evaluate = lambda: utils.evaluate(model, [(xv, yv)], torch.nn.CrossEntropyLoss(), self.device)
        seconds, peaks = self.timed(timer("validation", evaluate), repeats)
        out["eval"], memory["validation"] = seconds["validation"], peaks["validation"]
        # s1r: a candidate removed, on 4 batches a call (the run's 31 share the call's overhead)
        flat = int(model.masks()[0].reshape(-1).nonzero()[0])
        compare = lambda: S.compare_candidates(model, 0, [flat], lambda: [(xv, yv)] * 4, self.device, amp)
        seconds, peaks = self.timed(timer("compare", compare), repeats)
        out["compare"], memory["compare"] = seconds["compare"] / 4, peaks["compare"]
        if s2_batch:
            x2, y2 = self.batch(s2_batch)
            if s2_batch == sal_batch:  # (the s1 batch above: the same gradient, measured already)
                out["s1_s2"] = out["s1"]
            else:
                seconds, peaks = self.timed(timer("saliency", lambda: S.saliency_first_order(
                    model, [(x2, y2)], self.device, amp)), repeats)
                out["s1_s2"] = seconds["saliency"]
            rows = torch.cat([m.reshape(-1) for m in model.masks()]).nonzero().squeeze(1)[:hessian_rows]
            betas = model.betas().detach()

            def hessian():
                with S.explicit_batchnorm(model):
                    loss_fn = lambda b: torch.nn.functional.cross_entropy(model(x2, betas=b), y2)
                    S.hessian_diagonal(loss_fn, betas, rows, len(rows))
            seconds, peaks = self.timed(timer("saliency", hessian), 1, warmup=not self.hessian_warm)
            self.hessian_warm = True  # (the first call's costs once: a chunk can take minutes on a CPU)
            out["hessian_row"] = seconds["saliency"] / len(rows)
            memory["saliency"] = max(memory["saliency"], peaks["saliency"])
        if audit_batch:
            xa = self.batch(audit_batch)
            seconds, peaks = self.timed(timer("audit", lambda: audit.measure(model, [xa], self.device, chunk)), 1,
                                        warmup=False)
            out["audit"], memory["audit"] = seconds["audit"], peaks["audit"]
        self.seconds[level], self.memory[level] = out, memory
        return out

    def cost(self, level: int, piece: str) -> float:
        """Seconds of `piece` at `level`, linear between the levels measured."""
        levels = sorted(self.seconds)
        lo = max([v for v in levels if v <= level], default=levels[0])
        hi = min([v for v in levels if v >= level], default=levels[-1])
        a, b = self.seconds[lo][piece], self.seconds[hi][piece]
        return a if hi == lo else a + (b - a) * (level - lo) / (hi - lo)

    def peaks(self) -> dict[str, float]:
        """Peak MB per phase over the levels measured."""
        out: dict[str, float] = {}
        for memory in self.memory.values():
            for phase, mb in memory.items():
                out[phase] = max(out.get(phase, 0.0), mb)
        return out


def _in(timer: timing.PhaseTimer, phase: str, fn: Callable[[], object]) -> None:
    with timer(phase):
        fn()


@dataclass(frozen=True)
class Loads:
    """Seconds per batch the search spends outside its pieces: loading a batch of the batch size
    and of the saliency batch size (waiting on the loader), and writing a checkpoint."""
    batch: float = 0.0
    sal_batch: float = 0.0
    checkpoint: float = 0.0


def integrate(pieces: Pieces, method: Method, schedule: PruneSchedule, *, sal_batches: int, eval_batches: int,
              iter_compare: int = 30, budget: int = 500, loads: Loads = Loads(), audit_every: int = 0,
              audit_batches: int = 0) -> dict[str, float]:
    """Seconds per phase of a whole search, step by step along `schedule` (the search's own):
    every step an architecture and a weight step; at each event due, the saliency (an s1 pass of
    `sal_batches`, or s2's ceil(budget / live) batches of gradient + Hessian rows), s1r's
    candidates x (iter_compare + 1) evaluation batches, the audit; every epoch a validation of
    `eval_batches`. Loading the batches and writing checkpoints are charged where the search
    charges them (data, the phase that reads them, files)."""
    last = len(pieces.masks) - 1  # events until the final cell
    level, out = 0, dict.fromkeys((*PHASES, "data", "files"), 0.0)
    for epoch in range(schedule.epochs):
        for step in range(schedule.steps):
            accumulate = method.arch_steps and level < last
            out["arch"] += pieces.cost(level, "arch_acc" if accumulate else "arch")
            out["weight"] += pieces.cost(level, "weight")
            out["data"] += 2 * loads.batch  # a weight batch and an architecture batch
            if not (method.prunes and schedule.due(epoch, step) and level < last):
                continue
            if audit_every and level % audit_every == 0:
                out["audit"] += audit_batches * (pieces.cost(level, "audit") + loads.sal_batch)
            if method.second:  # ceil(budget / live) batches: a gradient (unless accumulated) and the rows
                rows = pieces.live[level]
                per_batch = (0 if method.arch_steps else pieces.cost(level, "s1_s2")) + \
                    rows * pieces.cost(level, "hessian_row") + loads.sal_batch
                out["saliency"] += math.ceil(budget / rows) * per_batch
            elif method.sal_pass and not method.arch_steps:
                out["saliency"] += sal_batches * (pieces.cost(level, "s1") + loads.sal_batch)
            if method.num_compare > 1:
                candidates = sum(min(method.num_compare, e) for e in pieces.eligible[level])
                out["compare"] += candidates * (iter_compare + 1) * (pieces.cost(level, "compare") + loads.batch)
            out["files"] += loads.checkpoint
            level += 1
        out["validation"] += eval_batches * (pieces.cost(level, "eval") + loads.batch)
        out["files"] += loads.checkpoint
    return out


# ---------------------------------------------------------------- the data a run reads


@dataclass(frozen=True)
class Shape:
    """What a plan needs of a data set: images in its training and test sets, classes, side."""
    train: int
    test: int
    classes: int
    side: int


def data_shape(name: str, root: str, image_size: int) -> tuple[Shape, torch.utils.data.Dataset]:
    """The data set's shape and a training set to read batches from: the real one where it costs
    nothing to open (digits, image folders), else synthetic images of its shape read as it reads
    its own (uint8 arrays through PIL and the real training transform)."""
    train_tf, _ = transforms(name, image_size=image_size)
    if name in ("folder", "imagenet"):  # on disk anyway; counted there
        train, test, classes = get_datasets(name, root, image_size=image_size)
        return Shape(len(train), len(test), classes, image_size), train
    n_train, n_test, side = SIZES[name]
    shape = Shape(n_train, n_test, NUM_CLASSES[name], side)
    return shape, Digits(train=True) if name == "digits" else SyntheticImages(shape, train_tf)


class SyntheticImages(torch.utils.data.Dataset):
    """Random images of a data set's shape (512 distinct, repeated), read the way the CIFAR, SVHN
    and ImageNet16 sets read theirs."""

    def __init__(self, shape: Shape, transform):
        self.shape, self.transform = shape, transform
        self.images = np.random.RandomState(0).randint(0, 256, (512, shape.side, shape.side, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return self.shape.train

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i % len(self.images)])), i % self.shape.classes


class Batches:
    """`batches(n)`: a batch of n training images (and labels) on the device, in the run's memory
    format, read through the real loader."""

    def __init__(self, dataset, device: torch.device, fmt: torch.memory_format):
        self.dataset, self.device, self.fmt, self.cache = dataset, device, fmt, {}

    def __call__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if n not in self.cache:
            x, y = next(iter(make_loader(self.dataset, n, shuffle=True, seed=0)))
            self.cache[n] = (x.to(self.device).contiguous(memory_format=self.fmt), y.to(self.device))
        return self.cache[n]


def load_seconds(dataset, n: int, workers: int, batches: int = 3) -> float:
    """Seconds the real loader takes per batch of n (after its first batch: workers starting)."""
    loader = make_loader(dataset, n, shuffle=True, seed=0, workers=workers)
    it = iter(loader)
    next(it)
    start, done = time.perf_counter(), 0
    for _ in range(min(batches, len(loader) - 1)):
        next(it)
        done += 1
    return (time.perf_counter() - start) / max(done, 1)


def waiting(load: float, compute: float, workers: int) -> float:
    """Seconds a step waits for its batch: all of the loading without workers; with workers, only
    what the computation does not hide."""
    return load if workers == 0 else max(load - compute, 0.0)


def checkpoint_seconds(state: dict, folder: Path) -> float:
    """Seconds to write `state` as the run writes its checkpoints (atomically, on `folder`'s disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".plan-") as temporary:
        start = time.perf_counter()
        checkpoints.save(Path(temporary) / rundir.CHECKPOINT, state)
        return time.perf_counter() - start
