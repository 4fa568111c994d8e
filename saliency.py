"""Search-loss gradient saliency (s1, s2, vanilla, sgas_1), eligibility under the restricted and
unrestricted rules, repeated comparison of candidates, and the prune decision."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from model_search import Network, edge_endpoints

SAL_TYPES = ("task", "vanilla", "sgas_1")


def _leaf_betas(model: Network) -> Tensor:
    """softmax(alpha) as a leaf tensor (2, 14, n_ops): saliency differentiates w.r.t. beta."""
    return model.betas().detach().requires_grad_(True)


def _search_loss(model: Network, betas: Tensor, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x, betas=betas), y)


def saliency_first_order(model: Network, batches: Iterable, device: torch.device) -> Tensor:
    """FP-DARTS s1: S = -(dL/dbeta) * beta, averaged over `batches` of the search split.

    The model stays in train mode (BN uses batch statistics), as in the authors' code. The
    authors divide the sum by the last batch index instead of the count; ranking is unchanged.
    """
    model.train()
    betas = _leaf_betas(model)
    total, count = torch.zeros_like(betas), 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        (g,) = torch.autograd.grad(_search_loss(model, betas, x, y), betas)
        total -= g * betas.detach()
        count += 1
    return total / max(count, 1)


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module):
    """BN layers use batch statistics without updating their running ones (torch.func needs
    functions without side effects); the buffers are put back afterwards."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.running_mean, m.running_var, m.num_batches_tracked))
            m.running_mean = m.running_var = m.num_batches_tracked = None
    try:
        yield
    finally:
        for m, mean, var, count in saved:
            m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count


def hessian_diagonal(loss_fn: Callable[[Tensor], Tensor], point: Tensor, index: Tensor,
                     chunk: int = 32) -> Tensor:
    """Exact diag(H)[index] of `loss_fn` at `point` (zeros elsewhere).

    Row i of H is the Hessian-vector product with the unit vector e_i, computed forward over
    reverse (the jvp of the gradient); `chunk` rows run at once under vmap, which bounds memory
    to `chunk` tangent copies of the activations. `loss_fn` must have no side effects.
    """
    grad_fn = torch.func.grad(loss_fn)
    hvp = lambda v: torch.func.jvp(grad_fn, (point,), (v,))[1]
    diag = torch.zeros(point.numel(), device=point.device, dtype=point.dtype)
    for part in index.split(chunk):
        rows = torch.arange(len(part), device=point.device)
        unit = torch.zeros(len(part), point.numel(), device=point.device, dtype=point.dtype)
        unit[rows, part] = 1.0  # (chunk, numel)
        h = torch.func.vmap(hvp)(unit.view(len(part), *point.shape))
        diag[part] = h.reshape(len(part), -1)[rows, part]
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


def saliency_second_order(model: Network, batches: Iterable, device: torch.device,
                          hessian_coef: float = 1.0, chunk: int = 32) -> Tensor:
    """FP-DARTS s2: S = -(dL/dbeta) * beta + c * diag(H) * beta^2, averaged over `batches`.

    c = 1 follows the authors' code; the Taylor expansion's textbook value is 1/2. Only live
    entries of the Hessian diagonal are computed (pruned ones are never candidates). BN running
    statistics are not updated by these batches (train-mode BN uses batch statistics anyway).
    """
    model.train()
    betas = model.betas().detach()
    live = torch.cat([m.reshape(-1) for m in model.masks()]).nonzero().squeeze(1)
    total, count = torch.zeros_like(betas), 0
    with frozen_batchnorm_stats(model):
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss_fn = lambda b: _search_loss(model, b, x, y)
            g = torch.func.grad(loss_fn)(betas)
            h = hessian_diagonal(loss_fn, betas, live, chunk)
            total += -g * betas + hessian_coef * h * betas * betas
            count += 1
    return total / max(count, 1)


def saliency_vanilla(model: Network) -> Tensor:
    """Magnitude pruning: S = beta."""
    return model.betas().detach()


def saliency_sgas(model: Network) -> Tensor:
    """SGAS criterion 1 at op level: beta times the min-max normalised edge certainty
    1 - H(beta_edge) / log(n_ops)."""
    betas = model.betas().detach()  # (2, 14, n_ops)
    entropy = -(betas * betas.clamp_min(1e-12).log()).sum(-1) / math.log(betas.size(-1))
    certainty = 1.0 - entropy  # (2, 14)
    lo, hi = certainty.min(-1, keepdim=True).values, certainty.max(-1, keepdim=True).values
    certainty = (certainty - lo) / (hi - lo).clamp_min(1e-12)
    return betas * certainty.unsqueeze(-1)


# ---------------------------------------------------------------- eligibility and decision

def eligible_ops(keep: Tensor, steps: int, restrict: bool) -> Tensor:
    """Which live ops (14, n_ops) of one cell may be pruned now.

    Unrestricted: every live op. Restricted: every intermediate node must keep at least 2
    distinct live input edges, so when a node is down to 2 live edges, an edge's last op is
    protected.
    """
    eligible = keep.clone()
    if not restrict:
        return eligible
    start = 0
    for i in range(steps):
        rows = slice(start, start + 2 + i)
        per_edge = keep[rows].sum(1)  # live ops per incoming edge
        if int((per_edge > 0).sum()) <= 2:
            eligible[rows][per_edge == 1] = False
        start += 2 + i
    return eligible


def has_redundant_op(keep: Tensor, steps: int, restrict: bool, num_kept_min: int) -> bool:
    """Whether pruning goes on in this cell: some node has > 2 live ops (restricted), or the
    cell has more than `num_kept_min` live ops (unrestricted)."""
    if not restrict:
        return int(keep.sum()) > num_kept_min
    dst = torch.tensor([d for _, d in edge_endpoints(steps)])
    per_node = torch.zeros(steps + 2, dtype=torch.long).index_add_(0, dst, keep.sum(1).long())
    return bool((per_node[2:] > 2).any())


def shortlist(saliency: Tensor, eligible: Tensor, n: int) -> list[int]:
    """Flat indices of the `n` eligible ops with the smallest |S| (ineligible ones never appear)."""
    score = saliency.abs().flatten().masked_fill(~eligible.flatten(), math.inf)
    n = min(n, int(eligible.sum()))
    return score.topk(n, largest=False).indices.tolist()  # ascending |S|


@torch.no_grad()
def compare_candidates(model: Network, cell: int, candidates: list[int],
                       next_batches: Callable[[], list], device: torch.device) -> list[float]:
    """Validation loss of the supernet with each candidate removed in place (eval mode).

    `next_batches()` gives the batches for one candidate: fresh ones each call (the authors'
    protocol) or the same ones every call (fixed-batch comparison).
    """
    model.eval()
    mask = model.masks()[cell]
    n_ops = mask.size(1)
    losses = []
    for flat in candidates:
        edge, op = divmod(flat, n_ops)
        mask[edge, op] = False
        total, count = 0.0, 0
        for x, y in next_batches():
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            total += F.cross_entropy(model(x), y, reduction="sum").item()
            count += y.size(0)
        mask[edge, op] = True
        losses.append(total / max(count, 1))
    model.train()
    return losses


CELLS = ("normal", "reduce")


class Pruner:
    """Carries out FP-DARTS prune events on a supernet's keep-masks.

    Each event removes exactly one op of the normal and one of the reduce cell, chosen over all
    edges of that cell among the ops the restricted/unrestricted rule allows.
    """

    def __init__(self, model: Network, *, device: torch.device, sal_type: str = "task",
                 second: bool = False, hessian_coef: float = 1.0, hessian_chunk: int = 32,
                 num_compare: int = 1, restrict: bool = True, num_kept_min: int = 8):
        self.model, self.device = model, device
        self.sal_type, self.second = sal_type, second
        self.hessian_coef, self.hessian_chunk = hessian_coef, hessian_chunk
        self.num_compare = num_compare
        self.restrict, self.num_kept_min = restrict, num_kept_min
        self.steps = model._steps

    def _unfinished(self, mask: Tensor) -> bool:
        return has_redundant_op(mask, self.steps, self.restrict, self.num_kept_min)

    def finished(self) -> bool:
        """True once neither cell has an op left to prune."""
        return not any(self._unfinished(m) for m in self.model.masks())

    def live_ops(self) -> list[int]:
        """Live ops per cell type [normal, reduce]."""
        return [int(m.sum()) for m in self.model.masks()]

    def saliency(self, batches: Iterable) -> Tensor:
        """Saliency (2, 14, n_ops) of every op under `sal_type` (s2 when `second`)."""
        if self.sal_type == "vanilla":
            return saliency_vanilla(self.model)
        if self.sal_type == "sgas_1":
            return saliency_sgas(self.model)
        if self.second:
            return saliency_second_order(self.model, batches, self.device, self.hessian_coef,
                                         self.hessian_chunk)
        return saliency_first_order(self.model, batches, self.device)

    def decide(self, saliency: Tensor, next_batches: Callable[[], list]) -> list[dict]:
        """One decision per unfinished cell: the lowest-|S| eligible op, or with `num_compare`
        N > 1, the one of the N lowest whose removal gives the lowest validation loss.

        Both cells are scored on the current supernet before either prune is applied. Only
        eligible ops are ever shortlisted (an explicit fix over the authors' tie-prone marking).
        """
        decisions = []
        n_ops = saliency.size(-1)
        for cell, mask in enumerate(self.model.masks()):
            if not self._unfinished(mask):
                continue
            eligible = eligible_ops(mask, self.steps, self.restrict)
            candidates = shortlist(saliency[cell], eligible, self.num_compare)
            losses = [None] * len(candidates)
            if self.num_compare > 1:
                losses = compare_candidates(self.model, cell, candidates, next_batches, self.device)
            best = min(range(len(candidates)), key=lambda i: (losses[i] or 0.0, i))
            records = [{"edge": f // n_ops, "op": self.model.primitives[f % n_ops],
                        "saliency": saliency[cell].flatten()[f].item(), "loss": loss}
                       for f, loss in zip(candidates, losses)]
            decisions.append({"cell": CELLS[cell], **records[best], "candidates": records})
        return decisions

    def apply(self, decisions: list[dict]) -> None:
        """Prune the decided ops (keep-mask entries set to False)."""
        for d in decisions:
            mask = self.model.masks()[CELLS.index(d["cell"])]
            mask[d["edge"], self.model.primitives.index(d["op"])] = False
