"""The FP-DARTS supernet: prunable mixed ops, search cells, architecture parameters, prune masks
and genotype derivation (restricted DARTS cell or the unrestricted larger space)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genotypes import PRIMITIVES, Genotype
from operations import OPS, FactorizedReduce, ReLUConvBN


class MixedOp(nn.Module):
    """One edge: the weighted sum of its live candidate ops. Pruned ops are not computed."""

    def __init__(self, C, stride, primitives=PRIMITIVES):
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in primitives:
            op = OPS[primitive](C, stride, False)
            if "pool" in primitive:  # DARTS: pooling is followed by a BN without affine
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x: Tensor, weights: Tensor, keep: list[bool]) -> Tensor | None:
        out = None
        for w, alive, op in zip(weights, keep, self._ops):
            if alive:
                out = w * op(x) if out is None else out + w * op(x)
        return out  # None when every op of the edge is pruned


class Cell(nn.Module):
    """A search cell: `steps` intermediate nodes, each fed by every earlier node through a MixedOp."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 primitives=PRIMITIVES):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList(
            MixedOp(C, 2 if reduction and j < 2 else 1, primitives)
            for i in range(steps) for j in range(2 + i)
        )

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, keep: list[list[bool]]) -> Tensor:
        states: list[Tensor | None] = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            terms = [self._ops[offset + j](h, weights[offset + j], keep[offset + j])
                     for j, h in enumerate(states) if h is not None]
            terms = [t for t in terms if t is not None]
            offset += len(states)
            # A node whose every input is pruned is dead (None): the ops it feeds are skipped.
            states.append(sum(terms[1:], terms[0]) if terms else None)
        n, c, h, w = states[1].shape
        if self.reduction:
            h, w = (h + 1) // 2, (w + 1) // 2
        outs = [s if s is not None else states[1].new_zeros(n, c, h, w)
                for s in states[-self._multiplier:]]
        return torch.cat(outs, dim=1)  # (N, multiplier * C, h, w)


def num_edges(steps: int) -> int:
    """Edges of a cell with `steps` intermediate nodes: 2 + 3 + ... = 14 for 4 nodes."""
    return sum(2 + i for i in range(steps))


def edge_endpoints(steps: int) -> list[tuple[int, int]]:
    """(source node, destination node) of every edge, in the order of the architecture rows."""
    return [(j, 2 + i) for i in range(steps) for j in range(2 + i)]


class Network(nn.Module):
    """The DARTS supernet with FP-DARTS keep-masks.

    `alphas_normal` / `alphas_reduce` are the architecture logits (shared by all cells of a type);
    the mixing weights are beta = softmax(alpha) over **all** ops, pruned ones included, as in the
    authors' code. `keep_normal` / `keep_reduce` are boolean buffers (True = live), so the masks
    travel with the state_dict and with deepcopy. A pruned op is never computed, so its
    parameters get no gradient (grad stays None) and SGD and gradient clipping skip them.
    """

    def __init__(self, C: int, num_classes: int, layers: int, steps: int = 4,
                 stem_multiplier: int = 3, primitives: list[str] = PRIMITIVES):
        super().__init__()
        self.primitives = list(primitives)
        self._steps = steps
        multiplier = steps  # the cell output concatenates every intermediate node
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            self.cells.append(Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction,
                                   reduction_prev, self.primitives))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)

        shape = (num_edges(steps), len(self.primitives))  # (14, 7)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(shape))
        self.register_buffer("keep_normal", torch.ones(shape, dtype=torch.bool))
        self.register_buffer("keep_reduce", torch.ones(shape, dtype=torch.bool))

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits [alphas_normal, alphas_reduce]."""
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture logits (told apart by identity)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def masks(self) -> tuple[Tensor, Tensor]:
        """The keep-masks (normal, reduce), each (14, n_ops) bool."""
        return self.keep_normal, self.keep_reduce

    def betas(self) -> Tensor:
        """Mixing weights softmax(alpha) over all ops: (2, 14, n_ops), normal then reduce."""
        return torch.stack([F.softmax(a, dim=-1) for a in self.arch_parameters()])

    def forward(self, x: Tensor, betas: Tensor | None = None,
                keep: tuple[list, list] | None = None) -> Tensor:
        """Logits. `betas` (2, 14, n_ops) replaces softmax(alpha), e.g. a leaf for saliency;
        `keep` replaces the masks (nested lists of bool)."""
        betas = self.betas() if betas is None else betas
        keep = keep or (self.keep_normal.tolist(), self.keep_reduce.tolist())
        s0 = s1 = self.stem(x)  # (N, 3C, H, W)
        for cell in self.cells:
            r = int(cell.reduction)
            s0, s1 = s1, cell(s0, s1, betas[r], keep[r])
        # Global average pooling as a mean: vmap (the s2 Hessian) has no fast rule for
        # adaptive pooling of channels_last tensors.
        return self.classifier(s1.mean((2, 3)))  # (N, num_classes)

    def genotype(self, restrict: bool = True, num_kept_max: int = 8) -> Genotype:
        """The discrete cell implied by the masked mixing weights (see `derive_genotype`)."""
        with torch.no_grad():
            betas = self.betas().cpu()
        masks = [m.cpu() for m in self.masks()]
        cells = [derive_cell(b * m, m, self._steps, self.primitives, restrict, num_kept_max)
                 for b, m in zip(betas, masks)]
        return Genotype(normal=cells[0][0], normal_concat=cells[0][1],
                        reduce=cells[1][0], reduce_concat=cells[1][1])


def derive_cell(weights: Tensor, keep: Tensor, steps: int, primitives: list[str],
                restrict: bool, num_kept_max: int = 8) -> tuple[list[tuple], list[int]]:
    """Genes and concat of one cell from its masked mixing weights (14, n_ops).

    Restricted (DARTS rule): per node, the 2 incoming edges with the strongest live op, then
    that op; genes (op, src), concat = all intermediate nodes. Unrestricted (FP-DARTS larger
    space): the `num_kept_max` strongest live ops of the whole cell, taken in node order and kept
    only when their source node is active; genes (op, src, dst), concat = the active nodes.
    """
    weights = weights.masked_fill(~keep, -1.0)  # pruned ops can never be chosen
    endpoints = edge_endpoints(steps)
    if restrict:
        genes, start = [], 0
        for i in range(steps):
            rows = range(start, start + 2 + i)
            best = sorted(rows, key=lambda e: -weights[e].max().item())[:2]
            genes += [(primitives[int(weights[e].argmax())], endpoints[e][0]) for e in best]
            start += 2 + i
        return genes, list(range(2, 2 + steps))
    live = int(keep.sum())
    top = weights.flatten().topk(min(live, num_kept_max)).indices.sort().values
    genes, active = [], {0, 1}
    for flat in top.tolist():
        edge, op = divmod(flat, len(primitives))
        src, dst = endpoints[edge]
        if src in active:
            genes.append((primitives[op], src, dst))
            active.add(dst)
    return genes, sorted(active - {0, 1})
