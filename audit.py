"""The saliency audit (`train_search.py --audit_every K`): at a prune event, before pruning, how
well s1 and s2 (and the search's own criterion, when it is another) rank the live ops against the
truth, the change of the search loss when each op alone is removed. It measures; it never changes
what the search does."""
from __future__ import annotations

import contextlib
from collections.abc import Iterable
from statistics import fmean

import torch
import torch.nn.functional as F
from torch import Tensor

import utils
from model_search import Supernet
from saliency import Criterion, explicit_batchnorm, op_removed, saliency_first_order, saliency_second_order, shortlist

# The rules audited at every audited event, by the coefficient of their Hessian term: s1 (none),
# s2 as the authors weight it (1) and s2 with the Taylor expansion's 1/2. A search with another
# criterion adds its own, under the criterion's label (`with_criterion`).
RULES = {"s1": 0.0, "s2": 1.0, "s2_half": 0.5}


@contextlib.contextmanager
def untouched(model: Supernet):
    """The model's buffers (BN running statistics) and every random generator are as before on
    leaving: the audit's passes leave no trace on the search. Drop-path (S1-S4) is off meanwhile:
    every removal, and the rules, are measured on one and the same network."""
    device = model.arch_parameters()[0].device
    rng, drop_prob = utils.rng_state(device), model.drop_path_prob
    buffers = [b.clone() for b in model.buffers()]
    model.drop_path_prob = 0.0
    try:
        yield
    finally:
        model.drop_path_prob = drop_prob
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        utils.set_rng_state(rng, device)


@torch.no_grad()
def removal_change(model: Supernet, batches: Iterable, device: torch.device) -> Tensor:
    """The true effect of pruning each live op alone: L(supernet without op k) - L(supernet),
    the search loss averaged over `batches` (cell types, edges, n_ops; 0 for pruned entries).

    Each op is removed as a prune removes it (its keep-mask entry flipped in place, the other
    mixing weights unchanged) and restored. BN normalises with the batch statistics, as in the
    saliency pass, but updates no running statistics, so every removal sees the same network.
    What s1 and s2 estimate to first and second order; the saliency audit compares them with it.
    """
    model.train()
    masks = model.masks()
    batches = [(x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in batches]
    loss = lambda: sum(F.cross_entropy(model(x), y).double() for x, y in batches) / len(batches)
    change = torch.zeros(len(masks), *masks[0].shape, dtype=torch.float64, device=device)
    with explicit_batchnorm(model):
        base = loss()
        for cell, mask in enumerate(masks):
            for edge, op in mask.nonzero().tolist():
                with op_removed(mask, edge, op):
                    change[cell, edge, op] = loss() - base
    return change


def ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 of the values of a 1-d tensor (ties broken by position)."""
    out = torch.empty_like(x)
    out[x.argsort(stable=True)] = torch.arange(len(x), dtype=x.dtype, device=x.device)
    return out


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two 1-d tensors (ties broken by position)."""
    ra, rb = ranks(a.double()), ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def true_rank(truth: Tensor, eligible: Tensor, flat: int) -> int:
    """1 + how many eligible ops' removal raises the search loss less than removing op `flat`
    (1: the least harmful op to prune)."""
    return 1 + int((truth[eligible] < truth[flat]).sum())


def measure(model: Supernet, batches: Iterable, device: torch.device, hessian_chunk: int = 16) -> dict:
    """The truth and the three rules' saliencies on `batches`, in float32 (cell types, edges,
    n_ops each): {"truth", "s1", "s2", "s2_half"}."""
    with untouched(model):  # (drawing the batches may draw random numbers too)
        batches = list(batches)
        truth = removal_change(model, batches, device)
        first = saliency_first_order(model, batches, device).double()
        hessian = saliency_second_order(model, batches, device, hessian_coef=1.0, chunk=hessian_chunk,
                                        first_order=torch.zeros_like(first)).double()  # diag(H) * beta^2
    return {"truth": truth, **{name: first + coef * hessian for name, coef in RULES.items()}}


def with_criterion(measured: dict, criterion: Criterion, saliency: Tensor) -> dict:
    """`measured` with the search's own saliency under its criterion's label, unless the criterion
    is the Taylor one (whose s1 and s2 are audited already)."""
    return measured if criterion.taylor else {**measured, criterion.label: saliency}


def rules_of(found: dict) -> list[str]:
    """The rules in a measurement (tensors) or an audit record (dicts): RULES, and a criterion's."""
    return [k for k, v in found.items()
            if k != "truth" and (torch.is_tensor(v) or isinstance(v, dict) and "spearman" in v)]


def compare(measured: dict, model: Supernet, *, restrict: bool, pruned: dict[str, int] | None = None) -> list[dict]:
    """Per cell type: the rules' Spearman correlation with the truth over the live ops (signed,
    and of the magnitudes), the op each rule would prune (the eligible op of smallest |S|) and
    its true rank among the eligible ops; with `pruned` ({cell type: flat index}), the true rank
    of the op the event actually pruned."""
    space, records = model.space, []
    for cell, (name, mask) in enumerate(zip(space.cell_types, model.host_masks())):
        live, eligible = mask.flatten(), space.eligible(cell, mask, restrict).flatten()
        truth = measured["truth"][cell].flatten().cpu()
        record = {"cell": name, "live_ops": int(live.sum()), "eligible": int(eligible.sum())}
        for rule in rules_of(measured):
            s = measured[rule][cell].flatten().cpu()
            (pick,) = shortlist(s, eligible, 1)
            edge, op = divmod(pick, mask.size(1))
            record[rule] = {"spearman": spearman(s[live], truth[live]),
                            "spearman_abs": spearman(s[live].abs(), truth[live].abs()),
                            "pick": {"edge": edge, "op": space.op_name(cell, edge, op)},
                            "true_rank": true_rank(truth, eligible, pick)}
        if pruned and name in pruned:
            record["pruned_true_rank"] = true_rank(truth, eligible, pruned[name])
        records.append(record)
    return records


def summary(lines: list[dict]) -> dict | None:
    """The audit over a search (the records of audit.jsonl): events audited and, per rule, the
    mean correlations and the mean true rank of its pick relative to the eligible ops."""
    if not lines:
        return None
    out = {"events": len({(r["epoch"], r["step"]) for r in lines})}
    for rule in rules_of(lines[0]):
        out[rule] = {"spearman": fmean(r[rule]["spearman"] for r in lines),
                     "spearman_abs": fmean(r[rule]["spearman_abs"] for r in lines),
                     "true_rank_fraction": fmean(r[rule]["true_rank"] / r["eligible"] for r in lines)}
    return out
