"""FP-DARTS search: first-order DARTS on a supernet whose weakest ops are pruned by search-loss
gradient saliency, twice per epoch after a warm-up, until the final cell remains; in the DARTS
space, RobustDARTS' S1-S4 or NAS-Bench-201 (`--search_space`)."""
from __future__ import annotations

import argparse
import math
import time
from itertools import islice
from pathlib import Path

import torch
import torch.nn as nn

import audit
from plumbing import distributed
from plumbing import divergence
from plumbing import oom
from plumbing.drivers import plan
from plumbing import rundir
from plumbing.drivers import search_run
from plumbing import stops
from plumbing import timing
import utils
from architect import REG_TYPES, Architect
from data import DATASETS
from model_search import supernet
from saliency import SAL_TYPES, Pruner
from plumbing.drivers.search_run import finish  # (train_search.finish: tests wrap it)
from search_spaces import NONE_RULES, SPACES, apply_recipe, get_space, recipe_defaults

log = utils.logger
LR_SCHEDULES = ("cosine", "warmup_cosine_nb201")


def build_parser() -> argparse.ArgumentParser:
    """Flags of the search (the authors' names and defaults)."""
    p = utils.ArgumentParser(description=__doc__)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="../data", help="folder holding (or receiving) the data set")
    g.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set to search on")
    g.add_argument("--batch_size", type=int, default=64, help="batch size of both the weight and the architecture steps")
    g.add_argument("--train_portion", type=float, default=0.5, help="share of the training set used for the weights; the rest trains alpha and scores saliency (--data_split train_portion)")
    g.add_argument("--data_split", default=None, choices=("train_portion", "benchmark"), help=f"train_portion: the DARTS split of the training set by --train_portion; benchmark: NAS-Bench-201's split files from --nb201_splits (without them, train_portion) (default: {recipe_defaults('data_split')})")
    g.add_argument("--nb201_splits", default=None, metavar="DIR", help="folder with NAS-Bench-201's split files (cifar-split.txt, cifar100-test-split.txt, imagenet-16-120-test-split.txt; configs/nas-benchmark/ of its code)")
    g.add_argument("--scoring_transform", default=None, choices=("train", "test"), help=f"images the saliency passes, s1r's comparisons and the validation see: train (augmented, as the architecture steps) or test (no augmentation) (default: {recipe_defaults('scoring_transform')})")
    g.add_argument("--no_flip", dest="flip", action="store_false", help="no random horizontal flips in the training transform (default: flips on every data set, SVHN included, as in the authors' code)")
    g.add_argument("--cutout", action="store_true", help="apply cutout to the search batches")
    g.add_argument("--cutout_length", type=int, default=16, help="cutout square side in pixels")
    g.add_argument("--image_size", type=int, default=32, help="side images are resized to (--dataset folder only)")
    g.add_argument("--subset", type=int, default=None, help="test/debug: use only N training images (the first N; a fixed random N for --dataset folder)")
    g.add_argument("--workers", type=int, default=None, help=utils.WORKERS_HELP)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help=f"search epochs (default: {recipe_defaults('epochs')})")
    g.add_argument("--learning_rate", type=float, default=0.025, help="initial (peak) weight learning rate")
    g.add_argument("--lr_schedule", default=None, choices=LR_SCHEDULES, help=f"cosine: per epoch from --learning_rate to --learning_rate_min; warmup_cosine_nb201: NAS-Bench-201's (a linear warm-up over --warmup epochs, updated every step, then a cosine of period epochs - warmup that stops at epoch epochs - warmup, then the minimum) (default: {recipe_defaults('lr_schedule')})")
    g.add_argument("--learning_rate_min", type=float, default=0.001, help="final weight learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum of the weights")
    g.add_argument("--weight_decay", type=float, default=None, help=f"weight decay of the weights (default: {recipe_defaults('weight_decay')})")
    g.add_argument("--grad_clip", type=float, default=5, help="gradient-norm clip of the weight step")
    g.add_argument("--arch_learning_rate", type=float, default=3e-4, help="Adam learning rate of alpha")
    g.add_argument("--arch_weight_decay", type=float, default=1e-3, help="Adam weight decay of alpha")
    g.add_argument("--nesterov", action="store_const", const=True, default=None, help=f"Nesterov momentum for the weights (default: {recipe_defaults('nesterov')})")
    g.add_argument("--no_nesterov", dest="nesterov", action="store_const", const=False, default=argparse.SUPPRESS, help="plain momentum")
    g.add_argument("--step_order", default=None, choices=("arch_first", "weight_first"), help=f"which step of an iteration comes first, on its own batch (default: {recipe_defaults('step_order')})")
    g.add_argument("--unrolled", action="store_true", help="second-order (unrolled) architecture step of DARTS")
    g = p.add_argument_group("supernet")
    g.add_argument("--search_space", default="darts", choices=SPACES, help="darts: 7 ops on every edge; s1-s4: RobustDARTS' spaces (DARTS cell, 2-3 ops per edge); nb201: NAS-Bench-201 (its own network; 6 edges x 5 ops)")
    g.add_argument("--init_channels", type=int, default=16, help="channels of the first cell")
    g.add_argument("--layers", type=int, default=None, help="cells in the supernet (default 8); with --search_space nb201, cells per stage (default 5)")
    g.add_argument("--steps", type=int, default=None, help="intermediate nodes per DARTS cell (default 4: 14 edges); s1 has 4 and nb201 its own cell")
    g.add_argument("--drop_path_prob", type=float, default=None, help=f"per-sample drop-path of every edge's output in training mode (weight and architecture steps, saliency passes), ramped linearly from 0 at the first epoch to this at the last (default: {recipe_defaults('drop_path_prob')})")
    g.add_argument("--track_running_stats", type=int, default=None, choices=(0, 1), help=f"1: the cells' BN layers keep running statistics for evaluation; 0: they always normalise with the batch's (default: {recipe_defaults('track_running_stats')})")
    g = p.add_argument_group("pruning")
    g.add_argument("--sal_type", default="task", choices=SAL_TYPES, help="task: search-loss gradient saliency; vanilla: beta magnitude; sgas_1: op-level SGAS criterion 1")
    g.add_argument("--sal_second", action="store_true", help="s2: add the Hessian-diagonal term (second order of the Taylor expansion)")
    g.add_argument("--sal_hessian_coef", type=float, default=1.0, help="coefficient of the Hessian term (1 as in the authors' code; 0.5 is the textbook Taylor value)")
    g.add_argument("--sal_source", default="pass", choices=("pass", "arch_steps"), help="s1 term of the saliency: pass = a pass over the search split at each event (the authors'); arch_steps = the average of -(dL/dbeta)*beta over the architecture steps since the previous point of the schedule (no extra pass)")
    g.add_argument("--sal_batch_size", type=int, default=None, help=f"batch size of the saliency passes (default: --batch_size; with --sal_second: {recipe_defaults('s2_batch_size')})")
    g.add_argument("--sal_second_budget", type=int, default=500, help="s2 uses about this many Hessian rows per event: ceil(budget / live ops) batches")
    g.add_argument("--hessian_chunk", type=int, default=16, help="Hessian diagonal entries computed at once (memory grows with it)")
    g.add_argument("--warmup", type=int, default=None, help=f"epochs without pruning (default: {recipe_defaults('warmup')})")
    g.add_argument("--prune_interval", type=int, default=None, help="test/debug: prune every N weight steps (default: half an epoch, i.e. twice per epoch)")
    g.add_argument("--num_compare", type=int, default=1, help="N > 1: re-check the N lowest-saliency ops by removing each and measuring the validation loss (s1r uses 5)")
    g.add_argument("--iter_compare", type=int, default=30, help="each candidate is measured on iter_compare + 1 validation batches")
    g.add_argument("--fixed_compare_batches", action="store_true", help="score every candidate of an event on the same validation batches (the authors draw fresh ones)")
    g.add_argument("--reg_type", default="norm", choices=REG_TYPES, help="regulariser on the mixing weight of pruned ops")
    g.add_argument("--reg_alpha", type=float, default=None, help=f"weight of the pruned-op regulariser; 0: none (default: {recipe_defaults('reg_alpha')})")
    g.add_argument("--none_rule", default="skip", choices=NONE_RULES, help="S3: skip: none is no input of a node for the restricted rule, is pruned before the end and never derived (ours); count: it counts like any op, may survive, and an edge left with only none derives skip_connect (the authors')")
    g.add_argument("--no_restrict", action="store_true", help="larger search space: no 2-inputs-per-node rule; keep --num_kept_min ops per cell anywhere")
    g.add_argument("--num_kept_max", type=int, default=8, help="--no_restrict: ops in the derived genotype")
    g.add_argument("--num_kept_min", type=int, default=8, help="--no_restrict: pruning stops at this many live ops per cell")
    g.add_argument("--audit_every", type=int, default=0, help="saliency audit at prune events 1, K+1, 2K+1, ...: the true change of the search loss when each live op alone is removed, against s1, s2 and s2 with coefficient 0.5 (audit.jsonl, results.json); 0: off. Costs a forward pass per live op and batch")
    g.add_argument("--audit_batches", type=int, default=10, help="saliency batches (the event's first ones) the audit measures on")
    g.add_argument("--nb201_file", default=None, help="--search_space nb201: the benchmark file (NAS-Bench-201 v1.0/v1.1 .pth or NATS-Bench topology), to record the accuracies of every epoch's cell")
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
    utils.add_memory_format_flags(g, "auto", "default: on for the CPU, where bench/bench_search.py measured a 1.8-4.2x faster search step; off on CUDA")
    g.add_argument("--no_summary", dest="summary", action="store_false", help="no summary figure (summary.png/.pdf: cells, validation curves, pruning, mixing weights) at the end; scripts/plot_search.py draws it later")
    g.add_argument("--amp", action="store_true", help="bf16 autocast for the forward passes of the weight and architecture steps, the saliency passes and s1r's comparisons (meant for CUDA; the s2 Hessian term and the validation stay float32)")
    distributed.add_flags(g)
    divergence.add_flags(g)
    plan.add_flags(p)
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill in the search space's sizes and recipe; reject impossible values and combinations
    with one line."""
    try:
        space = get_space(args.search_space, args.steps or 4, args.none_rule)
    except ValueError as e:
        p.error(str(e))
    if space.fixed_cell and args.steps is not None:
        p.error(f"--steps does not apply to --search_space {args.search_space} (its cell has fixed nodes)")
    if args.no_restrict and not space.has_restrict_rule:
        p.error(f"--no_restrict is a DARTS-cell rule; --search_space {args.search_space} has its own end state")
    if args.sal_source == "arch_steps" and (args.sal_type != "task" or args.unrolled):
        p.error("--sal_source arch_steps needs --sal_type task and the first-order architecture step (no --unrolled)")
    if args.nb201_file is not None and not space.has_benchmark:
        p.error("--nb201_file needs --search_space nb201")
    if args.nb201_file is not None and not Path(args.nb201_file).exists():
        p.error(f"--nb201_file {args.nb201_file}: no such file or folder")
    args.steps = space.steps
    args.layers = args.layers or space.default_layers
    if args.none_rule == "count" and args.no_restrict:
        p.error("--none_rule count changes the restricted rule; --no_restrict has none")
    apply_recipe(args, space.recipe)  # the authors' settings in this space, where no flag was given
    positive = ["batch_size", "epochs", "num_compare", "init_channels", "layers", "steps", "sal_second_budget",
                "hessian_chunk", "iter_compare", "num_kept_max", "num_kept_min", "audit_batches", "sal_batch_size"]
    positive += [k for k in ("prune_interval", "subset") if getattr(args, k) is not None]
    for name in positive:
        if getattr(args, name) < (0 if name == "iter_compare" else 1):
            p.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.audit_every < 0:
        p.error(f"--audit_every must be 0 (off) or positive, got {args.audit_every}")
    if not 0 < args.train_portion < 1:
        p.error(f"--train_portion must be in (0, 1), got {args.train_portion}")
    if not 0 <= args.warmup < args.epochs:
        p.error(f"--warmup ({args.warmup}) must be at least 0 and below --epochs ({args.epochs})")
    if not 0 <= args.drop_path_prob < 1:
        p.error(f"--drop_path_prob must be in [0, 1), got {args.drop_path_prob}")
    if args.nb201_splits is not None and args.data_split != "benchmark":
        p.error("--nb201_splits needs --data_split benchmark (the default with --search_space nb201)")
    if args.nb201_splits is not None and args.subset is not None:
        p.error("--subset takes part of the training set; with --nb201_splits the split files say which images")
    plan.check_flags(p, args)
    divergence.check_flags(p, args)
    args.plan_file = plan.plan_file(args, args.out_dir, rundir.SEARCH) if args.plan else None


def oom_advice(args, run_dir: Path) -> dict:
    """What to change when a phase runs out of memory (stops.Guard): which flags, and whether the
    run can go on from its checkpoint with them (--hessian_chunk and the audit's flags change
    nothing else and may differ on --resume; the batch sizes are part of the search)."""
    batch = oom.lower("batch_size", args.batch_size, "search")
    saliency = oom.lower("sal_batch_size", args.sal_batch_size, "search")
    resume = f"resume with the same flags and --resume {run_dir}"
    if args.sal_second:
        saliency = f"{resume} --hessian_chunk {max(args.hessian_chunk // 2, 1)} (now {args.hessian_chunk}), or {saliency}"
    return {None: batch, "saliency": saliency,
            "audit": f"{resume} and a lower --hessian_chunk (now {args.hessian_chunk}) or --audit_every 0"}


def prune_event(run: search_run.Search, epoch: int, step: int) -> None:
    """Score all ops, prune one per cell, record the event (the heart of FP-DARTS).

    Under torchrun every process scores its share of the batches; the saliency and the
    comparison losses are pooled over processes and rank 0's decision is applied everywhere.
    """
    args, pruner, compare_iter, timer = run.args, run.pruner, run.compare_iter, run.timer
    run.sal_queue.sampler.set_epoch(run.events)  # a fresh, reproducible order for every event
    measured = None
    if args.audit_every and run.events % args.audit_every == 0 and run.world.is_main:
        with timer("audit"):  # on the event's first batches, leaving no trace on the search
            measured = audit.measure(run.model, islice(run.sal_queue, args.audit_batches), run.world.device,
                                     args.hessian_chunk)
    run.events += 1
    batches = run.sal_queue
    if args.sal_second:  # about `budget` Hessian rows per event
        batches = islice(batches, math.ceil(args.sal_second_budget / sum(pruner.live_ops())))
    with timer("saliency"):
        saliency = pruner.saliency(batches)
    alive = torch.stack(list(run.model.masks()))
    run.divergence.check("the saliency", saliency[alive], f"epoch {epoch}, step {step}, prune event")  # (never prunes on NaN)
    with timer("compare"):
        fixed = list(islice(compare_iter, args.iter_compare + 1)) if args.fixed_compare_batches else None
        next_batches = (lambda: fixed) if fixed else (lambda: list(islice(compare_iter, args.iter_compare + 1)))
        decisions = pruner.decide(saliency, next_batches)
    live = [m.clone() for m in run.model.masks()]
    audited = None if measured is None else audit.compare(
        measured, run.model, restrict=not args.no_restrict, pruned=pruner.flat_indices(decisions))
    pruner.apply(decisions)
    if run.world.is_main:
        with timer("files"):
            search_run.record_event(run, epoch, step, saliency, decisions, live, audited)


def learning_rate(args: argparse.Namespace, epoch: int, fraction: float = 0.0) -> float:
    """The weight learning rate at `fraction` (step / steps per epoch) of `epoch`."""
    if args.lr_schedule == "warmup_cosine_nb201":
        return utils.warmup_cosine_nb201_lr(epoch, fraction, epochs=args.epochs, warmup=args.warmup,
                                            base=args.learning_rate, minimum=args.learning_rate_min)
    return utils.cosine_lr(epoch, args.epochs, args.learning_rate, args.learning_rate_min)


def drop_path_prob(args: argparse.Namespace, epoch: int) -> float:
    """RobustDARTS' ramp: 0 at the first epoch, --drop_path_prob at the last."""
    return args.drop_path_prob * epoch / max(args.epochs - 1, 1)


def search_step(run: search_run.SearchParts, x, y, x_val, y_val, lr: float, meters: list, where: str) -> None:
    """One iteration of the search: an architecture step on the validation batch (adding its s1 to
    the pruner's window under --sal_source arch_steps) and a weight step on the training batch,
    in the order of --step_order (the DARTS-space code: architecture first; NAS-Bench-201's:
    weights first). The step's loss, top-1 and non-finite checks reach the host in one read at
    its end, which adds them to `meters`."""
    args, watch = run.args, run.divergence
    accumulate = args.sal_source == "arch_steps" and not run.pruner.finished()

    def arch_step():
        saved = watch.snapshot(run.model)

        def accept() -> bool:  # (the gradient averaged over processes, before Adam's step)
            grad = torch.cat([a.grad.reshape(-1) for a in run.model.arch_parameters()])
            return watch.ok("the alphas' gradient", grad, where, "architecture step", run.model, saved)

        found = run.architect.step(x_val, y_val, x, y, lr, run.optimizer, beta_grad=accumulate, accept=accept)
        alpha = torch.cat([a.reshape(-1) for a in run.model.arch_parameters()])
        watch.defer("alpha", alpha, f"{where}, architecture step")
        if accumulate and found is not None:  # this step's s1, from the gradient the step computed anyway
            run.pruner.accumulate(*found)

    order = ("arch", "weight") if args.step_order == "arch_first" else ("weight", "arch")
    figures = ()
    for phase in order:
        with run.timer(phase):
            if phase == "arch":
                arch_step()
            else:
                figures = weight_step(run, x, y, where)
            if phase == order[-1]:  # the step's one host read (in its last phase)
                values = watch.settle(*figures)
    if figures:
        loss_m, top1_m = meters
        loss_m.update(values[0], y.size(0))
        top1_m.update(values[1] * 100.0, y.size(0))


def weight_step(run: search_run.SearchParts, x, y, where: str) -> tuple[torch.Tensor, ...]:
    """SGD on the supernet's weights with the training batch (gradient-norm clip); a step whose
    gradient is non-finite stops the search or, under --nan_policy skip, changes nothing. Returns
    the batch's loss and top-1 share, on the device (nothing when the step was skipped)."""
    args, optimizer, watch = run.args, run.optimizer, run.divergence
    saved = watch.snapshot(run.model)
    optimizer.zero_grad(set_to_none=True)
    with utils.autocast(x.device, args.amp):
        logits = run.ddp(x)  # DDP averages the weight gradients over processes
        loss = nn.functional.cross_entropy(logits, y)
    watch.early("the search loss", loss, f"{where}, weight step")
    loss.backward()
    norm = nn.utils.clip_grad_norm_(run.model.weight_parameters(), args.grad_clip)
    if not watch.ok("the weights' gradient", norm, where, "weight step", run.model, saved):
        optimizer.zero_grad(set_to_none=True)
        return ()
    optimizer.step()
    return loss.detach(), utils.hits(logits.detach(), y)[0]


def search_one_epoch(run: search_run.Search, epoch: int, first_step: int) -> dict:
    """Alternate architecture and weight steps over the weight split; prune when due (and
    checkpoint right after each prune). `first_step` > 0 continues an interrupted epoch."""
    args, model, device, timer, schedule = run.args, run.model, run.world.device, run.timer, run.schedule
    loss_m, top1_m = run.meters
    rate = timing.Rate()
    for step, (x, y) in enumerate(timer.iterate(run.batches), start=first_step):
        lr = learning_rate(args, epoch, step / schedule.steps)  # (constant within an epoch but in a warm-up)
        utils.set_lr(run.optimizer, lr)
        model.train()
        with timer("data"):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x_val, y_val = (t.to(device, non_blocking=True) for t in next(run.valid_iter))
        search_step(run, x, y, x_val, y_val, lr, run.meters, f"epoch {epoch}, step {step}")
        timer.tick()
        rate.update(y.size(0) * run.world.world_size)
        if step % args.report_freq == 0:
            log.info("train %03d %e %f  %s", step, loss_m.avg, top1_m.avg,
                     search_run.progress(run, epoch, step, first_step, rate))
        if schedule.point(step):  # a point of the prune schedule: an event when one is due
            start = time.perf_counter()
            pruned = schedule.due(epoch, step) and not run.pruner.finished()
            if pruned:
                prune_event(run, epoch, step)
            run.pruner.reset_accumulation()  # --sal_source arch_steps: the next window starts
            if pruned:
                search_run.save_state(run, epoch, step)
            rate.exclude(time.perf_counter() - start)  # the step rate is that of the steps alone
    return utils.pooled_averages({"loss": loss_m, "top1": top1_m}, device)


def build(args, world: distributed.World, num_classes: int,
          memory_format=torch.contiguous_format) -> search_run.SearchParts:
    """The supernet (on the device, DDP-wrapped as `ddp`), its weight optimizer, architect and
    pruner, as `args` asks (the timer is a fresh one)."""
    model = supernet(get_space(args.search_space, args.steps, args.none_rule), args.init_channels, num_classes,
                     args.layers, track_running_stats=bool(args.track_running_stats))
    model = model.to(world.device, memory_format=memory_format)
    # Pruned ops take no part in the forward pass, hence find_unused_parameters.
    ddp = distributed.wrap(model, world, find_unused_parameters=True, replicated=model.masks())
    optimizer = torch.optim.SGD(model.weight_parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay, nesterov=args.nesterov)
    architect = Architect(model, lr=args.arch_learning_rate, weight_decay=args.arch_weight_decay,
                          reg_type=args.reg_type, reg_alpha=args.reg_alpha, unrolled=args.unrolled,
                          network_momentum=args.momentum, network_weight_decay=args.weight_decay, amp=args.amp)
    pruner = Pruner(model, device=world.device, sal_type=args.sal_type, second=args.sal_second,
                    hessian_coef=args.sal_hessian_coef, hessian_chunk=args.hessian_chunk,
                    num_compare=args.num_compare, restrict=not args.no_restrict, num_kept_min=args.num_kept_min,
                    source=args.sal_source, amp=args.amp)
    return search_run.SearchParts(args=args, model=model, ddp=ddp, optimizer=optimizer, architect=architect,
                                  pruner=pruner,
                                  timer=timing.PhaseTimer(world.device, every=timing.SAMPLE_EVERY),
                                  divergence=divergence.Divergence(args.nan_policy, args.nan_patience, "the search",
                                                                   "a lower --learning_rate or --arch_learning_rate "
                                                                   "may help"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The search's flags, checked and completed (defaults that depend on other flags)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run a search (on every process under torchrun); return the final figures (results.json)."""
    args = parse_args(argv)
    if args.plan:  # the projected time and memory, without a run
        return plan.plan_search(args, build, search_step)
    world = distributed.init(args.gpu, args.dist_timeout)
    utils.on_device(args, world.device)
    args.seed = utils.resolve_seed(args.seed)
    run = search_run.setup(args, world, build)
    first_epoch, first_step = search_run.resume(run, run.state) if args.resume else (0, 0)
    if first_epoch >= args.epochs:  # finished: with its results, or stopped before writing them (a full disk)
        if (run.dir / rundir.RESULTS).exists():
            raise utils.UserError(f"{run.dir}: this search already finished its {args.epochs} epochs")
        last = run.rows[-1]
        return finish(run, run.model.genotype(not args.no_restrict, args.num_kept_max),
                      {"top1": last["val_acc"], "loss": last["val_loss"]})
    with stops.Guard(world.device, run.timer, run.dir / rundir.CHECKPOINT, oom_advice(args, run.dir)):
        for epoch in range(first_epoch, args.epochs):
            lr = learning_rate(args, epoch)
            run.model.drop_path_prob = drop_path_prob(args, epoch)
            if epoch != first_epoch or first_step == 0:  # a fresh epoch (not the rest of one)
                log.info("epoch %d lr %e%s", epoch, lr,
                         f" drop_path_prob {run.model.drop_path_prob:e}" if args.drop_path_prob else "")
                with run.timer("data"):
                    search_run.start_epoch(run, epoch)
                run.meters = search_run.fresh_meters()
            train = search_one_epoch(run, epoch, first_step if epoch == first_epoch else 0)
            genotype, valid = search_run.end_epoch(run, epoch, lr, train)
    return finish(run, genotype, valid)


if __name__ == "__main__":
    utils.run_script(main)
