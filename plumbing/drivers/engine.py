"""What the training scripts share (their flags are train_args.py's): one epoch, the epoch loop
with drop-path ramp, evaluation, checkpoints, results.json, and `--mode eval`."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

import utils
from architectures import GENOTYPE_FORMAT, ArchFormat
from data import holdout_split, make_loader, transforms
from plumbing import board, checkpoints, distributed, oom, rundir, stops, timing
from plumbing.divergence import Divergence
from plumbing.drivers import costs, plan, train_args
from visualize import draw_or_warn

log = utils.logger


def train_one_epoch(model: nn.Module, loader, optimizer, criterion, device: torch.device, *,
                    grad_clip: float, aux_weight: float = 0.0, amp: bool = False,
                    channels_last: bool = False, report_freq: int = 50,
                    rest: Callable[[float], float] | None = None, watch: Divergence | None = None,
                    epoch: int = 0) -> dict:
    """One pass over `loader`; the auxiliary logits (if any) add `aux_weight` times their loss.
    The progress lines give images/s and the epoch's ETA; with `rest` (seconds of the run after
    this epoch, given this epoch's projected seconds) the run's ETA too. A step whose loss or
    gradient is non-finite stops the run (`watch`: --nan_policy says stop, or skip the step)."""
    watch = watch or Divergence(run="the training")
    model.train()
    rate = timing.Rate()
    loss_m, top1_m, top5_m = utils.AverageMeter(), utils.AverageMeter(), utils.AverageMeter()
    autocast = utils.autocast(device, amp)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for step, (x, y) in enumerate(loader):
        x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
        y = y.to(device, non_blocking=True)
        saved = watch.snapshot(model)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits, logits_aux = model(x)
            loss = criterion(logits, y)
            if logits_aux is not None and aux_weight > 0:
                loss = loss + aux_weight * criterion(logits_aux, y)
        watch.early("the training loss", loss, f"epoch {epoch}, step {step}, training step")
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if not watch.ok("the gradient", norm, f"epoch {epoch}, step {step}", "training step", model, saved):
            optimizer.zero_grad(set_to_none=True)
            continue
        optimizer.step()
        # The step's one host read: loss, top-1, top-5 and the deferred non-finite checks.
        loss_v, acc1, acc5 = watch.settle(loss, *utils.hits(logits.detach().float(), y, (1, 5)))
        loss_m.update(loss_v, y.size(0))
        top1_m.update(acc1 * 100.0, y.size(0))
        top5_m.update(acc5 * 100.0, y.size(0))
        rate.update(y.size(0) * distributed.launched_processes())
        if step % report_freq == 0:
            epoch_left = rate.step_seconds(step + 1) * (len(loader) - step - 1)
            run_left = None if rest is None else epoch_left + rest(rate.step_seconds(step + 1) * len(loader))
            eta = "" if run_left is None else f", run ETA {timing.duration(run_left)}"
            log.info("train %03d %e %f %f  %.1f img/s, epoch ETA %s%s", step, loss_m.avg, top1_m.avg, top5_m.avg,
                     rate.images_per_second(), timing.duration(epoch_left), eta)
    return utils.pooled_averages({"loss": loss_m, "top1": top1_m, "top5": top5_m}, device)


def fit(model: nn.Module, optimizer, criterion, eval_criterion, world: distributed.World, *,
        run_dir: Path, loaders: dict, epochs: int, lr_at: Callable[[int], float],
        drop_path_prob: float, grad_clip: float, aux_weight: float, amp: bool,
        channels_last: bool, report_freq: int, extra_state: dict, timer: timing.PhaseTimer,
        watch: Divergence, start_epoch: int = 0, history: list[dict] | None = None,
        elapsed: float = 0.0) -> list[dict]:
    """The epoch loop: lr from `lr_at(epoch)`, drop-path ramped linearly over the epochs, train,
    evaluate on `loaders["valid"]` (if any) and `loaders["test"]`, log, checkpoint; the seconds
    of each phase (train, eval, files) go to `timer`, the log and TensorBoard.

    `model` may be wrapped in DDP; the network inside is what gets evaluated and saved. Returns
    the per-epoch rows (lr, train/valid/test loss, top-1, top-5). A resumed run passes
    `start_epoch`, the rows so far, the seconds already spent and its restored `timer`.
    """
    net, device = distributed.unwrap(model), world.device
    writer = board.writer(run_dir, world.is_main)
    history = list(history or [])
    clock = time.time() - elapsed
    for epoch in range(start_epoch, epochs):
        lr = lr_at(epoch)
        utils.set_lr(optimizer, lr)
        net.drop_path_prob = drop_path_prob * epoch / epochs
        log.info("epoch %d lr %e drop_path_prob %f", epoch, lr, net.drop_path_prob)
        loaders["train"].sampler.set_epoch(epoch)  # the epoch's shuffle, the same on every process
        evaluation, left = timer.total.get("eval", 0.0) / max(len(history), 1), epochs - epoch - 1
        # the seconds of the run after this training pass, from the pass's own (the loop's values bound)
        rest = lambda seconds, evaluation=evaluation, left=left: evaluation + left * (seconds + evaluation)
        with timer("train"):
            train = train_one_epoch(model, loaders["train"], optimizer, criterion, device,
                                    grad_clip=grad_clip, aux_weight=aux_weight, amp=amp,
                                    channels_last=channels_last, report_freq=report_freq, rest=rest,
                                    watch=watch, epoch=epoch)
        row = {"epoch": epoch, "lr": lr, **{f"train_{k}": v for k, v in train.items()}}
        with timer("eval"):
            distributed.sync_buffers(net)  # BN statistics: rank 0's, as DDP uses them
            for split in ("valid", "test"):
                if loaders.get(split) is not None:
                    metrics = utils.evaluate(net, loaders[split], eval_criterion, device)
                    row.update({f"{split}_{k}": v for k, v in metrics.items()})
        seconds = timer.lap()  # the epoch's (its checkpoint counts in the next epoch's files)
        log.info("epoch %d %s", epoch, {k: round(v, 4) for k, v in row.items() if k != "epoch"})
        log.info("epoch %d time: %s", epoch, timing.summary(seconds))
        peaks = timer.memory_lap()
        log.info("epoch %d memory (%s): %s", epoch, timer.memory.kind, timing.memory_text(peaks))
        scalars = {**{k.replace("_", "/", 1): v for k, v in row.items() if k != "epoch"},
                   **{f"time/{k}": v for k, v in seconds.items()}, **{f"memory/{k}": v for k, v in peaks.items()}}
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, epoch)
        history.append(row)
        # Everything an exact resume needs: weights, optimizer, every process's random states
        # (augmentations, drop-path) and how far the log had got; the data order is a function
        # of the seed and the epoch.
        with timer("files"):
            rng = utils.rng_states(device)
            if world.is_main:
                checkpoints.save(run_dir / rundir.CHECKPOINT, previous=run_dir / rundir.PREVIOUS, state={
                    "epoch": epoch, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "history": history, "rng": rng, "elapsed": time.time() - clock,
                    "world_size": world.world_size, "log_bytes": (run_dir / rundir.LOG).stat().st_size,
                    "timer": timer.state_dict(), "divergence": watch.state_dict(), **extra_state})
    writer.close()
    return history


def summarise(history: list[dict]) -> dict:
    """The figures a paper table needs from `fit`'s per-epoch rows: the final epoch's test
    accuracy (the DARTS convention), and the best epoch chosen on the validation split, if any
    (never on the test set). Without a test set (`--no_test`), the validation figures only."""
    final = history[-1]
    summary = {"epochs": len(history)}
    if "test_top1" in final:
        summary.update(final_test_top1=final["test_top1"], final_test_top5=final["test_top5"])
    if "valid_top1" in final:
        best = max(history, key=lambda r: r["valid_top1"])
        summary.update(final_valid_top1=final["valid_top1"], final_valid_loss=final["valid_loss"],
                       best_valid_epoch=best["epoch"], best_valid_top1=best["valid_top1"])
        if "test_top1" in best:
            summary.update(test_top1_at_best_valid_epoch=best["test_top1"])
    else:
        summary.update(best_test_top1_seen=max(r["test_top1"] for r in history),
                       note="best_test_top1_seen is reported only; nothing is chosen on the test set")
    return summary


def evaluate_checkpoint(args, network_cls, test_set, num_classes: int, world: distributed.World,
                        fmt: ArchFormat = GENOTYPE_FORMAT) -> dict:
    """--mode eval: rebuild the network from the checkpoint's genotype, report test accuracy
    (each process evaluates its share of the test set under torchrun)."""
    utils.setup_logging(None, world.is_main)
    state = checkpoints.load(args.model_path)
    if not {"genotype", "model", "args"} <= set(state):
        raise utils.UserError(f"{args.model_path}: not a checkpoint of train.py / train_imagenet.py")
    genotype = fmt.from_dict(state["genotype"], args.model_path)
    a = state["args"]
    model = network_cls(a["init_channels"], num_classes, a["layers"], a["auxiliary"], genotype)
    model.load_state_dict(state["model"])
    loader = make_loader(test_set, utils.per_process_batch(args.batch_size, world.world_size),
                         workers=args.workers, rank=world.rank, world_size=world.world_size)
    metrics = utils.evaluate(model.to(world.device), loader, nn.CrossEntropyLoss(), world.device)
    log.info("test top1 %.4f top5 %.4f loss %.4f (%s)", metrics["top1"], metrics["top5"],
             metrics["loss"], args.model_path)
    return {"test_top1": metrics["top1"], "test_top5": metrics["top5"], "test_loss": metrics["loss"]}


def resume_source(resume: tuple[Path, dict], fmt: ArchFormat) -> list[tuple[str, object]]:
    """The [(label, genotype)] of a run being resumed, read from its checkpoint."""
    path, state = resume
    if not {"genotype", "genotype_source", "args", "log_bytes"} <= set(state):
        raise utils.UserError(f"{path}: not a resumable checkpoint of train.py / train_imagenet.py / train_nb201.py")
    return [(state["genotype_source"], fmt.from_dict(state["genotype"], str(path)))]


def open_run(args, label: str, genotype, world: distributed.World, run_root: str, kind: str,
             resume: tuple[Path, dict] | None, fmt: ArchFormat) -> Path:
    """The evaluation run directory (new, or the one being resumed), with its log, args.json and
    drawing of the cells; only rank 0 writes."""
    if resume:
        run_dir, state = resume
        rundir.check_resumable(run_dir / rundir.CHECKPOINT, state["args"], args)
        args.seed = state["args"]["seed"]
        if world.is_main:
            rundir.lock(run_dir)  # before touching its files: a second process on it is refused
            utils.truncate_to(run_dir / rundir.LOG, state["log_bytes"])  # drop the lost epoch's lines
    else:
        suffix = fmt.short_name(label)  # g<epoch>, g<genotype name>, g<architecture in short>
        run_dir = utils.shared_run_dir(
            world, lambda: rundir.make(run_root, kind, args.save, f"g{suffix}"))
        if world.is_main:
            rundir.lock(run_dir)
    utils.setup_logging(run_dir, world.is_main)
    log.info("genotype %s from %s on %s x %d; args = %s", genotype, label, world.device, world.world_size, vars(args))
    if world.is_main and not resume:
        utils.write_json(run_dir / rundir.ARGS, vars(args))
        draw_or_warn(fmt, genotype, run_dir / rundir.DRAWING, log.warning, label)
    return run_dir


@dataclass
class Network:
    """A training run's network on its device: DDP-wrapped (`ddp`), its SGD, its memory format and
    size (parameters and mult-adds of one image, in millions)."""
    model: nn.Module
    ddp: nn.Module
    optimizer: torch.optim.Optimizer
    memory_format: torch.memory_format
    params_M: float
    multadds_M: float


def build_network(args, network_cls, genotype, num_classes: int, world: distributed.World, image_size: int,
                  state: dict | None = None) -> Network:
    """The network of `genotype` as the training scripts train it (the weights of `state`, a
    checkpoint being resumed); `--plan` builds the same."""
    model = network_cls(args.init_channels, num_classes, args.layers, args.auxiliary, genotype)
    params, madds = utils.count_parameters_in_M(model), utils.count_multadds_in_M(model, image_size)
    log.info("param size = %.3fM, mult-adds = %.1fM", params, madds)
    if args.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if state:
        model.load_state_dict(state["model"])
    memory_format = utils.memory_format(args.channels_last, world.device)
    model = model.to(world.device, memory_format=memory_format)
    aux_weight = args.auxiliary_weight if args.auxiliary else 0.0
    ddp = distributed.wrap(model, world, find_unused_parameters=args.auxiliary and aux_weight == 0)
    optimizer = torch.optim.SGD(model.parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay, nesterov=args.nesterov)
    return Network(model, ddp, optimizer, memory_format, params, madds)


def train_genotype(args, label: str, genotype, network_cls, datasets: tuple, *, image_size: int,
                   criterion, lr_at: Callable[[int], float], world: distributed.World, run_root: str,
                   kind: str, resume: tuple[Path, dict] | None = None, fmt: ArchFormat = GENOTYPE_FORMAT) -> dict:
    """Train `genotype` from scratch in its own run directory `<run_root>/<kind>-<save>-<time>-g<name>`
    (or continue the run `resume` = (run directory, checkpoint)); write and return results.json."""
    start, device = time.time(), world.device
    train_set, test_set, num_classes = datasets
    run_dir = open_run(args, label, genotype, world, run_root, kind, resume, fmt)
    utils.set_seed(args.seed + world.rank)  # augmentations differ by process; DDP syncs the weights
    net = build_network(args, network_cls, genotype, num_classes, world, image_size, resume[1] if resume else None)
    ddp, optimizer, memory_format = net.ddp, net.optimizer, net.memory_format
    params, madds = net.params_M, net.multadds_M
    aux_weight = args.auxiliary_weight if args.auxiliary else 0.0
    batch_size = utils.per_process_batch(args.batch_size, world.world_size)
    dataset = getattr(args, "dataset", "imagenet")  # train_imagenet.py has no --dataset
    _, eval_transform = transforms(dataset, image_size=args.image_size)
    train_part, valid_part = holdout_split(train_set, args.val_portion, eval_transform)
    loader = lambda ds, shuffle: None if ds is None else make_loader(
        ds, batch_size, shuffle=shuffle, seed=args.seed, workers=args.workers,
        pin_memory=device.type == "cuda", rank=world.rank, world_size=world.world_size)
    loaders = {"train": loader(train_part, True), "valid": loader(valid_part, False),
               "test": loader(test_set, False)}
    extra = {"genotype": fmt.to_dict(genotype), "genotype_source": label, "args": vars(args)}
    done, timer = {}, timing.PhaseTimer(device)
    watch = Divergence(args.nan_policy, args.nan_patience, "the training")
    if resume:
        state = resume[1]
        optimizer.load_state_dict(state["optimizer"])
        utils.restore_rng(state["rng"], world, args.seed)
        done = {"start_epoch": state["epoch"] + 1, "history": state["history"], "elapsed": state["elapsed"]}
        timer.load_state_dict(state["timer"])
        watch.load_state_dict(state["divergence"])
        log.info("resuming %s after epoch %d", run_dir, state["epoch"])
    timer.total["setup"] = timer.total.get("setup", 0.0) + time.time() - start  # run directory, network, data
    advice = {None: oom.lower("batch_size", args.batch_size, "training")}  # (what to change when out of memory)
    with stops.Guard(device, timer, run_dir / rundir.CHECKPOINT, advice):
        history = fit(ddp, optimizer, criterion, nn.CrossEntropyLoss(), world, run_dir=run_dir,
                      loaders=loaders, epochs=args.epochs, lr_at=lr_at, drop_path_prob=args.drop_path_prob,
                      grad_clip=args.grad_clip, aux_weight=aux_weight, amp=args.amp,
                      channels_last=memory_format == torch.channels_last, report_freq=args.report_freq,
                      extra_state=extra, timer=timer, watch=watch, **done)
    results = {**summarise(history), "params_M": params, "multadds_M": madds,
               "dataset": dataset, "genotype_source": label,
               "genotype": fmt.to_dict(genotype), "seed": args.seed, **watch.results(),
               "wall_time_seconds": time.time() - start + done.get("elapsed", 0.0),
               "time_seconds": distributed.broadcast(dict(timer.total)),  # rank 0's, as in results.json
               "memory": distributed.broadcast(timer.memory_summary()),
               "device": str(device),
               "world_size": world.world_size, "checkpoint": str(run_dir / rundir.CHECKPOINT),
               "run_dir": str(run_dir)}
    if world.is_main:
        utils.write_json(run_dir / rundir.RESULTS, results)
    log.info("final %s; results in %s", {k: round(v, 4) for k, v in results.items()
                                         if k.startswith(("final_", "best_valid_top1"))}, run_dir / rundir.RESULTS)
    return results


def plan_run(args, network_cls, dataset: str, *, criterion, base: str | None, names: list, kind: str,
             aux_side: int | None = None, sources: Callable[[], list] | None = None) -> dict:
    """`--plan` of a training script: the plan of every architecture the run would train (from the
    same flags as `run`); `aux_side` is the image side the auxiliary head needs."""
    args.plan_file = plan.plan_file(args, args.out_dir or base or "ckpt", kind)
    found = sources() if sources is not None else train_args.genotype_sources(
        base, names, args.arch, args.genotype, args.no_restrict)
    shape, data = costs.data_shape(dataset, args.data, args.image_size)
    if aux_side:
        train_args.check_auxiliary(args, shape.side, aux_side)
    build = lambda genotype, classes, world: build_network(args, network_cls, genotype, classes, world, shape.side)
    return plan.plan_training(args, found, build, train_one_epoch, shape=shape, data=data, criterion=criterion)


def run(args, network_cls, datasets: tuple, *, base: str | None, names: list, image_size: int,
        criterion, lr_at: Callable[[int], float], kind: str, fmt: ArchFormat = GENOTYPE_FORMAT,
        sources: Callable[[], list] | None = None) -> list[dict]:
    """The body of the training scripts: `--mode eval`, or train every requested architecture
    from `base` (a search run directory) + epoch `names`, `--arch` or `--genotype` (`sources()`
    gives [(label, architecture)] instead where the script has other flags), or `--resume`;
    `fmt` says how the architectures are stored. Under torchrun, on every process."""
    world = distributed.init(args.gpu, args.dist_timeout)
    utils.on_device(args, world.device)
    args.seed = utils.resolve_seed(args.seed)
    if args.mode == "eval":
        return [evaluate_checkpoint(args, network_cls, datasets[1], datasets[2], world, fmt)]
    resume = checkpoints.resume(args.resume) if args.resume else None
    if resume:
        found = resume_source(resume, fmt)
    elif sources is not None:
        found = sources()
    else:
        found = train_args.genotype_sources(base, names, args.arch, args.genotype, args.no_restrict)
    return [train_genotype(args, label, genotype, network_cls, datasets, image_size=image_size,
                           criterion=criterion, lr_at=lr_at, world=world,
                           run_root=args.out_dir or base or "ckpt", kind=kind, resume=resume, fmt=fmt)
            for label, genotype in found]
