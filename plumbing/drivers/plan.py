"""Know before you spend (`--plan`): the wall time and peak memory of a run, projected before it
starts, with exactly the run's flags, on its device.

The run's own network is built with the run's own code (`train_search.build`, the training
scripts' `engine.build_network`); a few real steps of every phase run on batches of the data set's
shape, read through the data set's real transforms (synthetic images where the data set is not on
disk: nothing is downloaded); for a search, at full size and at pruned sizes along a prune
trajectory of the space's rules (costs.py, the model bench/bench_whole_search.py checks against
real searches). The run's schedule is integrated over those costs; each phase's peak memory is
measured and set against the device's memory; where it does not fit, the largest batch size (and
s2 Hessian chunk, saliency batch) that fits is found by measuring. Only plan.json is written."""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import utils
from data import split_indices
from plumbing import distributed, oom, rundir, timing
from plumbing.drivers import costs
from plumbing.drivers.costs import Batches, Shape, checkpoint_seconds, data_shape, load_seconds, waiting
from saliency import PruneSchedule
from splits import NB201_SPLITS, read_split_file

log = utils.logger
LEVELS = 3  # pruning levels measured: the supernet, half way, the final cell
REPEATS = 2  # timed calls per piece (after a warm-up call)


def capacity(device: torch.device, override_mb: float | None) -> tuple[float, str]:
    """(MB the run may use, where that figure comes from): --plan_memory, else the GPU's free
    memory, else the machine's available memory (this process's own included; shared between
    torchrun's processes on it)."""
    if override_mb:
        return override_mb, "--plan_memory"
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        limit = (free + torch.cuda.memory_reserved(device)) / 2**20
        return limit, f"free memory of {total / 2**30:.1f} GiB on {device}"
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))  # (torchrun's processes on this machine share it)
    share = f", shared by {processes} processes" if processes > 1 else ""
    available = timing.available_mb()
    if available is not None:
        return available / processes + timing.resident_mb(), f"available memory of the machine{share}"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    return total / processes, f"physical memory of the machine{share}"


def fits(measure: Callable[[int], float], value: int, limit: float, device: torch.device) -> bool:
    """Whether the peak MB `measure(value)` stays within `limit` (an out-of-memory error: no)."""
    try:
        return measure(value) <= limit
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not oom.is_out_of_memory(e):
            raise
        costs.release_memory(device)
        return False


def largest(measure: Callable[[int], float], upper: int, limit: float, device: torch.device) -> int | None:
    """The largest value below `upper` whose measured peak fits in `limit` (bisection, every value
    tried measured); None when not even 1 fits."""
    lo, hi = 0, upper  # lo fits (0: none known), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(measure, mid, limit, device) else (lo, mid)
    return lo or None


def summary(phases: dict[str, float], peaks: dict[str, float], limit: float, source: str, kind: str) -> dict:
    """A run's plan: seconds and peak MB per phase, in total, against the memory it may use."""
    names = [k for k in dict.fromkeys([*phases, *peaks]) if phases.get(k) or k in peaks]
    peak = max(peaks.values(), default=0.0)
    return {"phases": {k: {"seconds": phases.get(k, 0.0), "peak_MB": peaks.get(k)} for k in names},
            "total_seconds": sum(phases.values()), "peak_MB": peak, "memory_kind": kind,
            "capacity_MB": limit, "capacity_source": source, "fits": peak <= limit}


# ---------------------------------------------------------------- the search


def search_sizes(args, shape: Shape) -> tuple[int, int]:
    """Images that train the weights and that score (alpha, saliency, validation) in the search."""
    if args.data_split == "benchmark" and args.nb201_splits is not None and args.dataset in NB201_SPLITS:
        file, weight_key, arch_key = NB201_SPLITS[args.dataset]
        source = shape.train if weight_key else shape.test
        keys = [k for k in (weight_key, arch_key) if k]
        lists = read_split_file(Path(args.nb201_splits) / file, keys, dict.fromkeys(keys, source))
        return len(lists[weight_key]) if weight_key else shape.train, len(lists[arch_key])
    weights, arch = split_indices(min(args.subset or shape.train, shape.train), args.train_portion)
    return len(weights), len(arch)


def plan_search(args, build: Callable, step: Callable, repeats: int = REPEATS) -> dict:
    """The plan of `train_search.py` with `args` (`build`: train_search.build, `step`: its
    search_step)."""
    start = time.perf_counter()
    world = distributed.init(args.gpu, args.dist_timeout)
    utils.on_device(args, world.device)  # (cuDNN and the loaders as in the run)
    utils.set_seed(0)
    shape, dataset = data_shape(args.dataset, args.data, args.image_size)
    n_weights, n_arch = search_sizes(args, shape)
    fmt = utils.memory_format(args.channels_last, world.device)
    run = build(args, world, shape.classes, fmt)
    bs = utils.per_process_batch(args.batch_size, world.world_size)
    sal_bs = utils.per_process_batch(args.sal_batch_size, world.world_size, "--sal_batch_size")
    batch = Batches(dataset, world.device, fmt)
    method = costs.method_of(args)
    events = costs.synthetic_trajectory(run.pruner)
    pieces = costs.Pieces(run, events, batch, step)
    options = dict(batch=bs, sal_batch=sal_bs, s2_batch=sal_bs if method.second else None,
                   arch_steps=method.arch_steps, audit_batch=sal_bs if args.audit_every else None,
                   chunk=args.hessian_chunk)
    limit, source = capacity(world.device, args.plan_memory)
    try:
        for level in sorted({0, len(events) // 2, len(events)})[:LEVELS]:
            pieces.measure(level, repeats, hessian_rows=min(args.hessian_chunk, pieces.live[level]), **options)
    except (torch.OutOfMemoryError, RuntimeError) as e:  # the run itself would stop here
        if not oom.is_out_of_memory(e):
            raise
        failed = unfit(e, run.timer.current, world.device, limit, source, run.timer.memory.kind)
        failed["suggestions"] = search_suggestions(args, pieces, world, limit, bs, sal_bs, method, {failed["phase"]})
        return finish(args, world, [{"label": f"{args.search_space} search", **failed}], start)
    per_process = lambda n: math.ceil(n / world.world_size)
    steps = math.ceil(per_process(n_weights) / bs)
    schedule = PruneSchedule(args.warmup, args.prune_interval or max(steps // 2, 1), steps, args.epochs)
    compute = pieces.cost(0, "arch") + pieces.cost(0, "weight")
    loads = costs.Loads(batch=waiting(load_seconds(dataset, bs, args.workers), compute, args.workers),
                        sal_batch=waiting(load_seconds(dataset, sal_bs, args.workers), compute, args.workers),
                        checkpoint=checkpoint_seconds({"model": run.model.state_dict(),
                                                       "optimizer": run.optimizer.state_dict(),
                                                       "arch_optimizer": run.architect.optimizer.state_dict()},
                                                      Path(args.out_dir)))
    phases = costs.integrate(pieces, method, schedule, sal_batches=math.ceil(per_process(n_arch) / sal_bs),
                             eval_batches=math.ceil(per_process(n_arch) / bs), iter_compare=args.iter_compare,
                             budget=args.sal_second_budget, loads=loads, audit_every=args.audit_every,
                             audit_batches=args.audit_batches)
    plan = summary(phases, pieces.peaks(), limit, source, run.timer.memory.kind)
    plan.update(label=f"{args.search_space} search", schedule={
        "epochs": args.epochs, "steps_per_epoch": steps, "events": len(events),
        "levels_measured": sorted(pieces.seconds), "live_ops": [pieces.live[k] for k in sorted(pieces.seconds)]},
        pieces={level: pieces.seconds[level] for level in sorted(pieces.seconds)})  # (seconds of each, per level)
    if not plan["fits"]:
        over = {k for k, mb in pieces.peaks().items() if mb > limit}
        plan["suggestions"] = search_suggestions(args, pieces, world, limit, bs, sal_bs, method, over)
    return finish(args, world, [plan], start)


def unfit(e: BaseException, phase: str | None, device: torch.device, limit: float, source: str, kind: str) -> dict:
    """The plan of a run that ran out of memory while being measured: no projection, the phase."""
    costs.release_memory(device)
    return {"phases": {}, "total_seconds": None, "peak_MB": None, "memory_kind": kind, "capacity_MB": limit,
            "capacity_source": source, "fits": False, "phase": phase,
            "out_of_memory": f"in the {phase} phase: {oom.needed_and_had(e, device)}"}


def search_suggestions(args, pieces: costs.Pieces, world, limit: float, bs: int, sal_bs: int,
                       method: costs.Method, over: set[str]) -> dict:
    """The largest --batch_size (the phases `over` the limit among steps, comparisons,
    validation), --hessian_chunk and --sal_batch_size (saliency) that fit, each measured at full
    size."""
    found, device = {}, world.device
    pieces.release = True  # each try's own peak

    def step_peak(b: int) -> float:
        pieces.measure(0, 1, batch=b, sal_batch=1)
        return max(pieces.memory[0][k] for k in ("arch", "weight", "validation"))

    def chunk_peak(c: int) -> float:
        pieces.measure(0, 1, batch=1, sal_batch=1, s2_batch=sal_bs, hessian_rows=c)
        return pieces.memory[0]["saliency"]

    def saliency_peak(b: int) -> float:
        pieces.measure(0, 1, batch=1, sal_batch=b, s2_batch=b if method.second else None,
                       hessian_rows=1 if method.second else 0)
        return pieces.memory[0]["saliency"]
    if over & {"arch", "weight", "validation", "compare", "data"}:
        found["batch_size"] = scale(largest(step_peak, bs, limit, device), world)
    if "saliency" in over:
        if method.second:
            found["hessian_chunk"] = largest(chunk_peak, args.hessian_chunk, limit, device)
        if not found.get("hessian_chunk"):
            found["sal_batch_size"] = scale(largest(saliency_peak, sal_bs, limit, device), world)
    return found


def scale(value: int | None, world) -> int | None:
    """A per-process batch size as the global flag value."""
    return None if value is None else value * world.world_size


# ---------------------------------------------------------------- the training scripts


def plan_training(args, sources: list[tuple[str, object]], build: Callable, train_epoch: Callable, *,
                  shape: Shape, data, criterion, repeats: int = REPEATS) -> dict:
    """The plan of a training script with `args` for each architecture of `sources`
    (`build(genotype, num_classes, world)`: engine.build_network; `train_epoch`:
    engine.train_one_epoch) on a data set of `shape` (batches read from `data`)."""
    start = time.perf_counter()
    world = distributed.init(args.gpu, args.dist_timeout)
    utils.on_device(args, world.device)  # (cuDNN and the loaders as in the run)
    bs = utils.per_process_batch(args.batch_size, world.world_size)
    n_train = len(split_indices(shape.train, 1.0 - args.val_portion)[0]) if args.val_portion else shape.train
    n_eval = (shape.train - n_train) + (0 if args.no_test else shape.test)
    steps = math.ceil(math.ceil(n_train / world.world_size) / bs)
    eval_batches = math.ceil(math.ceil(n_eval / world.world_size) / bs)
    load = load_seconds(data, bs, args.workers)
    limit, source = capacity(world.device, args.plan_memory)
    plans = []
    for label, genotype in sources:
        utils.set_seed(0)
        net = build(genotype, shape.classes, world)
        model, ddp, optimizer, fmt = net.model, net.ddp, net.optimizer, net.memory_format
        x, y = Batches(data, world.device, fmt)(bs)
        timer = timing.PhaseTimer(world.device)
        aux = args.auxiliary_weight if args.auxiliary else 0.0
        model.drop_path_prob = args.drop_path_prob / 2  # (the ramp's middle)

        # The three closures read this iteration's network, batch and timer and are called in this
        # iteration only (step_peak rebinds the batch they read): hence the noqa: B023 below.
        def train():
            with timer("train"):  # noqa: B023
                train_epoch(ddp, [(x, y)], optimizer, criterion, world.device, grad_clip=args.grad_clip,  # noqa: B023
                            aux_weight=aux, amp=args.amp, channels_last=fmt == torch.channels_last,  # noqa: B023
                            report_freq=10**9)

        def evaluate():
            with timer("eval"):  # noqa: B023
                utils.evaluate(model, [(x, y)], torch.nn.CrossEntropyLoss(), world.device)  # noqa: B023

        def step_peak(b: int) -> float:
            nonlocal x, y
            x, y = Batches(data, world.device, fmt)(b)  # noqa: B023
            costs.release_memory(world.device)
            timer.peak.clear()  # noqa: B023
            train()
            evaluate()
            return max(timer.peak.values())  # noqa: B023
        seconds = {}
        try:
            for phase, fn in (("train", train), ("eval", evaluate)):
                fn()  # warm-up
                costs.release_memory(world.device)
                timer.total.pop(phase)
                for _ in range(repeats):
                    fn()
                seconds[phase] = timer.total[phase] / repeats
        except (torch.OutOfMemoryError, RuntimeError) as e:  # the run itself would stop here
            if not oom.is_out_of_memory(e):
                raise
            plans.append({"label": label, **unfit(e, timer.current, world.device, limit, source, timer.memory.kind),
                          "suggestions": {"batch_size": scale(largest(step_peak, bs, limit, world.device), world)}})
            continue
        files = checkpoint_seconds({"model": model.state_dict(), "optimizer": optimizer.state_dict()},
                                   Path(args.out_dir or "ckpt"))
        phases = {"train": args.epochs * steps * (seconds["train"] + waiting(load, seconds["train"], args.workers)),
                  "eval": args.epochs * eval_batches * (seconds["eval"] + waiting(load, seconds["eval"], args.workers)),
                  "files": args.epochs * files}
        plan = summary(phases, dict(timer.peak), limit, source, timer.memory.kind)
        plan.update(label=label, params_M=net.params_M, multadds_M=net.multadds_M,
                    schedule={"epochs": args.epochs, "steps_per_epoch": steps, "eval_batches_per_epoch": eval_batches})
        if not plan["fits"]:
            plan["suggestions"] = {"batch_size": scale(largest(step_peak, bs, limit, world.device), world)}
        plans.append(plan)
        net = model = ddp = optimizer = None  # (freed before the next architecture's network)
        costs.release_memory(world.device)
    return finish(args, world, plans, start)


# ---------------------------------------------------------------- flags and the report


def add_flags(p) -> None:
    """--plan, --plan_file and --plan_memory (every script that runs: the search and the three
    training scripts)."""
    g = p.add_argument_group("plan (know before you spend)")
    g.add_argument("--plan", action="store_true",
                   help="do not run: time a few real steps, measure their memory, print the projection and stop")
    g.add_argument("--plan_file", default=None,
                   help="where --plan writes its JSON (default: <out_dir>/plan-<kind>-<save>.json)")
    g.add_argument("--plan_memory", type=float, default=None, metavar="MB",
                   help="--plan against this much memory (a smaller GPU); finds the largest batch sizes that fit")


def check_flags(p, args) -> None:
    """--plan_file/--plan_memory need --plan; --plan plans a new run (not --resume, --mode eval)."""
    if not args.plan and (args.plan_file or args.plan_memory):
        p.error("--plan_file and --plan_memory go with --plan")
    if args.plan and (args.resume or getattr(args, "mode", "train") == "eval"):
        p.error("--plan plans a new run: give the run's flags without --resume (or --mode eval)")
    if args.plan_memory is not None and args.plan_memory <= 0:
        p.error(f"--plan_memory must be positive (MB), got {args.plan_memory}")


def plan_file(args, root: str | Path, kind: str) -> str:
    """Where the plan's JSON goes: --plan_file, else next to where the run would be."""
    return args.plan_file or str(rundir.plan_path(root, kind, args.save))


def finish(args, world, plans: list[dict], start: float) -> dict:
    """plan.json (rank 0) and the printed table; the plan as a dict."""
    plan = {"device": str(world.device), "world_size": world.world_size, "runs": plans,
            "planning_seconds": time.perf_counter() - start}
    if world.is_main:
        path = Path(args.plan_file)  # (set by the script: plan_file)
        utils.write_json(path, plan)
        sys.stdout.write(report(plan) + f"\nplan written to {path}\n")  # (the command's output)
        sys.stdout.flush()
    return plan


def report(plan: dict) -> str:
    """The plan as a few lines for a person."""
    lines = [f"plan on {plan['device']} x {plan['world_size']} (planned in {plan['planning_seconds']:.0f} s):"]
    for run in plan["runs"]:
        if run["total_seconds"] is None:
            lines.append(f"  {run['label']}: DOES NOT FIT: out of memory {run['out_of_memory']} "
                         f"({run['capacity_source']})")
        else:
            lines.append(f"  {run['label']}: {timing.duration(run['total_seconds'])} in all; peak "
                         f"{run['peak_MB']:.0f} MB ({run['memory_kind']}) of {run['capacity_MB']:.0f} MB "
                         f"({run['capacity_source']}): {'fits' if run['fits'] else 'DOES NOT FIT'}")
        for phase, p in run["phases"].items():
            mb = "" if p["peak_MB"] is None else f", peak {p['peak_MB']:.0f} MB"
            lines.append(f"    {phase:10s} {timing.duration(p['seconds']):>8s}{mb}")
        for flag, value in run.get("suggestions", {}).items():
            lines.append(f"    fits with --{flag} {value}" if value else f"    --{flag}: not even 1 fits")
    return "\n".join(lines)
