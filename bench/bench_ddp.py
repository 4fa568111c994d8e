"""Benchmark data-parallel training: throughput of the CIFAR training step (DARTS_V2 with its
auxiliary head, the real `engine.train_one_epoch` on a DDP-wrapped network) on 1 process and on
N processes under torchrun, with the same global batch, printed as images/s and their ratio.

On a CPU the processes share the cores (1 process uses all of them as threads; N processes use
cores/N threads each), so the ratio measures DDP's overhead there; on a machine with N GPUs it
measures the scaling.

    python bench/bench_ddp.py                                  # 1 vs 2 processes
    python bench/bench_ddp.py --nproc 4 --batch_size 256 --init_channels 36 --layers 20
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import utils  # noqa: E402
from data import make_loader  # noqa: E402
from genotypes import DARTS_V2  # noqa: E402
from model import NetworkCIFAR  # noqa: E402
from plumbing import distributed  # noqa: E402
from plumbing.drivers.engine import train_one_epoch  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    """One process of a torchrun job: time `--steps` training steps (after one warm-up epoch of
    `--warmup_steps`) and, on rank 0, print images per second as JSON."""
    world = distributed.init()
    utils.set_determinism(False)  # (cuDNN's autotuner on, as in the runs)
    torch.manual_seed(0)
    model = NetworkCIFAR(args.init_channels, 10, args.layers, True, DARTS_V2).to(world.device)
    ddp = distributed.wrap(model, world)
    batch = utils.per_process_batch(args.batch_size, world.world_size)
    optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)

    def epoch(steps: int) -> float:
        images = torch.randn(steps * args.batch_size, 3, 32, 32, device="cpu")
        data = torch.utils.data.TensorDataset(images, torch.randint(0, 10, (len(images),), device="cpu"))
        loader = make_loader(data, batch, shuffle=True, rank=world.rank, world_size=world.world_size)
        if world.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_one_epoch(ddp, loader, optimizer, nn.CrossEntropyLoss(), world.device, grad_clip=5.0,
                        aux_weight=0.4, report_freq=10**9)
        if world.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    epoch(args.warmup_steps)
    seconds = epoch(args.steps)
    if world.is_main:
        rate = args.steps * args.batch_size / seconds
        print(json.dumps({"nproc": world.world_size, "images_per_second": rate}))
    distributed.shutdown()


def launch(nproc: int, args: argparse.Namespace) -> float:
    """Run the worker under torchrun on `nproc` processes; return rank 0's images per second."""
    cores = os.cpu_count() or 1
    env = dict(os.environ, OMP_NUM_THREADS=str(max(cores // nproc, 1)), PYTHONPATH=str(ROOT))
    flags = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("nproc", "worker")]
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc_per_node={nproc}", __file__, "--worker", *flags],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_second"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2, help="processes to compare with 1")
    p.add_argument("--batch_size", type=int, default=32, help="global batch size")
    p.add_argument("--init_channels", type=int, default=16, help="channels of the first cell")
    p.add_argument("--layers", type=int, default=8, help="cells")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup_steps", type=int, default=2, help="untimed steps first")
    p.add_argument("--worker", action="store_true", help="internal: run as one torchrun process")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    gpus = torch.cuda.device_count()
    if gpus and gpus < args.nproc:
        sys.exit(f"--nproc {args.nproc} needs {args.nproc} GPUs; {gpus} visible")
    print(f"device: {'cuda' if gpus else 'cpu'} ({os.cpu_count()} cores), torch {torch.__version__}; "
          f"DARTS_V2 {args.init_channels} ch, {args.layers} cells, global batch {args.batch_size}")
    one = launch(1, args)
    many = launch(args.nproc, args)
    print(f"1 process:  {one:8.1f} images/s")
    print(f"{args.nproc} processes: {many:8.1f} images/s")
    print(f"ratio {args.nproc} / 1: {many / one:.2f}x")


if __name__ == "__main__":
    main()
