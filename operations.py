"""Candidate operations and building blocks: the OPS registry of the DARTS-family spaces (DARTS,
RobustDARTS S1-S4), NAS-Bench-201's own ops and reduction block, drop-path."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

# Every constructor has the signature (C, stride, affine) -> nn.Module. Module attribute names
# (`op`, `conv_1`, `conv_2`, `bn`) match the original DARTS code so its checkpoints load.
OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(
        3, stride=stride, padding=1, count_include_pad=False
    ),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine: (
        Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)
    ),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "sep_conv_7x7": lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    "conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine=affine),
    "conv_5x5": lambda C, stride, affine: ReLUConvBN(C, C, 5, stride, 2, affine=affine),
    "conv_7x1_1x7": lambda C, stride, affine: Conv7x1x1x7(C, stride, affine=affine),
    "noise": lambda C, stride, affine: NoiseOp(stride),
}

# NAS-Bench-201's candidates, built as its own code builds them: the convolution has a bias
# exactly when its BN has no affine parameters (the search network), and pooling has no BN.
# Its cells never stride (the reductions are residual blocks); module names follow NAS-Bench-201.
NB201_OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "skip_connect": lambda C, stride, affine: (
        Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)
    ),
    "nor_conv_1x1": lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine, bias=not affine),
    "nor_conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine, bias=not affine),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(
        3, stride=stride, padding=1, count_include_pad=False
    ),
}


class ReLUConvBN(nn.Module):
    """ReLU -> Conv -> BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True, bias=False):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=bias),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked (ReLU -> depthwise conv -> pointwise conv -> BN) blocks; only the first strides."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Conv7x1x1x7(nn.Sequential):
    """ReLU -> 1x7 conv -> 7x1 conv -> BN (AmoebaNet); a plain Sequential, as in DARTS."""

    def __init__(self, C, stride, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )


class Identity(nn.Module):
    """The stride-1 skip connection."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    """The `none` op: zeros of the output shape."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class NoiseOp(nn.Module):
    """RobustDARTS S4's `noise`: standard Gaussian noise N(0, 1) of the (strided) input's shape,
    drawn afresh at every call, in training and in evaluation alike; no parameters."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]  # the shape of the other ops' outputs
        return torch.randn_like(x)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convs, concatenated."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        assert C_out % 2 == 0, "FactorizedReduce needs an even number of output channels"
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)  # (N, C_out, H/2, W/2)
        return self.bn(out)


class ResNetBasicblock(nn.Module):
    """NAS-Bench-201's reduction between stages: two 3x3 ReLU-conv-BN (the first with stride 2)
    plus a shortcut of 2x2 average pooling and a 1x1 conv."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, padding=0),
                                        nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))  # (N, C_out, H / 2, W / 2)


def darts_layers(C: int, layers: int) -> list[tuple[int, bool]]:
    """(channels, is_reduction) of every cell of a DARTS network: reductions at 1/3 and 2/3 of
    the depth, each doubling the channels."""
    plan, C_curr = [], C
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        C_curr *= 2 if reduction else 1
        plan.append((C_curr, reduction))
    return plan


def nb201_layers(C: int, N: int) -> list[tuple[int, int, bool]]:
    """(C_in, C_out, is_reduction) of every layer of a NAS-Bench-201 network: N cells at C
    channels, a residual reduction block, N cells at 2C, another, N cells at 4C."""
    layers, C_prev = [], C
    for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
        if stage:
            layers.append((C_prev, C_curr, True))
        layers += [(C_curr, C_curr, False)] * N
        C_prev = C_curr
    return layers


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples with probability `drop_prob`, rescaling the rest (DARTS drop-path)."""
    if drop_prob <= 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty(x.size(0), 1, 1, 1).bernoulli_(keep_prob)  # (N, 1, 1, 1)
    return x / keep_prob * mask
