"""Shared machinery of the three scripts: model complexity counting (more plumbing joins later)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters_in_M(model: nn.Module) -> float:
    """Parameters in millions, the DARTS way: the auxiliary head is not counted."""
    aux = getattr(model, "auxiliary_head", None)
    excluded = {id(p) for p in aux.parameters()} if aux is not None else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded) / 1e6


@torch.no_grad()
def count_multadds_in_M(model: nn.Module, image_size: int, channels: int = 3) -> float:
    """Mult-adds in millions of one eval-mode forward pass of a single image.

    Counted by PyTorch's own `torch.utils.flop_counter`, which sees convolutions and matrix
    products (linear layers) only; mult-adds = FLOPs / 2. Pooling, BN and activations are free.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, image_size, image_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 2 / 1e6
