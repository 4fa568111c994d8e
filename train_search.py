"""FP-DARTS search: first-order DARTS on a supernet whose weakest ops are pruned by search-loss
gradient saliency, twice per epoch after a warm-up, until the final cell remains; in the DARTS
space, RobustDARTS' S1-S4 or NAS-Bench-201 (`--search_space`)."""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn as nn

import audit
import utils
from architect import Architect
from model_search import Supernet, supernet
from plumbing import distributed, divergence, rundir, stops, timing
from plumbing.drivers import plan, search_run
from plumbing.drivers.search_args import build_parser, oom_advice, parse_args  # noqa: F401  (the script's flags)
from saliency import CRITERIA, Pruner, PruneSchedule
from search_spaces import get_space

log = utils.logger


@dataclass
class Search:
    """The algorithm's state: the supernet and what updates it (weight optimizer, architect,
    pruner), the prune schedule, and the step's instruments (phase timer, non-finite check)."""
    args: argparse.Namespace
    model: Supernet
    ddp: nn.Module  # the model, DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer  # the weights'
    architect: Architect
    pruner: Pruner
    timer: timing.PhaseTimer
    divergence: divergence.Divergence  # --nan_policy
    schedule: PruneSchedule | None = None  # set once the data says how many steps an epoch has


def build(args, world: distributed.World, num_classes: int, memory_format=torch.contiguous_format) -> Search:
    """The supernet (on the device, DDP-wrapped as `ddp`), its weight optimizer, architect and
    pruner, as `args` asks (the timer is a fresh one; no schedule yet)."""
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
    watch = divergence.Divergence(args.nan_policy, args.nan_patience, "the search",
                                  "a lower --learning_rate or --arch_learning_rate may help")
    return Search(args=args, model=model, ddp=ddp, optimizer=optimizer, architect=architect, pruner=pruner,
                  timer=timing.PhaseTimer(world.device, every=timing.SAMPLE_EVERY), divergence=watch)


def prune_schedule(args: argparse.Namespace, steps: int) -> PruneSchedule:
    """The authors' schedule: no pruning for --warmup epochs, then an event every --prune_interval
    weight steps (by default half of an epoch's `steps`: two events per epoch)."""
    return PruneSchedule(args.warmup, args.prune_interval or max(steps // 2, 1), steps, args.epochs)


def learning_rate(args: argparse.Namespace, epoch: int, fraction: float = 0.0) -> float:
    """The weight learning rate at `fraction` (step / steps per epoch) of `epoch`."""
    if args.lr_schedule == "warmup_cosine_nb201":
        return utils.warmup_cosine_nb201_lr(epoch, fraction, epochs=args.epochs, warmup=args.warmup,
                                            base=args.learning_rate, minimum=args.learning_rate_min)
    return utils.cosine_lr(epoch, args.epochs, args.learning_rate, args.learning_rate_min)


def drop_path_prob(args: argparse.Namespace, epoch: int) -> float:
    """RobustDARTS' ramp: 0 at the first epoch, --drop_path_prob at the last."""
    return args.drop_path_prob * epoch / max(args.epochs - 1, 1)


def search_step(search: Search, x, y, x_val, y_val, lr: float, meters: list, where: str) -> None:
    """One iteration of the search: an architecture step on the validation batch (adding its s1 to
    the pruner's window under --sal_source arch_steps) and a weight step on the training batch,
    in the order of --step_order (the DARTS-space code: architecture first; NAS-Bench-201's:
    weights first). The step's loss, top-1 and non-finite checks reach the host in one read at
    its end, which adds them to `meters`."""
    args, watch = search.args, search.divergence
    accumulate = args.sal_source == "arch_steps" and not search.pruner.finished()

    def arch_step():
        saved = watch.snapshot(search.model)

        def accept() -> bool:  # (the gradient averaged over processes, before Adam's step)
            grad = torch.cat([a.grad.reshape(-1) for a in search.model.arch_parameters()])
            return watch.ok("the alphas' gradient", grad, where, "architecture step", search.model, saved)

        found = search.architect.step(x_val, y_val, x, y, lr, search.optimizer, beta_grad=accumulate, accept=accept)
        alpha = torch.cat([a.reshape(-1) for a in search.model.arch_parameters()])
        watch.defer("alpha", alpha, f"{where}, architecture step")
        if accumulate and found is not None:  # this step's s1, from the gradient the step computed anyway
            search.pruner.accumulate(*found)

    order = ("arch", "weight") if args.step_order == "arch_first" else ("weight", "arch")
    figures = ()
    for phase in order:
        with search.timer(phase):
            if phase == "arch":
                arch_step()
            else:
                figures = weight_step(search, x, y, where)
            if phase == order[-1]:  # the step's one host read (in its last phase)
                values = watch.settle(*figures)
    if figures:
        loss_m, top1_m = meters
        loss_m.update(values[0], y.size(0))
        top1_m.update(values[1] * 100.0, y.size(0))


def weight_step(search: Search, x, y, where: str) -> tuple[torch.Tensor, ...]:
    """SGD on the supernet's weights with the training batch (gradient-norm clip); a step whose
    gradient is non-finite stops the search or, under --nan_policy skip, changes nothing. Returns
    the batch's loss and top-1 share, on the device (nothing when the step was skipped)."""
    args, optimizer, watch = search.args, search.optimizer, search.divergence
    saved = watch.snapshot(search.model)
    optimizer.zero_grad(set_to_none=True)
    with utils.autocast(x.device, args.amp):
        logits = search.ddp(x)  # DDP averages the weight gradients over processes
        loss = nn.functional.cross_entropy(logits, y)
    watch.early("the search loss", loss, f"{where}, weight step")
    loss.backward()
    norm = nn.utils.clip_grad_norm_(search.model.weight_parameters(), args.grad_clip)
    if not watch.ok("the weights' gradient", norm, where, "weight step", search.model, saved):
        optimizer.zero_grad(set_to_none=True)
        return ()
    optimizer.step()
    return loss.detach(), utils.hits(logits.detach(), y)[0]


def prune_event(search: Search, run: search_run.Run, epoch: int, step: int) -> tuple:
    """Score every op and prune the weakest eligible one of each cell type (the heart of
    FP-DARTS); return what the run records: the saliency, the decisions, the masks before them
    and the audit's records. Under torchrun every process scores its share of the batches; the
    saliency and the comparison losses are pooled and rank 0's decision is applied everywhere."""
    args, model, pruner, timer = search.args, search.model, search.pruner, search.timer
    run.sal_queue.sampler.set_epoch(run.events)  # a fresh, reproducible order for every event
    measured = audit_measure(search, run)  # (--audit_every: the truth, before anything changes)
    batches = run.sal_queue
    if args.sal_second:  # about `budget` Hessian rows per event
        batches = islice(batches, math.ceil(args.sal_second_budget / sum(pruner.live_ops())))
    with timer("saliency"):
        saliency = pruner.saliency(batches)
    alive = torch.stack(list(model.masks()))
    search.divergence.check("the saliency", saliency[alive], f"epoch {epoch}, step {step}, prune event")
    with timer("compare"):  # s1r: the --num_compare lowest, each removed on --iter_compare + 1 batches
        decisions = pruner.decide(saliency, comparison_batches(args, run.compare_iter))
    live = [m.clone() for m in model.masks()]
    audited = None if measured is None else audit.compare(
        audit.with_criterion(measured, CRITERIA[args.sal_type], saliency), model, restrict=not args.no_restrict,
        pruned=pruner.flat_indices(decisions))
    pruner.apply(decisions)
    return saliency, decisions, live, audited


def comparison_batches(args: argparse.Namespace, stream):
    """What gives each s1r candidate its batches: fresh ones from `stream` (the authors'), or with
    --fixed_compare_batches the same ones for every candidate of the event."""
    fixed = list(islice(stream, args.iter_compare + 1)) if args.fixed_compare_batches else None
    return (lambda: fixed) if fixed else (lambda: list(islice(stream, args.iter_compare + 1)))


def audit_measure(search: Search, run: search_run.Run) -> dict | None:
    """--audit_every: at events 1, K+1, ... the audit's truth and rules on the event's first
    batches (rank 0), leaving no trace on the search."""
    args = search.args
    if not (args.audit_every and run.events % args.audit_every == 0 and run.world.is_main):
        return None
    with search.timer("audit"):
        return audit.measure(search.model, islice(run.sal_queue, args.audit_batches), run.world.device,
                             args.hessian_chunk)


def search_one_epoch(search: Search, run: search_run.Run, epoch: int, first_step: int) -> dict:
    """Alternate architecture and weight steps over the weight split; prune when due (and
    checkpoint right after each prune). `first_step` > 0 continues an interrupted epoch."""
    args, model, device, timer, schedule = search.args, search.model, run.world.device, search.timer, search.schedule
    loss_m, top1_m = run.meters
    rate = timing.Rate()
    for step, (x, y) in enumerate(timer.iterate(run.batches), start=first_step):
        lr = learning_rate(args, epoch, step / schedule.steps)  # (constant within an epoch but in a warm-up)
        utils.set_lr(search.optimizer, lr)
        model.train()
        with timer("data"):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x_val, y_val = (t.to(device, non_blocking=True) for t in next(run.valid_iter))
        search_step(search, x, y, x_val, y_val, lr, run.meters, f"epoch {epoch}, step {step}")
        timer.tick()
        rate.update(y.size(0) * run.world.world_size)
        if step % args.report_freq == 0:
            log.info("train %03d %e %f  %s", step, loss_m.avg, top1_m.avg,
                     search_run.progress(run, search, epoch, step, first_step, rate))
        if schedule.point(step):  # a point of the prune schedule: an event when one is due
            start = time.perf_counter()
            pruned = schedule.due(epoch, step) and not search.pruner.finished()
            if pruned:
                search_run.record_event(run, search, epoch, step, *prune_event(search, run, epoch, step))
            search.pruner.reset_accumulation()  # --sal_source arch_steps: the next window starts
            if pruned:
                search_run.save_state(run, search, epoch, step)
            rate.exclude(time.perf_counter() - start)  # the step rate is that of the steps alone
    return utils.pooled_averages({"loss": loss_m, "top1": top1_m}, device)


def validate(search: Search, run: search_run.Run) -> tuple[object, dict]:
    """The supernet's validation loss and top-1 on the scoring split, and the genotype derived."""
    args, model, timer = search.args, search.model, search.timer
    with timer("validation"):
        distributed.sync_buffers(model)  # BN statistics: rank 0's, as DDP uses them
        valid = utils.evaluate(model, run.valid_eval, nn.CrossEntropyLoss(), run.world.device)
    with timer("files"):
        genotype = model.genotype(not args.no_restrict, args.num_kept_max)
    return genotype, valid


def main(argv: list[str] | None = None) -> dict:
    """Run a search (on every process under torchrun); return the final figures (results.json)."""
    args = parse_args(argv)
    if args.plan:  # the projected time and memory, without a run
        return plan.plan_search(args, build, search_step)
    world = distributed.init(args.gpu, args.dist_timeout)
    utils.on_device(args, world.device)
    args.seed = utils.resolve_seed(args.seed)
    run = search_run.setup(args, world)
    search = build(args, world, run.num_classes, utils.memory_format(args.channels_last, world.device))
    search.schedule = prune_schedule(args, len(run.train_queue))
    search_run.start(run, search.model)
    first_epoch, first_step = search_run.resume(run, search) if args.resume else (0, 0)
    if first_epoch >= args.epochs:  # finished: with its results, or stopped before writing them (a full disk)
        if (run.dir / rundir.RESULTS).exists():
            raise utils.UserError(f"{run.dir}: this search already finished its {args.epochs} epochs")
        last = run.rows[-1]
        return search_run.finish(run, search, search.model.genotype(not args.no_restrict, args.num_kept_max),
                                 {"top1": last["val_acc"], "loss": last["val_loss"]})
    with stops.Guard(world.device, search.timer, run.dir / rundir.CHECKPOINT, oom_advice(args, run.dir)):
        for epoch in range(first_epoch, args.epochs):
            lr = learning_rate(args, epoch)
            search.model.drop_path_prob = drop_path_prob(args, epoch)
            if epoch != first_epoch or first_step == 0:  # a fresh epoch (not the rest of one)
                log.info("epoch %d lr %e%s", epoch, lr,
                         f" drop_path_prob {search.model.drop_path_prob:e}" if args.drop_path_prob else "")
                with search.timer("data"):
                    search_run.start_epoch(run, epoch)
            train = search_one_epoch(search, run, epoch, first_step if epoch == first_epoch else 0)
            genotype, valid = validate(search, run)
            search_run.end_epoch(run, search, epoch, lr, train, valid, genotype)
    return search_run.finish(run, search, genotype, valid)


if __name__ == "__main__":
    utils.run_script(main)
