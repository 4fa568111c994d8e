"""Benchmark a training step (forward, backward, SGD step) of the evaluation networks built from
DARTS_V2: the CIFAR network (36 channels, 20 cells, batch 96, 32x32, auxiliary head) and the
ImageNet network (48 channels, 14 cells, 224x224, auxiliary head; batch 32 on a CPU, 128 on a
GPU), in images per second, with and without channels_last (and bf16 autocast on CUDA).

    python bench/bench_train.py
    python bench/bench_train.py --steps 5 --networks cifar
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import utils  # noqa: E402
from bench.bench_search import timed  # noqa: E402
from genotypes import DARTS_V2  # noqa: E402
from model import NetworkCIFAR, NetworkImageNet  # noqa: E402
from plumbing import distributed  # noqa: E402


def images_per_second(network: str, batch: int, steps: int, channels_last: bool, amp: bool,
                      device: torch.device, init_channels: int | None = None, layers: int | None = None,
                      size: int | None = None) -> float:
    """Throughput of the median of `steps` training steps after one warm-up step (the paper's
    network sizes unless told otherwise)."""
    if network == "cifar":
        model = NetworkCIFAR(init_channels or 36, 10, layers or 20, True, DARTS_V2)
        size, classes = size or 32, 10
    else:
        model = NetworkImageNet(init_channels or 48, 1000, layers or 14, True, DARTS_V2)
        size, classes = size or 224, 1000
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    model.drop_path_prob = 0.2 if network == "cifar" else 0.0
    opt = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=device)
    autocast = utils.autocast(device, amp)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits, aux = model(x)
            loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    return batch / timed(step, steps, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default="cifar,imagenet", help="comma-separated: cifar, imagenet")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    args = p.parse_args()
    device = distributed.init().device
    utils.set_determinism(False)  # (cuDNN's autotuner on, as in the runs)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for network in args.networks.split(","):
        batch = 96 if network == "cifar" else (128 if device.type == "cuda" else 32)
        for channels_last in (False, True):
            for amp in (False, True) if device.type == "cuda" else (False,):
                ips = images_per_second(network, batch, args.steps, channels_last, amp, device)
                print(f"{network:8s} batch {batch:3d} channels_last={channels_last!s:5s} "
                      f"amp={amp!s:5s} {ips:9.1f} images/s")


if __name__ == "__main__":
    main()
