"""Search-loss gradient saliency (s1, s2) and the other criteria (vanilla, sgas_1) in one registry,
eligibility under the restricted and unrestricted rules, repeated comparison of candidates, and
the prune decision."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

import utils
from model_search import Supernet
from plumbing import distributed


def _leaf_betas(model: Supernet) -> Tensor:
    """softmax(alpha) as a leaf tensor (cell types, edges, n_ops): saliency differentiates w.r.t. beta."""
    return model.betas().detach().requires_grad_(True)


def _search_loss(model: Supernet, betas: Tensor, *, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x, betas=betas), y)


def saliency_first_order(model: Supernet, batches: Iterable, device: torch.device, amp: bool = False) -> Tensor:
    """FP-DARTS s1: S = -(dL/dbeta) * beta, averaged over `batches` of the search split (the
    forward passes under bf16 autocast with `amp`).

    The model stays in train mode (BN uses batch statistics), as in the authors' code. The
    authors divide the sum by the last batch index instead of the count; ranking is unchanged.
    """
    model.train()
    betas = _leaf_betas(model)
    total, count = torch.zeros_like(betas), 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with utils.autocast(device, amp):
            loss = _search_loss(model, betas, x=x, y=y)
        (g,) = torch.autograd.grad(loss, betas)
        total -= g * betas.detach()
        count += 1
    return total / max(count, 1)


def _explicit_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """Train-mode batch norm written out with batch statistics, updating nothing."""
    mean = x.mean((0, 2, 3), keepdim=True)
    var = (x - mean).pow(2).mean((0, 2, 3), keepdim=True)
    out = (x - mean) * torch.rsqrt(var + bn.eps)
    if bn.affine:
        out = out * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    return out


@contextlib.contextmanager
def explicit_batchnorm(model: nn.Module):
    """Run the model's BN layers as `_explicit_batch_norm` for the duration.

    Two reasons: torch.func needs functions without side effects (no running-stat updates), and
    PyTorch's fused batch_norm gives a wrong second-order forward-mode derivative (nested jvp),
    while the written-out arithmetic differentiates correctly (tests compare against autograd).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.forward = partial(_explicit_batch_norm, m)
    try:
        yield
    finally:
        for m in layers:
            del m.forward


@torch.no_grad()
def hessian_diagonal(loss_fn: Callable[[Tensor], Tensor], point: Tensor, index: Tensor,
                     chunk: int = 16) -> Tensor:
    """Exact diag(H)[index] of `loss_fn` at `point` (zeros elsewhere).

    H_ii = e_i^T H e_i is the second directional derivative along the unit vector e_i, computed
    forward over forward (a jvp of a jvp) for `chunk` entries at once under vmap. Forward mode
    stores no activations, so memory stays near that of `chunk` forward passes (the default
    search configuration, 16 rows at batch 32: under 3 GB on a CPU, where double back-
    propagation needs 15 GB for one row). `loss_fn` must have no side effects.
    """
    def second_derivative(v: Tensor) -> Tensor:
        directional = lambda p: torch.func.jvp(loss_fn, (p,), (v,))[1]
        return torch.func.jvp(directional, (point,), (v,))[1]

    diag = torch.zeros(point.numel(), device=point.device, dtype=point.dtype)
    for part in index.split(chunk):
        rows = torch.arange(len(part), device=point.device)
        unit = torch.zeros(len(part), point.numel(), device=point.device, dtype=point.dtype)
        unit[rows, part] = 1.0  # (chunk, numel)
        # randomness="same": a random op (S4's noise) draws one sample for the whole chunk.
        diag[part] = torch.func.vmap(second_derivative, randomness="same")(unit.view(len(part), *point.shape))
    return diag.view_as(point)


def hessian_diagonal_loop(loss_fn: Callable[[Tensor], Tensor], point: Tensor,
                          index: Tensor) -> Tensor:
    """The same diagonal by double back-propagation, one backward pass per entry (the authors'
    method); the reference the tests and the benchmark compare against."""
    point = point.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(point), point, create_graph=True)
    flat = grad.reshape(-1)
    diag = torch.zeros_like(flat)
    for i in index.tolist():
        (row,) = torch.autograd.grad(flat[i], point, retain_graph=True)
        diag[i] = row.reshape(-1)[i]
    return diag.view_as(point).detach()


def saliency_second_order(model: Supernet, batches: Iterable, device: torch.device,
                          hessian_coef: float = 1.0, chunk: int = 16,
                          first_order: Tensor | None = None, amp: bool = False) -> Tensor:
    """FP-DARTS s2: S = -(dL/dbeta) * beta + c * diag(H) * beta^2, averaged over `batches`.

    c = 1 follows the authors' code; the Taylor expansion's textbook value is 1/2. Only live
    entries of the Hessian diagonal are computed (pruned ones are never candidates). Given
    `first_order` (s1 from elsewhere: the architecture steps), only the Hessian term is computed
    on `batches` and added to it. `amp` puts the gradient's forward pass under bf16 autocast; the
    Hessian term is always computed in float32.
    """
    model.train()
    betas = _leaf_betas(model)
    live = torch.cat([m.reshape(-1) for m in model.masks()]).nonzero().squeeze(1)
    total, count = torch.zeros_like(betas), 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if first_order is None:
            with utils.autocast(device, amp):
                loss = _search_loss(model, betas, x=x, y=y)
            (g,) = torch.autograd.grad(loss, betas)
        with explicit_batchnorm(model), torch.autocast(device.type, enabled=False):
            loss_fn = partial(_search_loss, model, x=x, y=y)
            h = hessian_diagonal(loss_fn, betas.detach(), live, chunk)
        b = betas.detach()
        total += (-g * b + hessian_coef * h * b * b) if first_order is None else hessian_coef * h * b * b
        count += 1
    total = total / max(count, 1)
    return total if first_order is None else first_order + total


@contextlib.contextmanager
def op_removed(mask: Tensor, edge: int, op: int):
    """The op pruned in place (its keep-mask entry False) for the duration, then restored."""
    mask[edge, op] = False
    try:
        yield
    finally:
        mask[edge, op] = True


def saliency_vanilla(model: Supernet) -> Tensor:
    """Magnitude pruning: S = beta."""
    return model.betas().detach()


def saliency_sgas(model: Supernet) -> Tensor:
    """SGAS criterion 1 at op level: beta times the min-max normalised edge certainty
    1 - H(beta_edge) / log(n_ops)."""
    betas = model.betas().detach()  # (cell types, edges, n_ops)
    entropy = -(betas * betas.clamp_min(1e-12).log()).sum(-1) / math.log(betas.size(-1))
    certainty = 1.0 - entropy  # (cell types, edges)
    lo, hi = certainty.min(-1, keepdim=True).values, certainty.max(-1, keepdim=True).values
    certainty = (certainty - lo) / (hi - lo).clamp_min(1e-12)
    return betas * certainty.unsqueeze(-1)


# ---------------------------------------------------------------- the criteria

@dataclass(frozen=True)
class Criterion:
    """A saliency criterion, `--sal_type NAME`: `score(pruner, batches)` gives every op's saliency
    (cell types, edges, n_ops; the smallest |S| is pruned first). The help text, `--plan`, the
    campaign and the audit read these fields."""
    name: str
    score: Callable[[Pruner, Iterable], Tensor]
    help: str  # one line, in --sal_type's help
    reads_batches: bool  # it passes over the scoring batches at every event (what --plan charges)
    label: str  # how results, the audit and the campaign name it: FP-DARTS-<label>
    taylor: bool = False  # the search loss's Taylor terms: --sal_second (s2) and --sal_source apply

    def variant(self, second: bool) -> str:
        """The label of a search with this criterion (s2 for the Taylor one with --sal_second)."""
        return "s2" if self.taylor and second else self.label


CRITERIA: dict[str, Criterion] = {}


def register(criterion: Criterion) -> Criterion:
    """Make `criterion` a choice of --sal_type (a new name only)."""
    if criterion.name in CRITERIA:
        raise ValueError(f"saliency criterion {criterion.name!r} is registered already")
    CRITERIA[criterion.name] = criterion
    return criterion


def _task(pruner: Pruner, batches: Iterable) -> Tensor:
    """s1 (and s2 with --sal_second) of the search loss, averaged over processes under torchrun
    (each scores its own batches); with --sal_source arch_steps the s1 term is the average
    accumulated over the architecture steps, and only s2's Hessian term reads `batches`."""
    first = pruner.accumulated() if pruner.source == "arch_steps" else None
    if pruner.second:
        s = saliency_second_order(pruner.model, batches, pruner.device, pruner.hessian_coef, pruner.hessian_chunk,
                                  first_order=first, amp=pruner.amp)
    else:
        s = first if first is not None else saliency_first_order(pruner.model, batches, pruner.device, pruner.amp)
    return distributed.all_reduce_mean(s)


register(Criterion("task", _task, "search-loss s1 (s2 with --sal_second)",
                   reads_batches=True, label="s1", taylor=True))
register(Criterion("vanilla", lambda pruner, batches: saliency_vanilla(pruner.model), "beta magnitude",
                   reads_batches=False, label="vanilla"))
register(Criterion("sgas_1", lambda pruner, batches: saliency_sgas(pruner.model), "SGAS criterion 1",
                   reads_batches=False, label="sgas_1"))


# ---------------------------------------------------------------- decision

def shortlist(saliency: Tensor, eligible: Tensor, n: int) -> list[int]:
    """Flat indices of the `n` eligible ops with the smallest |S|, ascending (ineligible ones never
    appear). Ties go to the lowest flat index: with --no_restrict every op fed by a dead node has
    S exactly 0 (topk, like the authors' argsort, leaves the order of ties unspecified)."""
    score = saliency.abs().flatten().masked_fill(~eligible.flatten(), math.inf)
    n = min(n, int(eligible.sum()))
    return score.argsort(stable=True)[:n].tolist()


@torch.no_grad()
def compare_candidates(model: Supernet, cell: int, candidates: list[int],
                       next_batches: Callable[[], list], device: torch.device, amp: bool = False) -> list[float]:
    """Validation loss of the supernet with each candidate removed in place (eval mode; the
    forward passes under bf16 autocast with `amp`).

    `next_batches()` gives the batches for one candidate: fresh ones each call (the authors'
    protocol) or the same ones every call (fixed-batch comparison).
    """
    model.eval()
    mask = model.masks()[cell]
    n_ops = mask.size(1)
    losses = []
    for flat in candidates:
        total = torch.zeros(2, dtype=torch.float64, device=device)  # (summed loss, images)
        with op_removed(mask, *divmod(flat, n_ops)):
            for x, y in next_batches():
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with utils.autocast(device, amp):
                    logits = model(x)
                total[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
                total[1] += y.size(0)
        total = distributed.all_reduce_sum(total)  # over the batches of every process
        losses.append((total[0] / total[1].clamp(min=1)).item())
    model.train()
    return losses


@dataclass(frozen=True)
class PruneSchedule:
    """When prune events fall (the authors' schedule): after `warmup` epochs without pruning, at
    every `interval`-th of an epoch's `steps` weight steps (half an epoch by default: two events
    per epoch), until the pruner has finished."""
    warmup: int
    interval: int
    steps: int
    epochs: int

    def point(self, step: int) -> bool:
        """Whether the end of weight step `step` is a point of the schedule (an event when due)."""
        return (step + 1) % self.interval == 0

    def due(self, epoch: int, step: int) -> bool:
        """Whether an event is due after weight step `step` of `epoch` (if pruning goes on)."""
        return epoch >= self.warmup and self.point(step)

    def points_left(self, epoch: int, step: int, needed: int) -> tuple[int, int]:
        """Of the `needed` events, how many fall in the rest of `epoch` after `step`, and after it."""
        per_epoch = self.steps // self.interval
        in_epoch = min(needed, per_epoch - (step + 1) // self.interval if epoch >= self.warmup else 0)
        return in_epoch, min(needed - in_epoch, per_epoch * (self.epochs - max(epoch + 1, self.warmup)))


class Pruner:
    """Carries out FP-DARTS prune events on a supernet's keep-masks.

    Each event removes exactly one op of every cell type (normal and reduce in the DARTS cell),
    chosen over all edges of that cell among the ops the space's rule allows (restricted or
    unrestricted in the DARTS cell; an edge's last op is kept in NAS-Bench-201).
    """

    def __init__(self, model: Supernet, *, device: torch.device, sal_type: str = "task",
                 second: bool = False, hessian_coef: float = 1.0, hessian_chunk: int = 16,
                 num_compare: int = 1, restrict: bool = True, num_kept_min: int = 8,
                 source: str = "pass", amp: bool = False):
        self.model, self.device, self.source, self.amp = model, device, source, amp
        self.sal_sum, self.sal_count = None, 0  # s1 summed over architecture steps (source "arch_steps")
        self.sal_type, self.second = sal_type, second
        self.hessian_coef, self.hessian_chunk = hessian_coef, hessian_chunk
        self.num_compare = num_compare
        self.restrict, self.num_kept_min = restrict, num_kept_min
        self.space = model.space
        self._finished: tuple | None = None  # (the host masks it was worked out on, finished?)

    def _unfinished(self, cell: int, mask: Tensor) -> bool:
        return self.space.unfinished(cell, mask, self.restrict, self.num_kept_min)

    def finished(self) -> bool:
        """True once no cell type has an op left to prune (read on the host copy of the masks, and
        worked out again only when they changed: --sal_source arch_steps asks at every step)."""
        masks = self.model.host_masks()
        if self._finished is None or self._finished[0] is not masks:
            self._finished = (masks, not any(self._unfinished(c, m) for c, m in enumerate(masks)))
        return self._finished[1]

    def events_left(self) -> int:
        """Prune events still needed until every cell type reaches its end state."""
        final = self.space.final_ops(self.restrict, self.num_kept_min)
        return max(max(live - final, 0) for live in self.live_ops())

    def live_ops(self) -> list[int]:
        """Live ops per cell type ([normal, reduce] in the DARTS cell)."""
        return [int(m.sum()) for m in self.model.host_masks()]

    def saliency(self, batches: Iterable) -> Tensor:
        """Saliency (cell types, edges, n_ops) of every op under the `sal_type` criterion."""
        return CRITERIA[self.sal_type].score(self, batches)

    # ------------------------------------------------ s1 from the architecture steps

    def accumulate(self, betas: Tensor, beta_grad: Tensor) -> None:
        """Add one architecture step's s1 = -(dCE/dβ)·β (its batch, the weights of that moment)."""
        s = -beta_grad * betas
        self.sal_sum = s if self.sal_sum is None else self.sal_sum + s
        self.sal_count += 1

    def accumulated(self) -> Tensor:
        """The s1 average over the steps accumulated (zeros when there were none)."""
        if self.sal_sum is None:
            return torch.zeros_like(self.model.betas().detach())
        return self.sal_sum / self.sal_count

    def reset_accumulation(self) -> None:
        """Start a new window of architecture steps (at every point of the prune schedule)."""
        self.sal_sum, self.sal_count = None, 0

    def accumulation_state(self) -> dict:
        """The running sum, averaged over processes (a collective: call it on every process)
        so that any process count can continue it, and the step count."""
        total = None if self.sal_sum is None else distributed.all_reduce_mean(self.sal_sum.clone()).cpu()
        return {"sum": total, "count": self.sal_count}

    def load_accumulation_state(self, state: dict) -> None:
        self.sal_sum = None if state["sum"] is None else state["sum"].to(self.device)
        self.sal_count = state["count"]

    def decide(self, saliency: Tensor, next_batches: Callable[[], list]) -> list[dict]:
        """One decision per unfinished cell type: the lowest-|S| eligible op, or with `num_compare`
        N > 1, the one of the N lowest whose removal gives the lowest validation loss.

        All cell types are scored on the current supernet before any prune is applied. Only
        eligible ops are ever shortlisted (an explicit fix over the authors' tie-prone marking).
        """
        decisions = []
        n_ops = saliency.size(-1)
        saliency = saliency.detach().cpu()  # (ranked on the host, with the host copy of the masks: one read)
        for cell, mask in enumerate(self.model.host_masks()):
            if not self._unfinished(cell, mask):
                continue
            eligible = self.space.eligible(cell, mask, self.restrict)
            candidates = shortlist(saliency[cell], eligible, self.num_compare)
            losses = [None] * len(candidates)
            if self.num_compare > 1:
                losses = compare_candidates(self.model, cell, candidates, next_batches, self.device, self.amp)
            best = min(range(len(candidates)), key=lambda i: (losses[i] or 0.0, i))
            records = [{"edge": f // n_ops, "op": self.space.op_name(cell, f // n_ops, f % n_ops),
                        "saliency": saliency[cell].flatten()[f].item(), "loss": loss}
                       for f, loss in zip(candidates, losses)]
            decisions.append({"cell": self.space.cell_types[cell], **records[best], "candidates": records})
        return distributed.broadcast(decisions)  # decided once, on rank 0, for every process

    def flat_indices(self, decisions: list[dict]) -> dict[str, int]:
        """{cell type: flat index (edge * n_ops + op)} of the ops `decisions` prune."""
        return {d["cell"]: d["edge"] * self.space.num_ops
                + self.space.op_index(self.space.cell_types.index(d["cell"]), d["edge"], d["op"])
                for d in decisions}

    def apply(self, decisions: list[dict]) -> None:
        """Prune the decided ops (keep-mask entries set to False)."""
        for cell, flat in self.flat_indices(decisions).items():
            self.model.masks()[self.space.cell_types.index(cell)].view(-1)[flat] = False
