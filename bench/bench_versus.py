"""Speed against another checkout, interleaved: a search iteration (`train_search.search_step` as
each checkout builds it) and a tiny end-to-end search, each in a fresh process, the two checkouts
taking turns for `--rounds` rounds; prints the medians and their ratio as one JSON object.

    git worktree add /tmp/base a77c9d6
    python bench/bench_versus.py --base /tmp/base --rounds 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # the supernet of bench_search.py's configurations
    "small": ["--init_channels", "8", "--layers", "5", "--batch_size", "32"],
    "default": ["--init_channels", "16", "--layers", "8", "--batch_size", "64"],
}
TINY = ["--dataset", "digits", "--subset", "64", "--batch_size", "16", "--init_channels", "4", "--layers", "3",
        "--steps", "2", "--epochs", "3", "--warmup", "1", "--prune_interval", "1", "--report_freq", "100",
        "--seed", "3", "--no_summary"]


def iteration_seconds(checkout: str, config: str, steps: int) -> float:
    """(In the checkout's own process) the median seconds of `steps` search iterations after one
    warm-up, on random CIFAR-sized batches."""
    sys.path.insert(0, checkout)
    import torch

    try:
        from plumbing import distributed
    except ImportError:  # a checkout from before the plumbing package
        import distributed
    import train_search
    import utils

    torch.manual_seed(0)
    args = train_search.parse_args(["--dataset", "cifar10", *CONFIGS[config], "--seed", "0"])
    utils.set_determinism(False)  # (as the runs set cuDNN)
    # (on the CPU, as the search's default: channels_last; older checkouts have no utils.memory_format)
    run = train_search.build(args, distributed.World(), 10, torch.channels_last)
    n = args.batch_size
    batch = lambda: (torch.randn(n, 3, 32, 32, device="cpu"), torch.randint(0, 10, (n,), device="cpu"))
    (x, y), (xv, yv) = batch(), batch()
    meters = [utils.AverageMeter(), utils.AverageMeter()]
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        train_search.search_step(run, x, y, xv, yv, 0.025, meters, f"step {step}")
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def search_seconds(checkout: str) -> float:
    """Wall seconds of a tiny digits search with the checkout's train_search.py."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(Path(checkout) / "train_search.py"), *TINY, "--out_dir", out],
                       cwd=checkout, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the other checkout (a git worktree)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of alternating measurements")
    p.add_argument("--configs", default="small", help="comma-separated search-iteration configurations")
    p.add_argument("--steps", type=int, default=5, help="timed iterations per measurement (median)")
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(iteration_seconds(args.one[0], args.one[1], int(args.one[2])))
        return
    checkouts = {"this": str(ROOT), "base": str(Path(args.base).resolve())}
    seconds: dict = {}
    for _ in range(args.rounds):
        for name, checkout in checkouts.items():
            for config in args.configs.split(","):
                out = subprocess.run([sys.executable, __file__, "--base", args.base, "--one", checkout, config,
                                      str(args.steps)], check=True, capture_output=True, text=True, cwd=checkout)
                seconds.setdefault(f"iteration_{config}", {}).setdefault(name, []).append(float(out.stdout))
            seconds.setdefault("tiny_search", {}).setdefault(name, []).append(search_seconds(checkout))
    report = {what: {**{name: statistics.median(v) for name, v in runs.items()}, "runs": runs,
                     "ratio_this_over_base": statistics.median(runs["this"]) / statistics.median(runs["base"])}
              for what, runs in seconds.items()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
