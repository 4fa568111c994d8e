"""Evaluation networks built from any genotype: NetworkCIFAR and NetworkImageNet (DARTS layout),
and NetworkNB201 from a NAS-Bench-201 architecture string (the benchmark's layout)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from architectures import NB201_ENDPOINTS, parse_nb201_arch
from genotypes import Genotype, cell_edges
from operations import (
    NB201_OPS,
    OPS,
    FactorizedReduce,
    Identity,
    ReLUConvBN,
    ResNetBasicblock,
    Zero,
    darts_layers,
    drop_path,
    nb201_layers,
)


class Cell(nn.Module):
    """A discrete cell: each intermediate node sums its incoming ops; the output concatenates
    the genotype's concat nodes.

    Restricted genotypes (2-tuple genes, two per node) give exactly the original DARTS cell; the
    unrestricted kind (3-tuple genes (op, src, dst), FP-DARTS' larger space) may give a node any
    number of inputs. `_ops` is one flat list in gene order, so DARTS state_dict keys are kept.
    """

    def __init__(self, genotype: Genotype, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)

        genes = genotype.reduce if reduction else genotype.normal
        self._edges = cell_edges(genes)  # [(op, src, dst)]
        self._concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self._nodes = sorted({dst for _, _, dst in self._edges})
        self.multiplier = len(self._concat)
        self._ops = nn.ModuleList(
            OPS[name](C, 2 if reduction and src < 2 else 1, True) for name, src, _ in self._edges
        )

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for node in self._nodes:
            total = None
            for op, (_, src, dst) in zip(self._ops, self._edges):
                if dst != node:
                    continue
                h = op(states[src])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states[node] = total
        return torch.cat([states[i] for i in self._concat], dim=1)


def auxiliary_features(C: int, pool_stride: int, last_bn: bool) -> nn.Sequential:
    """The DARTS auxiliary head's features: ReLU, 5x5 average pool, 1x1 conv to 128 + BN + ReLU,
    2x2 conv to 768 (+ BN) + ReLU (module indices as in DARTS, so its checkpoints load)."""
    return nn.Sequential(
        nn.ReLU(inplace=True),
        nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),  # to 2x2
        nn.Conv2d(C, 128, 1, bias=False),
        nn.BatchNorm2d(128),
        nn.ReLU(inplace=True),
        nn.Conv2d(128, 768, 2, bias=False),  # 2x2 -> 1x1
        *([nn.BatchNorm2d(768)] if last_bn else []),
        nn.ReLU(inplace=True),
    )


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier at 2/3 depth; expects an 8x8 input map (32-pixel images)."""

    def __init__(self, C, num_classes):
        super().__init__()
        self.features = auxiliary_features(C, pool_stride=3, last_bn=True)  # 8x8 -> 2x2 -> 1x1
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier at 2/3 depth; expects a 7x7 input map (224-pixel images).

    DARTS left out the BatchNorm after the 768-channel conv (a typo it kept for consistency with
    its paper); we keep that layout so DARTS checkpoints load.
    """

    def __init__(self, C, num_classes):
        super().__init__()
        self.features = auxiliary_features(C, pool_stride=2, last_bn=False)  # 7x7 -> 2x2 -> 1x1
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class _Network(nn.Module):
    """The cell stack shared by both networks: reductions at 1/3 and 2/3 depth, aux head at 2/3."""

    def _build_cells(self, genotype, C, C_prev_prev, C_prev, layers, reduction_prev,
                     auxiliary, num_classes, aux_head) -> None:
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        self.cells = nn.ModuleList()
        for i, (C_curr, reduction) in enumerate(darts_layers(C, layers)):
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == 2 * layers // 3:
                C_to_auxiliary = C_prev
        if auxiliary:
            self.auxiliary_head = aux_head(C_to_auxiliary, num_classes)
        # Adaptive pooling equals DARTS' AvgPool2d(7) on ImageNet's 7x7 map and has no parameters.
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def _forward_cells(self, s0: Tensor, s1: Tensor) -> tuple[Tensor, Tensor | None]:
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == 2 * self._layers // 3 and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))  # (N, num_classes)
        return logits, logits_aux


class NetworkCIFAR(_Network):
    """The DARTS CIFAR network: a 3x3 stem to 3C channels, then `layers` cells."""

    def __init__(self, C, num_classes, layers, auxiliary, genotype: Genotype):
        super().__init__()
        C_stem = 3 * C
        self.stem = nn.Sequential(
            nn.Conv2d(3, C_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        self._build_cells(genotype, C, C_stem, C_stem, layers, False,
                          auxiliary, num_classes, AuxiliaryHeadCIFAR)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        s = self.stem(x)  # (N, 3C, H, W)
        return self._forward_cells(s, s)


class NetworkImageNet(_Network):
    """The DARTS ImageNet network: three stride-2 stem convs (224 -> 28), then `layers` cells."""

    def __init__(self, C, num_classes, layers, auxiliary, genotype: Genotype):
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self._build_cells(genotype, C, C, C, layers, True,
                          auxiliary, num_classes, AuxiliaryHeadImageNet)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        s0 = self.stem0(x)  # (N, C, H/4, W/4)
        s1 = self.stem1(s0)  # (N, C, H/8, W/8)
        return self._forward_cells(s0, s1)


class NB201InferCell(nn.Module):
    """A NAS-Bench-201 cell with one op per edge (affine BN, convolutions without bias): node i
    (1..3) sums its edges from every earlier node, node 3 is the output. `layers` holds the ops in
    edge order, as the benchmark's own cell names them."""

    def __init__(self, ops: list[str], C: int):
        super().__init__()
        self.layers = nn.ModuleList(NB201_OPS[op](C, 1, True) for op in ops)

    def forward(self, x: Tensor, drop_prob: float) -> Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            total = None
            for op, (src, dst) in zip(self.layers, NB201_ENDPOINTS):
                if dst != node:
                    continue
                h = op(nodes[src])
                if self.training and drop_prob > 0.0 and not isinstance(op, (Identity, Zero)):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            nodes.append(total)
        return nodes[-1]  # (N, C, H, W)


class NetworkNB201(nn.Module):
    """The NAS-Bench-201 network of one cell: a 3x3 stem to C channels, three stages of `layers`
    cells (C, 2C, 4C) joined by residual stride-2 blocks, BN + ReLU, pooling, a classifier.
    The same signature as the DARTS networks; there is no auxiliary head."""

    def __init__(self, C, num_classes, layers, auxiliary, genotype: str):
        super().__init__()
        if auxiliary:
            raise ValueError("NAS-Bench-201 networks have no auxiliary head")
        ops = parse_nb201_arch(genotype, "NAS-Bench-201 architecture")
        self.drop_path_prob = 0.0
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList(
            ResNetBasicblock(C_in, C_out) if reduction else NB201InferCell(ops, C_out)
            for C_in, C_out, reduction in nb201_layers(C, layers)
        )
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        s = self.stem(x)  # (N, C, H, W)
        for cell in self.cells:
            s = cell(s, self.drop_path_prob) if isinstance(cell, NB201InferCell) else cell(s)
        return self.classifier(self.global_pooling(self.lastact(s)).flatten(1)), None
