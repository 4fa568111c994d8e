"""The FP-DARTS supernets: prunable mixed ops, the DARTS search cell and network (DARTS space,
RobustDARTS S1-S4) and the NAS-Bench-201 search network, with their architecture parameters and
keep-masks; the search space (`search_spaces.py`) says which ops sit on which edge."""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from operations import (
    NB201_OPS,
    OPS,
    FactorizedReduce,
    ReLUConvBN,
    ResNetBasicblock,
    darts_layers,
    drop_path,
    nb201_layers,
)
from search_spaces import DartsCellSpace, NB201Space, SearchSpace, edge_endpoints, get_space


class MixedOp(nn.Module):
    """One edge: the weighted sum of its live candidate ops. Pruned ops are not computed."""

    def __init__(self, ops: Iterable[nn.Module]):
        super().__init__()
        self._ops = nn.ModuleList(ops)

    def forward(self, x: Tensor, weights: Tensor, keep: list[bool], drop_prob: float = 0.0) -> Tensor | None:
        out = None
        for w, alive, op in zip(weights, keep, self._ops):
            if alive:
                out = w * op(x) if out is None else out + w * op(x)
        if out is not None and drop_prob > 0.0 and self.training:
            # RobustDARTS' search: the edge's mixed output goes through per-sample drop-path.
            out = drop_path(out, drop_prob)
        return out  # None when every op of the edge is pruned


def darts_candidate(name: str, C: int, stride: int) -> nn.Module:
    """A DARTS-family candidate op of the supernet (BN without affine)."""
    op = OPS[name](C, stride, False)
    if "pool" in name:  # DARTS: pooling is followed by a BN without affine
        op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
    return op


class Cell(nn.Module):
    """A search cell: `steps` intermediate nodes, each fed by every earlier node through a MixedOp
    over the candidates `edge_ops[edge]` of its edge."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 edge_ops: list[list[str]]):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        strides = [2 if reduction and src < 2 else 1 for src, _ in edge_endpoints(steps)]
        self._ops = nn.ModuleList(
            MixedOp(darts_candidate(name, C, stride) for name in names)
            for names, stride in zip(edge_ops, strides)
        )

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, keep: list[list[bool]],
                drop_prob: float = 0.0) -> Tensor:
        states: list[Tensor | None] = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            terms = [self._ops[offset + j](h, weights[offset + j], keep[offset + j], drop_prob)
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


class Supernet(nn.Module):
    """What every supernet shares: per cell type of its search space, an architecture matrix
    `alphas_<type>` (edges, n_ops) and a keep-mask buffer `keep_<type>` of the same shape.

    The mixing weights are beta = softmax(alpha) over **all** ops of an edge, pruned ones
    included, as in the authors' code. The masks are boolean buffers (True = live), so they travel
    with the state_dict and with deepcopy. A pruned op is never computed, so its parameters get
    no gradient (grad stays None) and SGD and gradient clipping skip them.
    """

    drop_path_prob = 0.0  # per-sample drop-path of every edge's output in training mode (set per epoch)
    _host_cache = None  # (masks and their versions, CPU copies, nested lists): `_host`

    def _init_arch(self, space: SearchSpace, track_running_stats: bool = True) -> None:
        self.space = space
        if not track_running_stats:
            for cell in self.cells:
                if isinstance(cell, (Cell, NB201Cell)):
                    batch_statistics_only(cell)
        shape = (len(space.endpoints), space.num_ops)  # (14, 7) in the DARTS space
        # Made on the CPU, as nn.Module's own parameters are, and moved with the module by `.to()`.
        for t in space.cell_types:
            setattr(self, f"alphas_{t}", nn.Parameter(1e-3 * torch.randn(shape, device="cpu")))
        for t in space.cell_types:
            self.register_buffer(f"keep_{t}", torch.ones(shape, dtype=torch.bool, device="cpu"))

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits, one per cell type ([alphas_normal, alphas_reduce] in DARTS)."""
        return [getattr(self, f"alphas_{t}") for t in self.space.cell_types]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture logits (told apart by identity)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def masks(self) -> tuple[Tensor, ...]:
        """The keep-masks, one (edges, n_ops) bool per cell type."""
        return tuple(getattr(self, f"keep_{t}") for t in self.space.cell_types)

    def betas(self) -> Tensor:
        """Mixing weights softmax(alpha) over all ops: (cell types, edges, n_ops)."""
        return torch.stack([F.softmax(a, dim=-1) for a in self.arch_parameters()])

    def _host(self) -> tuple:
        """(the keep-masks as CPU tensors, the same as nested lists of bool). The forward pass and
        the pruning rules read the masks at every step; on a GPU each read of a device tensor waits
        for the device's queue, so the copy is made again only when a mask has changed (a prune, a
        checkpoint loaded, s1r's comparison flipping an op): every in-place change raises a
        tensor's version counter, and `.to()` replaces the tensor."""
        key = [(m, m._version) for m in self.masks()]
        cached = self._host_cache
        if cached is None or any(a is not b or va != vb for (a, va), (b, vb) in zip(cached[0], key)):
            host = tuple(m.cpu() for m, _ in key)
            cached = self._host_cache = (key, host, tuple(h.tolist() for h in host))
        return cached[1:]

    def host_masks(self) -> tuple[Tensor, ...]:
        """The keep-masks as CPU tensors (the same tuple until a mask changes: a fresh copy then)."""
        return self._host()[0]

    def _keep_lists(self, keep) -> tuple[list, ...]:
        return keep or self._host()[1]

    def genotype(self, restrict: bool = True, num_kept_max: int = 8):
        """The discrete architecture implied by the masked mixing weights (the space's rule)."""
        with torch.no_grad():
            betas = self.betas().cpu()
        return self.space.derive(betas, list(self.host_masks()), restrict, num_kept_max)


class Network(Supernet):
    """The DARTS supernet (DARTS space, RobustDARTS S1-S4) with FP-DARTS keep-masks:
    `alphas_normal` / `alphas_reduce` are shared by all cells of a type."""

    def __init__(self, C: int, num_classes: int, layers: int, steps: int = 4,
                 stem_multiplier: int = 3, space: str | SearchSpace = "darts", track_running_stats: bool = True):
        super().__init__()
        space = get_space(space, steps) if isinstance(space, str) else space
        self._steps = steps
        multiplier = steps  # the cell output concatenates every intermediate node
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev = C_curr, C_curr
        self.cells = nn.ModuleList()
        reduction_prev = False
        for C_curr, reduction in darts_layers(C, layers):
            self.cells.append(Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction,
                                   reduction_prev, space.edge_ops["reduce" if reduction else "normal"]))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)
        self._init_arch(space, track_running_stats)

    def forward(self, x: Tensor, betas: Tensor | None = None,
                keep: tuple[list, list] | None = None) -> Tensor:
        """Logits. `betas` (2, 14, n_ops) replaces softmax(alpha), e.g. a leaf for saliency;
        `keep` replaces the masks (nested lists of bool)."""
        betas = self.betas() if betas is None else betas
        keep = self._keep_lists(keep)
        s0 = s1 = self.stem(x)  # (N, 3C, H, W)
        for cell in self.cells:
            r = int(cell.reduction)
            s0, s1 = s1, cell(s0, s1, betas[r], keep[r], self.drop_path_prob)
        # Global average pooling as a mean: vmap (the s2 Hessian) has no fast rule for
        # adaptive pooling of channels_last tensors.
        return self.classifier(s1.mean((2, 3)))  # (N, num_classes)


class NB201Cell(nn.Module):
    """NAS-Bench-201's search cell: node i (1..3) sums a MixedOp over every earlier node; the
    output is node 3. BN without affine, convolutions with a bias (the benchmark's search ops)."""

    def __init__(self, C: int, edge_ops: list[list[str]]):
        super().__init__()
        self._ops = nn.ModuleList(MixedOp(NB201_OPS[name](C, 1, False) for name in names)
                                  for names in edge_ops)

    def forward(self, x: Tensor, weights: Tensor, keep: list[list[bool]], drop_prob: float = 0.0) -> Tensor:
        nodes, edge = [x], 0
        for node in range(1, 4):
            terms = []
            for src in range(node):
                out = self._ops[edge](nodes[src], weights[edge], keep[edge], drop_prob)
                terms.append(out if out is not None else torch.zeros_like(x))
                edge += 1
            nodes.append(sum(terms[1:], terms[0]))
        return nodes[-1]  # (N, C, H, W)


class NB201Network(Supernet):
    """The NAS-Bench-201 search network: a 3x3 stem, three stages of N cells (C, 2C, 4C
    channels) joined by residual stride-2 blocks, BN + ReLU, global pooling and a classifier;
    one architecture matrix `alphas_cell` (6, 5) for every cell."""

    def __init__(self, C: int, num_classes: int, N: int, space: str | SearchSpace = "nb201",
                 track_running_stats: bool = True):
        super().__init__()
        space = get_space(space) if isinstance(space, str) else space
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList(
            ResNetBasicblock(C_in, C_out) if reduction else NB201Cell(C_out, space.edge_ops["cell"])
            for C_in, C_out, reduction in nb201_layers(C, N)
        )
        C_prev = 4 * C
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(C_prev, num_classes)
        self._init_arch(space, track_running_stats)

    def forward(self, x: Tensor, betas: Tensor | None = None, keep: tuple[list] | None = None) -> Tensor:
        """Logits. `betas` (1, 6, 5) replaces softmax(alpha); `keep` replaces the mask."""
        betas = self.betas() if betas is None else betas
        keep = self._keep_lists(keep)
        s = self.stem(x)  # (N, C, H, W)
        for cell in self.cells:
            s = cell(s, betas[0], keep[0], self.drop_path_prob) if isinstance(cell, NB201Cell) else cell(s)
        return self.classifier(self.lastact(s).mean((2, 3)))  # (N, num_classes)


def batch_statistics_only(module: nn.Module) -> None:
    """The BN layers of `module` keep no running statistics and normalise with the batch's own,
    in evaluation too (`track_running_stats=False`: NAS-Bench-201's BN=0)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None


def supernet(space: SearchSpace, C: int, num_classes: int, layers: int,
             track_running_stats: bool = True) -> Supernet:
    """The supernet of `space`: `layers` cells (DARTS-cell spaces) or cells per stage (nb201);
    `track_running_stats` False: the cells' BN layers use batch statistics only."""
    if isinstance(space, NB201Space):
        return NB201Network(C, num_classes, layers, space, track_running_stats)
    if isinstance(space, DartsCellSpace):
        return Network(C, num_classes, layers, steps=space.steps, space=space, track_running_stats=track_running_stats)
    raise TypeError(f"no supernet for a {type(space).__name__}")
