"""FP-DARTS search: first-order DARTS on a supernet whose weakest ops are pruned by search-loss
gradient saliency, twice per epoch after a warm-up, until the final cell remains."""
from __future__ import annotations

import argparse
import json
import math
import time
from itertools import islice
from types import SimpleNamespace

import torch
import torch.nn as nn

import utils
from architect import REG_TYPES, Architect
from data import DATASETS, get_datasets, make_loader, split_indices
from genotypes import save_genotype
from model_search import Network, edge_endpoints
from saliency import SAL_TYPES, Pruner
from visualize import GraphvizMissing, plot_genotype

log = utils.logger


def build_parser() -> argparse.ArgumentParser:
    """Flags of the search (the authors' names and defaults)."""
    p = utils.ArgumentParser(description=__doc__)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="../data", help="folder holding (or receiving) the data set")
    g.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set to search on")
    g.add_argument("--batch_size", type=int, default=64, help="batch size of both the weight and the architecture steps")
    g.add_argument("--train_portion", type=float, default=0.5, help="share of the training set used for the weights; the rest trains alpha and scores saliency")
    g.add_argument("--cutout", action="store_true", help="apply cutout to the search batches")
    g.add_argument("--cutout_length", type=int, default=16, help="cutout square side in pixels")
    g.add_argument("--image_size", type=int, default=32, help="side images are resized to (--dataset folder only)")
    g.add_argument("--subset", type=int, default=None, help="test/debug: use only the first N training images")
    g.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=60, help="search epochs")
    g.add_argument("--learning_rate", type=float, default=0.025, help="initial weight learning rate (cosine schedule)")
    g.add_argument("--learning_rate_min", type=float, default=0.001, help="final weight learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum of the weights")
    g.add_argument("--weight_decay", type=float, default=3e-4, help="weight decay of the weights")
    g.add_argument("--grad_clip", type=float, default=5, help="gradient-norm clip of the weight step")
    g.add_argument("--arch_learning_rate", type=float, default=3e-4, help="Adam learning rate of alpha")
    g.add_argument("--arch_weight_decay", type=float, default=1e-3, help="Adam weight decay of alpha")
    g.add_argument("--unrolled", action="store_true", help="second-order (unrolled) architecture step of DARTS")
    g = p.add_argument_group("supernet")
    g.add_argument("--init_channels", type=int, default=16, help="channels of the first cell")
    g.add_argument("--layers", type=int, default=8, help="cells in the supernet")
    g.add_argument("--steps", type=int, default=4, help="intermediate nodes per cell (the DARTS cell has 4: 14 edges)")
    g.add_argument("--drop_path_prob", type=float, default=0.3, help="accepted for compatibility; the search uses no drop-path (as the authors')")
    g = p.add_argument_group("pruning")
    g.add_argument("--sal_type", default="task", choices=SAL_TYPES, help="task: search-loss gradient saliency; vanilla: beta magnitude; sgas_1: op-level SGAS criterion 1")
    g.add_argument("--sal_second", action="store_true", help="s2: add the Hessian-diagonal term (second order of the Taylor expansion)")
    g.add_argument("--sal_hessian_coef", type=float, default=1.0, help="coefficient of the Hessian term (1 as in the authors' code; 0.5 is the textbook Taylor value)")
    g.add_argument("--sal_batch_size", type=int, default=None, help="batch size of the saliency passes (default: --batch_size, or 32 with --sal_second)")
    g.add_argument("--sal_second_budget", type=int, default=500, help="s2 uses about this many Hessian rows per event: ceil(budget / live ops) batches")
    g.add_argument("--hessian_chunk", type=int, default=16, help="Hessian diagonal entries computed at once (memory grows with it)")
    g.add_argument("--warmup", type=int, default=10, help="epochs without pruning")
    g.add_argument("--prune_interval", type=int, default=None, help="test/debug: prune every N weight steps (default: half an epoch, i.e. twice per epoch)")
    g.add_argument("--num_compare", type=int, default=1, help="N > 1: re-check the N lowest-saliency ops by removing each and measuring the validation loss (s1r uses 5)")
    g.add_argument("--iter_compare", type=int, default=30, help="each candidate is measured on iter_compare + 1 validation batches")
    g.add_argument("--fixed_compare_batches", action="store_true", help="score every candidate of an event on the same validation batches (the authors draw fresh ones)")
    g.add_argument("--reg_type", default="norm", choices=REG_TYPES, help="regulariser on the mixing weight of pruned ops")
    g.add_argument("--reg_alpha", type=float, default=0.1, help="weight of the pruned-op regulariser")
    g.add_argument("--no_restrict", action="store_true", help="larger search space: no 2-inputs-per-node rule; keep --num_kept_min ops per cell anywhere")
    g.add_argument("--num_kept_max", type=int, default=8, help="--no_restrict: ops in the derived genotype")
    g.add_argument("--num_kept_min", type=int, default=8, help="--no_restrict: pruning stops at this many live ops per cell")
    g = p.add_argument_group("run")
    g.add_argument("--save", default="EXP", help="experiment name, part of the run directory name")
    g.add_argument("--task", type=int, default=0, help="tag appended to the run directory name")
    g.add_argument("--out_dir", default="ckpt", help="folder that receives the run directory")
    g.add_argument("--seed", type=int, default=-1, help="random seed; -1 draws one in [0, 10000) and logs it")
    g.add_argument("--gpu", type=int, default=0, help="CUDA device index (the CPU is used when CUDA is absent)")
    g.add_argument("--report_freq", type=int, default=50, help="log every N steps")
    g.add_argument("--save_one_shot", action="store_true", help="also keep the supernet of every epoch")
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-identical CPU runs; slower on GPUs)")
    g.add_argument("--resume", default=None, help="continue an interrupted search in place: its run directory or checkpoint.pt (give the same flags)")
    g.add_argument("--channels_last", dest="channels_last", action="store_const", const="on", default="auto", help="channels_last memory format (default: on for the CPU, where bench/bench_search.py measured a 1.8-4.2x faster search step; off on CUDA)")
    g.add_argument("--no_channels_last", dest="channels_last", action="store_const", const="off", default=argparse.SUPPRESS, help="contiguous (NCHW) memory format")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject impossible values with one line."""
    positive = ["batch_size", "epochs", "num_compare", "init_channels", "layers", "steps", "sal_second_budget",
                "hessian_chunk", "iter_compare", "num_kept_max", "num_kept_min"]
    positive += [k for k in ("sal_batch_size", "prune_interval", "subset") if getattr(args, k) is not None]
    for name in positive:
        if getattr(args, name) < (0 if name == "iter_compare" else 1):
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    if not 0 < args.train_portion < 1:
        p.error(f"--train_portion must be in (0, 1), got {args.train_portion}")
    if not 0 <= args.warmup < args.epochs:
        p.error(f"--warmup ({args.warmup}) must be at least 0 and below --epochs ({args.epochs})")


def write_epoch_files(run_dir, epoch: int, model: Network, genotype, rows: list[dict]) -> None:
    """Per-epoch genotype and mixing weights in the authors' layout, plus results.csv so far."""
    root = run_dir / "results_of_7q"
    save_genotype(genotype, root / "genotype" / f"{epoch}.txt")
    betas = model.betas().detach().cpu().tolist()
    utils.write_json(root / "alpha" / f"{epoch}.txt", {"alphas_normal": betas[0], "alphas_reduce": betas[1]})
    csv = "epoch,val_loss,val_acc\n" + "".join(f"{r['epoch']},{r['val_loss']:.6f},{r['val_acc']:.4f}\n" for r in rows)
    utils.atomic_write(root / "results.csv", csv)


def prune_event(pruner: Pruner, args, epoch: int, step: int, sal_queue, valid_iter, run_dir) -> None:
    """Score all ops, prune one per cell, record the event (the heart of FP-DARTS)."""
    batches = sal_queue
    if args.sal_second:  # about `budget` Hessian rows per event
        batches = islice(sal_queue, math.ceil(args.sal_second_budget / sum(pruner.live_ops())))
    saliency = pruner.saliency(batches)
    fixed = list(islice(valid_iter, args.iter_compare + 1)) if args.fixed_compare_batches else None
    next_batches = (lambda: fixed) if fixed else (lambda: list(islice(valid_iter, args.iter_compare + 1)))
    decisions = pruner.decide(saliency, next_batches)
    pruner.apply(decisions)
    sal = saliency.cpu().tolist()
    utils.write_json(run_dir / "results_of_7q" / "sal" / f"{epoch}.txt", {"normal": sal[0], "reduce": sal[1]})
    endpoints = edge_endpoints(pruner.steps)
    with open(run_dir / "prune_events.jsonl", "a") as f:
        for d in decisions:
            src, dst = endpoints[d["edge"]]
            f.write(json.dumps({"epoch": epoch, "step": step, **d, "src": src, "dst": dst,
                                "live_ops": pruner.live_ops()}) + "\n")
            log.info("prune %s edge %d (%d->%d) %s  S=%.3g%s", d["cell"], d["edge"], src, dst,
                     d["op"], d["saliency"], "" if d["loss"] is None else f"  loss={d['loss']:.4f}")


def prune_due(epoch: int, step: int, *, warmup: int, interval: int) -> bool:
    """The authors' schedule: after `warmup` epochs, at every `interval`-th step of an epoch
    (interval = half an epoch by default: two events per epoch)."""
    return epoch >= warmup and (step + 1) % interval == 0


def save_state(run: SimpleNamespace, epoch: int, step: int | None, meters: list, rows: list) -> None:
    """Checkpoint everything an exact resume needs, atomically; `step` None = epoch complete.

    Besides weights, alphas, masks and optimizers: the data-order generators (the train
    loader's as of the start of the epoch, the validation stream's position, the saliency
    loader's), the global random states, and how far the log and the prune history had got.
    """
    events = run.dir / "prune_events.jsonl"
    utils.save_checkpoint(run.dir / "checkpoint.pt", {
        "epoch": epoch, "step": step, "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(), "arch_optimizer": run.architect.optimizer.state_dict(),
        "train_rng": run.epoch_rng if step is not None else run.train_queue.generator.get_state(),
        "valid_stream": run.valid_iter.state_dict(), "sal_rng": run.sal_queue.generator.get_state(),
        "rng": utils.rng_state(), "meters": [(m.sum, m.count) for m in meters], "rows": rows,
        "log_bytes": (run.dir / "log.txt").stat().st_size, "elapsed": time.time() - run.clock,
        "events_bytes": events.stat().st_size if events.exists() else 0, "args": vars(run.args)})


def search_one_epoch(run: SimpleNamespace, epoch: int, first_step: int, meters: list, rows: list) -> dict:
    """Alternate architecture and weight steps over the weight split; prune when due (and
    checkpoint right after each prune). `first_step` > 0 continues an interrupted epoch."""
    args, model, optimizer, device = run.args, run.model, run.optimizer, run.device
    interval = args.prune_interval or max(len(run.train_queue) // 2, 1)
    lr = optimizer.param_groups[0]["lr"]
    loss_m, top1_m = meters
    criterion = nn.CrossEntropyLoss()
    for step, (x, y) in enumerate(run.batches, start=first_step):
        model.train()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x_val, y_val = (t.to(device, non_blocking=True) for t in next(run.valid_iter))
        run.architect.step(x_val, y_val, x, y, lr, optimizer)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = criterion(logits, y)
        if not torch.isfinite(loss):
            raise utils.UserError(f"the search loss became {loss.item()} in epoch {epoch}, step {step}; "
                                  "the last checkpoint, if any, is kept")
        loss.backward()
        nn.utils.clip_grad_norm_(model.weight_parameters(), args.grad_clip)
        optimizer.step()
        loss_m.update(loss.item(), y.size(0))
        top1_m.update(utils.accuracy(logits, y)[0], y.size(0))
        if step % args.report_freq == 0:
            log.info("train %03d %e %f", step, loss_m.avg, top1_m.avg)
        if prune_due(epoch, step, warmup=args.warmup, interval=interval) and not run.pruner.finished():
            prune_event(run.pruner, args, epoch, step, run.sal_queue, run.valid_iter, run.dir)
            save_state(run, epoch, step, meters, rows)
    return {"loss": loss_m.avg, "top1": top1_m.avg}


def start_epoch(run: SimpleNamespace, skip: int = 0) -> None:
    """Begin the epoch's pass over the weight split (skipping `skip` batches already trained)."""
    run.epoch_rng = run.train_queue.generator.get_state()
    run.batches = iter(run.train_queue)
    for _ in range(skip):
        next(run.batches)


def resume(run: SimpleNamespace, state: dict) -> tuple[int, int, list, list]:
    """Restore a checkpoint into `run`; return (epoch, first step, meters, rows) to go on from."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.architect.optimizer.load_state_dict(state["arch_optimizer"])
    run.clock -= state["elapsed"]
    utils.truncate_to(run.dir / "prune_events.jsonl", state["events_bytes"])
    run.train_queue.generator.set_state(state["train_rng"])
    run.valid_iter.load_state_dict(state["valid_stream"])
    run.sal_queue.generator.set_state(state["sal_rng"])
    meters = [utils.AverageMeter(), utils.AverageMeter()]
    epoch, step = state["epoch"], state["step"]
    if step is None:
        epoch, first = epoch + 1, 0
    else:
        first = step + 1
        for meter, (total, count) in zip(meters, state["meters"]):
            meter.sum, meter.count = total, count
    if first:
        start_epoch(run, skip=first)
    utils.set_rng_state(state["rng"])  # last: skipping batches drew augmentation randomness
    log.info("resuming %s at epoch %d, step %d", run.dir, epoch, first)
    return epoch, first, meters, state["rows"]


def main(argv: list[str] | None = None) -> dict:
    """Run a search; return the final figures (also written to results.json)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    start = time.time()
    device = utils.get_device(args.gpu)
    args.seed = utils.resolve_seed(args.seed)
    utils.set_seed(args.seed)
    utils.set_determinism(args.deterministic)
    train_set, _, num_classes = get_datasets(args.dataset, args.data, cutout=args.cutout,
                                             cutout_length=args.cutout_length, image_size=args.image_size)
    if args.resume:
        run_dir, state = utils.resume_checkpoint(args.resume)
        check_resumable(run_dir, state, args)
        args.seed = state["args"]["seed"]
        utils.truncate_to(run_dir / "log.txt", state["log_bytes"])
    else:
        run_dir = utils.make_run_dir(args.out_dir, "search", args.save, f"task{args.task}")
    utils.setup_logging(run_dir)
    if not args.resume:
        utils.write_json(run_dir / "args.json", vars(args))
    log.info("seed %d, device %s, args = %s", args.seed, device, vars(args))
    writer = utils.tensorboard_writer(run_dir)

    n = min(len(train_set), args.subset or len(train_set))
    w_idx, a_idx = split_indices(n, args.train_portion)
    sal_bs = args.sal_batch_size or (32 if args.sal_second else args.batch_size)
    loader = lambda idx, bs, k: make_loader(train_set, bs, indices=idx, shuffle=True, seed=args.seed + k,
                                            workers=args.workers)
    valid_queue = loader(a_idx, args.batch_size, 1)
    # End-of-epoch validation gets its own unshuffled loader, so it never moves the validation
    # stream's generator (which an exact resume replays).
    valid_eval = make_loader(train_set, args.batch_size, indices=a_idx, workers=args.workers)
    channels_last = args.channels_last == "on" or (args.channels_last == "auto" and device.type == "cpu")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = Network(args.init_channels, num_classes, args.layers, steps=args.steps).to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.weight_parameters(), args.learning_rate,
                                momentum=args.momentum, weight_decay=args.weight_decay)
    architect = Architect(model, lr=args.arch_learning_rate, weight_decay=args.arch_weight_decay,
                          reg_type=args.reg_type, reg_alpha=args.reg_alpha, unrolled=args.unrolled,
                          network_momentum=args.momentum, network_weight_decay=args.weight_decay)
    restrict = not args.no_restrict
    pruner = Pruner(model, device=device, sal_type=args.sal_type, second=args.sal_second,
                    hessian_coef=args.sal_hessian_coef, hessian_chunk=args.hessian_chunk,
                    num_compare=args.num_compare, restrict=restrict, num_kept_min=args.num_kept_min)
    run = SimpleNamespace(args=args, dir=run_dir, device=device, model=model, optimizer=optimizer,
                          architect=architect, pruner=pruner, train_queue=loader(w_idx, args.batch_size, 0),
                          valid_iter=utils.Stream(valid_queue), sal_queue=loader(a_idx, sal_bs, 2), clock=start)
    log.info("supernet: %.3fM parameters", utils.count_parameters_in_M(model))

    first_epoch, first_step, meters, rows = 0, 0, None, []
    if args.resume:
        first_epoch, first_step, meters, rows = resume(run, state)
        if first_epoch >= args.epochs:
            raise utils.UserError(f"{run_dir}: this search already finished its {args.epochs} epochs")
    criterion = nn.CrossEntropyLoss()
    for epoch in range(first_epoch, args.epochs):
        lr = utils.cosine_lr(epoch, args.epochs, args.learning_rate, args.learning_rate_min)
        utils.set_lr(optimizer, lr)
        if epoch != first_epoch or first_step == 0:  # a fresh epoch (not the rest of one)
            log.info("epoch %d lr %e", epoch, lr)
            start_epoch(run)
            meters = [utils.AverageMeter(), utils.AverageMeter()]
        train = search_one_epoch(run, epoch, first_step if epoch == first_epoch else 0, meters, rows)
        valid = utils.evaluate(model, valid_eval, criterion, device)
        genotype = model.genotype(restrict, args.num_kept_max)
        log.info("train_acc %f valid_acc %f live ops %s", train["top1"], valid["top1"], pruner.live_ops())
        log.info("genotype = %s", genotype)
        rows.append({"epoch": epoch, "val_loss": valid["loss"], "val_acc": valid["top1"]})
        write_epoch_files(run_dir, epoch, model, genotype, rows)
        scalars = {"train/loss": train["loss"], "train/top1": train["top1"], "valid/loss": valid["loss"],
                   "valid/top1": valid["top1"], "lr": lr, "live_ops/normal": pruner.live_ops()[0],
                   "live_ops/reduce": pruner.live_ops()[1]}
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, epoch)
        save_state(run, epoch, None, meters, rows)
        if args.save_one_shot:
            utils.save_checkpoint(run_dir / "one_shot" / f"weights_{epoch}.pt", {"model": model.state_dict()})
    writer.close()

    save_genotype(genotype, run_dir / "genotype.json")
    try:
        plot_genotype(genotype, run_dir / "genotype")
    except GraphvizMissing as e:
        log.warning("no drawing of the cells: %s", e)
    results = {"variant": variant_name(args), "genotype": genotype._asdict(), "seed": args.seed,
               "final_valid_top1": valid["top1"], "final_valid_loss": valid["loss"],
               "pruning_finished": pruner.finished(), "live_ops": pruner.live_ops(),
               "search_cost_seconds": time.time() - run.clock, "device": str(device),
               "supernet_params_M": utils.count_parameters_in_M(model), "run_dir": str(run_dir)}
    utils.write_json(run_dir / "results.json", results)
    log.info("search done in %.1f s; genotype in %s", results["search_cost_seconds"], run_dir / "genotype.json")
    return results


RESUME_IGNORED = {"resume", "seed", "out_dir", "report_freq", "workers", "gpu", "deterministic"}


def check_resumable(run_dir, state: dict, args) -> None:
    """Refuse a checkpoint written under another configuration (one line naming the flag)."""
    for key, old in state["args"].items():
        if key not in RESUME_IGNORED and getattr(args, key, old) != old:
            raise utils.UserError(f"{run_dir / 'checkpoint.pt'}: checkpoint from a different configuration "
                                  f"(--{key} {old} there, {getattr(args, key)} now)")


def variant_name(args) -> str:
    """The paper's name of the configuration: FP-DARTS-s1, -s2, -s1r (+ larger space)."""
    name = {"task": "s2" if args.sal_second else "s1"}.get(args.sal_type, args.sal_type)
    name += "r" if args.num_compare > 1 else ""
    return f"FP-DARTS-{name}" + ("-larger" if args.no_restrict else "")


if __name__ == "__main__":
    utils.run_cli(main)
