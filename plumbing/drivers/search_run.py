"""A search's run and its records: set-up (run directory, logging, data and loaders), the files
of every epoch and prune event, TensorBoard, checkpoints and exact resume, progress with ETAs,
and the final results. The algorithm (its state, step, schedule and prune event) is
`train_search.py`, which calls this module with its state; nothing here calls back into it."""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

import audit
import nasbench201
import utils
from architect import Architect
from audit import rules_of
from data import make_loader
from model_search import Supernet
from plumbing import board, checkpoints, distributed, rundir, timing
from plumbing.divergence import Divergence
from plumbing.fileio import read_jsonl
from saliency import CRITERIA, Pruner, PruneSchedule
from search_spaces import recipe_values
from splits import SPLITS_WHERE, search_data
from visualize import draw_or_warn

log = utils.logger


def fresh_meters() -> list[utils.AverageMeter]:
    """The training loss and top-1 meters of an epoch."""
    return [utils.AverageMeter(), utils.AverageMeter()]


class Algorithm(Protocol):
    """What this module reads of the algorithm's state (`train_search.Search`, changed there)."""
    args: argparse.Namespace
    model: Supernet
    optimizer: torch.optim.Optimizer  # the weights'
    architect: Architect
    pruner: Pruner
    schedule: PruneSchedule
    timer: timing.PhaseTimer
    divergence: Divergence  # --nan_policy


@dataclass
class Run:
    """A search's run: its processes, directory and data, and its records (changed only here)."""
    args: argparse.Namespace
    world: distributed.World
    dir: Path
    train_queue: torch.utils.data.DataLoader  # the weight steps' batches
    valid_iter: utils.Stream  # the architecture steps' batches, endless
    compare_iter: utils.Stream  # s1r's comparison batches (valid_iter itself when they share images)
    sal_queue: torch.utils.data.DataLoader  # the saliency passes' batches
    valid_eval: torch.utils.data.DataLoader  # the end-of-epoch validation, unshuffled
    num_classes: int
    data_split: str
    writer: object  # TensorBoard (a no-op on ranks > 0)
    benchmark: object | None  # the NAS-Bench-201 look-up (rank 0, with --nb201_file)
    state: dict | None  # the checkpoint being resumed
    clock: float  # when the search started (earlier on resume: its elapsed time counts)
    events: int = 0  # prune events so far
    batches: Iterator | None = None  # the rest of the current epoch's weight batches
    meters: list = field(default_factory=fresh_meters)  # the current epoch's training meters
    rows: list[dict] = field(default_factory=list)  # one per finished epoch: validation (and benchmark)


def write_epoch_files(run_dir, epoch: int, model: Supernet, genotype, rows: list[dict]) -> None:
    """Per-epoch genotype (NAS-Bench-201: architecture string) and mixing weights in the authors'
    layout, plus results.csv so far (NAS-Bench-201: with the cells and their benchmark figures)."""
    model.space.save(genotype, rundir.epoch_path(run_dir, "genotype", epoch))
    betas = model.betas().detach().cpu().tolist()
    utils.write_json(rundir.epoch_path(run_dir, "alpha", epoch),
                     {f"alphas_{t}": b for t, b in zip(model.space.cell_types, betas)})
    extra = [k for k in rows[-1] if k not in ("epoch", "val_loss", "val_acc")]
    csv = ",".join(["epoch,val_loss,val_acc", *extra]) + "\n" + "".join(
        ",".join([f"{r['epoch']},{r['val_loss']:.6f},{r['val_acc']:.4f}", *(_cell(r.get(k)) for k in extra)]) + "\n"
        for r in rows)
    utils.atomic_write(rundir.results_csv(run_dir), csv)


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def record_event(run: Run, search: Algorithm, epoch: int, step: int, saliency: torch.Tensor,
                 decisions: list[dict], live: list[torch.Tensor], audited: list[dict] | None) -> None:
    """Count the prune event (every process) and, on rank 0, write its files (its saliency file
    in the authors' layout, its lines in prune_events.jsonl, every op's saliency and the live ops
    before it in saliency.jsonl, the audit's lines), TensorBoard histograms of the live ops'
    saliencies, and the log."""
    run.events += 1
    if run.world.is_main:
        with search.timer("files"):
            _write_event(run, search, epoch, step, saliency, decisions, live, audited)


def _write_event(run: Run, search: Algorithm, epoch: int, step: int, saliency: torch.Tensor,
                 decisions: list[dict], live: list[torch.Tensor], audited: list[dict] | None) -> None:
    run_dir, space, pruner = run.dir, search.model.space, search.pruner
    saliency = saliency.detach().cpu()
    utils.write_json(rundir.epoch_path(run_dir, "sal", epoch),
                     dict(zip(space.cell_types, saliency.tolist())))
    _append(run_dir / rundir.SALIENCY, [{
        "event": run.events, "epoch": epoch, "step": step, "steps_per_epoch": len(run.train_queue),
        "saliency": dict(zip(space.cell_types, saliency.tolist())),
        "live": {t: m.int().tolist() for t, m in zip(space.cell_types, live)}}])
    for t, s, m in zip(space.cell_types, saliency, live):
        run.writer.add_histogram(f"saliency/{t}", s[m.cpu()], run.events)
    endpoints = space.endpoints
    _append(run_dir / rundir.PRUNE_EVENTS, [
        {"epoch": epoch, "step": step, **d, "src": endpoints[d["edge"]][0], "dst": endpoints[d["edge"]][1],
         "live_ops": pruner.live_ops()} for d in decisions])
    for d in decisions:
        log.info("prune %s edge %d (%d->%d) %s  S=%.3g%s", d["cell"], d["edge"], *endpoints[d["edge"]],
                 d["op"], d["saliency"], "" if d["loss"] is None else f"  loss={d['loss']:.4f}")
    if audited:
        _append(run_dir / rundir.AUDIT, [{"epoch": epoch, "step": step, **r} for r in audited])
        for r in audited:
            rules = rules_of(r)
            log.info("audit %s: Spearman |S| vs |true change| %s; true rank of the pick among %d: %s",
                     r["cell"], ", ".join(f"{k} {r[k]['spearman_abs']:.2f}" for k in rules), r["eligible"],
                     ", ".join(f"{k} {r[k]['true_rank']}" for k in rules))
            for k in rules:
                run.writer.add_scalar(f"audit/{r['cell']}/{k}_spearman_abs", r[k]["spearman_abs"], run.events)


def _append(path, records: list[dict]) -> None:
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def save_state(run: Run, search: Algorithm, epoch: int, step: int | None) -> None:
    """Checkpoint everything an exact resume needs, atomically; `step` None = epoch complete.

    Besides weights, alphas, masks and optimizers: the position in the data (the orders
    themselves are functions of the seed and the pass number), every process's random states,
    and how far the log and the prune history had got.
    """
    with search.timer("files"):
        # Collectives: every process takes part, rank 0 writes.
        rng, accumulation = utils.rng_states(run.world.device), search.pruner.accumulation_state()
        if run.world.is_main:
            write_checkpoint(run, search, epoch, step, rng, accumulation)


def write_checkpoint(run: Run, search: Algorithm, epoch: int, step: int | None, rng, accumulation: dict) -> None:
    """The checkpoint of `save_state`, written atomically by rank 0."""
    sizes = {name: (run.dir / name).stat().st_size for name in rundir.APPENDED if (run.dir / name).exists()}
    checkpoints.save(run.dir / rundir.CHECKPOINT, previous=run.dir / rundir.PREVIOUS, state={
        "epoch": epoch, "step": step, "model": search.model.state_dict(),
        "optimizer": search.optimizer.state_dict(), "arch_optimizer": search.architect.optimizer.state_dict(),
        "valid_stream": run.valid_iter.state_dict(), "events": run.events, "rng": rng,
        "compare_stream": None if run.compare_iter is run.valid_iter else run.compare_iter.state_dict(),
        "meters": [(m.sum, m.count) for m in run.meters], "rows": run.rows, "world_size": run.world.world_size,
        "log_bytes": (run.dir / rundir.LOG).stat().st_size, "elapsed": time.time() - run.clock,
        "appended_bytes": sizes, "args": vars(run.args),
        "timer": search.timer.state_dict(), "sal_accumulation": accumulation,
        "divergence": search.divergence.state_dict()})


def progress(run: Run, search: Algorithm, epoch: int, step: int, first_step: int, rate: timing.Rate) -> str:
    """Images per second, and the ETAs of the epoch and of the search at the current rates
    (prune events still due included: at their mean time so far, or before the first one, at
    about one step per saliency batch, marked ~)."""
    args, steps, timer, rows = run.args, search.schedule.steps, search.timer, run.rows
    step_seconds = rate.step_seconds(step + 1 - first_step)
    needed = search.pruner.events_left()  # the schedule's points still to come, where events are due:
    in_epoch, after = search.schedule.points_left(epoch, step, needed)
    spent = sum(timer.total.get(k, 0.0) for k in ("saliency", "compare", "audit"))
    event_seconds = spent / run.events if run.events else len(run.sal_queue) * step_seconds
    validation = timer.total.get("validation", 0.0) / len(rows) if rows else len(run.valid_eval) * step_seconds / 3
    epoch_left, search_left = timing.search_eta(
        steps_left=steps - step - 1, step_seconds=step_seconds, epochs_after=args.epochs - epoch - 1,
        steps_per_epoch=steps, events_in_epoch=in_epoch, events_after=after, event_seconds=event_seconds,
        validation_seconds=validation)
    guess = "" if run.events or not needed else "~"
    return (f"{rate.images_per_second():.1f} img/s, epoch ETA {timing.duration(epoch_left)}, "
            f"search ETA {guess}{timing.duration(search_left)}")


def start_epoch(run: Run, epoch: int, skip: int = 0) -> None:
    """Begin the epoch's pass over the weight split with fresh meters, or skipping `skip` batches
    already trained (the meters then are the checkpoint's)."""
    if not skip:
        run.meters = fresh_meters()
    run.train_queue.sampler.set_epoch(epoch)
    run.batches = iter(run.train_queue)
    for _ in range(min(skip, len(run.train_queue))):  # fewer batches when resumed on more processes
        next(run.batches)


def resume(run: Run, search: Algorithm) -> tuple[int, int]:
    """Restore the checkpoint being resumed into the run's records and the algorithm's state;
    return (epoch, first step) to go on from."""
    state = run.state
    search.model.load_state_dict(state["model"])
    search.optimizer.load_state_dict(state["optimizer"])
    search.architect.optimizer.load_state_dict(state["arch_optimizer"])
    search.timer.load_state_dict(state["timer"])
    search.divergence.load_state_dict(state["divergence"])
    if state["sal_accumulation"] is not None:  # (--sal_source arch_steps)
        search.pruner.load_accumulation_state(state["sal_accumulation"])
    run.clock -= state["elapsed"]
    if run.world.is_main:
        for name in rundir.APPENDED:
            utils.truncate_to(run.dir / name, state["appended_bytes"].get(name, 0))
    run.valid_iter.load_state_dict(state["valid_stream"])
    if state["compare_stream"] is not None:  # (a stream of its own: test-transform scoring)
        run.compare_iter.load_state_dict(state["compare_stream"])
    run.events = state["events"]
    run.rows = state["rows"]
    epoch, step = state["epoch"], state["step"]
    if step is None:
        epoch, first = epoch + 1, 0
    else:
        first = step + 1
        for meter, (total, count) in zip(run.meters, state["meters"]):
            meter.sum, meter.count = total, count
    if first:
        start_epoch(run, epoch, skip=first)
    utils.restore_rng(state["rng"], run.world, run.args.seed)  # last: skipping batches drew randomness
    log.info("resuming %s at epoch %d, step %d", run.dir, epoch, first)
    run.state = None  # (the checkpoint's tensors need not live on for the rest of the search)
    return epoch, first


def setup(args, world: distributed.World) -> Run:
    """The run directory (new or resumed: its checkpoint read, not applied yet), logging, the data
    and its loaders, and the NAS-Bench-201 benchmark, read by rank 0 only: it is large."""
    data = search_data(args.dataset, args.data, split=args.data_split, splits_dir=args.nb201_splits,
                       portion=args.train_portion, subset=args.subset, scoring_transform=args.scoring_transform,
                       cutout=args.cutout, cutout_length=args.cutout_length, image_size=args.image_size,
                       flip=args.flip)
    benchmark = distributed.on_main(lambda: nasbench201.Benchmark(args.nb201_file)) if args.nb201_file else None
    state = None
    if args.resume:
        run_dir, state = checkpoints.resume(args.resume)
        rundir.check_resumable(run_dir / rundir.CHECKPOINT, state["args"], args)
        args.seed = state["args"]["seed"]
        if world.is_main:
            rundir.lock(run_dir)  # before touching its files: a second process on it is refused
            utils.truncate_to(run_dir / rundir.LOG, state["log_bytes"])
    else:
        run_dir = utils.shared_run_dir(
            world, lambda: rundir.make(args.out_dir, rundir.SEARCH, args.save, f"task{args.task}"))
        if world.is_main:
            rundir.lock(run_dir)
    utils.setup_logging(run_dir, world.is_main)
    if world.is_main and not args.resume:
        utils.write_json(run_dir / rundir.ARGS, vars(args))
    log.info("seed %d, device %s x %d processes, args = %s", args.seed, world.device, world.world_size, vars(args))
    utils.set_seed(args.seed + world.rank)  # augmentations differ by process; DDP syncs the weights

    if args.data_split == "benchmark" and args.nb201_splits is None:
        log.warning("no --nb201_splits: searching on the --train_portion %g split of the training set, not on "
                    "NAS-Bench-201's split files (%s)", args.train_portion, SPLITS_WHERE)
    log.info("data: %s; saliency, comparisons and validation on %s-transform images", data.split,
             args.scoring_transform)
    batch_size = utils.per_process_batch(args.batch_size, world.world_size)
    sal_bs = utils.per_process_batch(args.sal_batch_size, world.world_size, "--sal_batch_size")
    loader = lambda dataset, bs, k, shuffle=True: make_loader(
        dataset, bs, shuffle=shuffle, seed=args.seed + k, workers=args.workers,
        pin_memory=world.device.type == "cuda",
        rank=world.rank, world_size=world.world_size)
    # End-of-epoch validation gets its own unshuffled loader, so it never moves the validation
    # stream (which an exact resume replays).
    writer = board.writer(run_dir, world.is_main)
    valid_iter = utils.Stream(loader(data.arch, batch_size, 1))
    # s1r draws its comparison batches from the architecture stream when it scores on the same
    # images (the DARTS-space code), from a stream of its own over the scoring set otherwise.
    compare_iter = valid_iter if data.scoring is data.arch else utils.Stream(loader(data.scoring, batch_size, 3))
    return Run(
        args=args, world=world, dir=run_dir, train_queue=loader(data.weights, batch_size, 0), valid_iter=valid_iter,
        compare_iter=compare_iter, sal_queue=loader(data.scoring, sal_bs, 2),
        valid_eval=loader(data.scoring, batch_size, 0, shuffle=False), num_classes=data.num_classes,
        data_split=data.split, writer=writer, benchmark=benchmark, state=state, clock=time.time())


def start(run: Run, model: Supernet) -> None:
    """Start the search's clock, once its supernet is built (a resumed search's time is added in
    `resume`); write the space, recipe and split of a new search in search_space.json, and log the
    supernet's size."""
    run.clock = time.time()
    if run.world.is_main and not run.args.resume:
        utils.write_json(run.dir / rundir.SEARCH_SPACE, {**model.space.describe(), "recipe": recipe_values(run.args),
                                                         "data_split": run.data_split})
    log.info("supernet: %.3fM parameters", utils.count_parameters_in_M(model))
    if model.space.has_benchmark and run.args.nb201_file is None:
        log.info(nasbench201.HOW_TO.format(run_dir=run.dir))


def end_epoch(run: Run, search: Algorithm, epoch: int, lr: float, train: dict, valid: dict, genotype) -> None:
    """The epoch's records: its row, files, log, time and memory accounting, TensorBoard and
    checkpoint."""
    args, model, timer = run.args, search.model, search.timer
    with timer("files"):
        log.info("train_acc %f valid_acc %f live ops %s", train["top1"], valid["top1"], search.pruner.live_ops())
        log.info("genotype = %s", genotype)
        # The epoch's peak memory per phase (MB): in the log, TensorBoard and results.json, not in
        # results.csv, which stays a function of the seed (a resumed search's is identical).
        peaks = timer.memory_lap()
        row = {"epoch": epoch, "val_loss": valid["loss"], "val_acc": valid["top1"]}
        if model.space.has_benchmark:  # the cell, a key of the benchmark, in results.csv
            row["arch_str"] = genotype
            if args.nb201_file:
                row.update(distributed.on_main(lambda: run.benchmark.lookup(genotype)) or {})
        run.rows.append(row)
        if run.world.is_main:
            write_epoch_files(run.dir, epoch, model, genotype, run.rows)
            if args.save_one_shot:
                checkpoints.save(rundir.one_shot_path(run.dir, epoch), {"model": model.state_dict()})
    # The epoch's seconds per phase (its end-of-epoch checkpoint counts in the next epoch's).
    seconds = timer.lap()
    log.info("epoch %d time: %s", epoch, timing.summary(seconds))
    log.info("epoch %d memory (%s): %s", epoch, timer.memory.kind, timing.memory_text(peaks))
    with timer("files"):
        write_scalars(run, search, epoch, lr, train, valid, row, seconds, peaks)
    save_state(run, search, epoch, None)


def write_scalars(run: Run, search: Algorithm, epoch: int, lr: float, train: dict, valid: dict, row: dict,
                  seconds: dict, peaks: dict) -> None:
    """The epoch's TensorBoard scalars (rank 0)."""
    model, pruner = search.model, search.pruner
    if run.world.is_main:
        scalars = {"train/loss": train["loss"], "train/top1": train["top1"], "valid/loss": valid["loss"],
                   "valid/top1": valid["top1"], "lr": lr,
                   **{f"live_ops/{t}": n for t, n in zip(model.space.cell_types, pruner.live_ops())},
                   **{f"nb201/{k}": v for k, v in row.items() if k in nasbench201.KEYS},
                   **{f"time/{k}": v for k, v in seconds.items()},
                   **{f"memory/{k}": v for k, v in peaks.items()}}
        for tag, value in scalars.items():
            run.writer.add_scalar(tag, value, epoch)
        for t, b, m in zip(model.space.cell_types, model.betas().detach().cpu(), pruner.model.masks()):
            run.writer.add_image(f"beta/{t}", board.beta_image(b, m.cpu()), epoch)


def write_summary(run_dir) -> None:
    """summary.png of the search (scripts/plot_search.py draws the rest, and PDFs); a figure that
    fails costs the search nothing but a warning."""
    try:
        from plumbing.drivers import plots  # (matplotlib: only here)

        log.info("summary figure: %s", plots.write_summary(run_dir, formats=("png",))[0])
    except Exception as e:  # the results are written already; the figure can be drawn again
        log.warning("no summary figure (%s: %s); draw it with scripts/plot_search.py %s",
                    type(e).__name__, e, run_dir)


def finish(run: Run, search: Algorithm, genotype, valid: dict) -> dict:
    """The final genotype, its drawing and results.json."""
    args, run_dir, pruner, timer = run.args, run.dir, search.pruner, search.timer
    with timer("files"):
        run.writer.close()
        # Under torchrun, prove that every process ends with the same alphas, masks and genotype.
        distributed.check_agree("architectures", repr(genotype),
                                [*search.model.arch_parameters(), *search.model.masks()])
    space = search.model.space
    results = {"variant": variant_name(args), "search_space": space.name, "dataset": args.dataset,
               "genotype": space.format.to_dict(genotype),
               "seed": args.seed, "final_valid_top1": valid["top1"], "final_valid_loss": valid["loss"],
               "pruning_finished": pruner.finished(), "live_ops": pruner.live_ops(),
               "search_cost_seconds": time.time() - run.clock, "device": str(run.world.device),
               "world_size": run.world.world_size,
               "time_seconds": distributed.broadcast(dict(timer.total)),  # rank 0's
               "memory": distributed.broadcast(timer.memory_summary()),
               "supernet_params_M": utils.count_parameters_in_M(search.model), "run_dir": str(run_dir),
               "recipe": recipe_values(args), "data_split": run.data_split, **search.divergence.results(),
               "audit": audit.summary(read_jsonl(run_dir / rundir.AUDIT)) if run.world.is_main else None}
    if space.has_benchmark:  # the cell, and its benchmark accuracies with --nb201_file
        results.update(nasbench201.summary(run.rows, args.nb201_file) if args.nb201_file
                       else {"arch_str": genotype, "benchmark": None})
    if run.world.is_main:
        space.save(genotype, run_dir / rundir.FINAL_ARCH)
        utils.write_json(run_dir / rundir.RESULTS, results)  # the results first: a drawing may fail
        draw_or_warn(space.format, genotype, run_dir / rundir.DRAWING, log.warning, str(run_dir / rundir.FINAL_ARCH))
        if args.summary:
            with timer("files"):
                write_summary(run_dir)
        if space.has_benchmark and not args.nb201_file:
            log.info(nasbench201.HOW_TO.format(run_dir=run_dir))
    log.info("search done in %.1f s; genotype in %s", results["search_cost_seconds"], run_dir / rundir.FINAL_ARCH)
    return results


def variant_name(args) -> str:
    """The paper's name of the configuration: FP-DARTS-s1, -s2, -s1r, another criterion's label
    (+ larger space; + saliency from the architecture steps)."""
    name = CRITERIA[args.sal_type].variant(args.sal_second) + ("r" if args.num_compare > 1 else "")
    name = f"FP-DARTS-{name}" + ("-larger" if args.no_restrict else "")
    return name + ("+arch_steps" if args.sal_source == "arch_steps" else "")
