"""Benchmark the FP-DARTS search: one search iteration (architecture step + weight step) for the
full and the fully pruned supernet, with and without channels_last, and the cost of one prune
event for s1, s2 and s1r, each with its peak memory.

Every figure is measured in a fresh process, so peak memory (RSS on the CPU, allocated memory on
CUDA) belongs to that measurement alone. Prune events that would take hours on a CPU are timed
per batch (or per Hessian row) and scaled to the event's size, which the output says.

    python bench/bench_search.py                      # both configurations
    python bench/bench_search.py --configs small --repeats 3
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import saliency as S  # noqa: E402
import utils  # noqa: E402
from architect import Architect  # noqa: E402
from model_search import Network  # noqa: E402
from plumbing import distributed  # noqa: E402

CONFIGS = {  # channels, cells, batch size, image side
    "default": dict(C=16, layers=8, batch=64, size=32),
    "small": dict(C=8, layers=5, batch=32, size=32),
}
VALID_BATCHES = 391  # 25,000 validation images in batches of 64: one s1 pass


def darts_cell_mask(model: Network) -> None:
    """Prune to a DARTS cell: 2 ops per node on 2 edges (the end state of the search)."""
    start = 0
    for i in range(model._steps):
        for mask in model.masks():
            mask[start:start + 2 + i] = False
            mask[start, 3] = mask[start + 1, 5] = True
        start += 2 + i


def timed(fn, repeats: int, device: torch.device, warmup: bool = True) -> float:
    """Median seconds of `fn()` (after one warm-up call unless told otherwise)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(config: str, what: str, channels_last: bool, repeats: int, rows: int) -> dict:
    """One measurement, in this process."""
    cfg = CONFIGS[config]
    device = distributed.init().device
    utils.set_determinism(False)  # (cuDNN's autotuner on, as in the runs)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = Network(cfg["C"], 10, cfg["layers"]).to(device, memory_format=fmt)
    def batch(n):
        x = torch.randn(n, 3, cfg["size"], cfg["size"], device=device)
        return x.contiguous(memory_format=fmt), torch.randint(0, 10, (n,), device=device)
    x, y = batch(cfg["batch"])
    if what == "iter_pruned":
        darts_cell_mask(model)
    out = {"config": config, "what": what, "channels_last": channels_last, "device": str(device)}
    if what.startswith("iter"):
        arch = Architect(model)
        opt = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9, weight_decay=3e-4)

        def iteration():
            arch.step(x, y)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
            opt.step()
        out["seconds"] = timed(iteration, repeats, device)
    elif what == "s1":  # one saliency batch, scaled to a full pass over the validation half
        per_batch = timed(lambda: S.saliency_first_order(model, [(x, y)], device), repeats, device)
        out.update(seconds=per_batch * VALID_BATCHES, per_batch=per_batch, scaled_by=VALID_BATCHES)
    elif what == "s1r":  # s1 plus 5 candidates x 31 eval batches per cell, both cells
        per_eval = timed(lambda: S.compare_candidates(model, 0, [0], lambda: [(x, y)], device),
                         repeats, device)
        out.update(per_eval_batch=per_eval, compare_seconds=per_eval * 2 * 5 * 31)
    elif what in ("s2_batched", "s2_loop"):  # Hessian rows of one s2 batch (batch 32)
        xs, ys = batch(32)
        betas = model.betas().detach()
        index = torch.arange(rows, device=device)
        loss_fn = lambda b: F.cross_entropy(model(xs, betas=b), ys)
        if what == "s2_batched":
            with S.explicit_batchnorm(model):
                seconds = timed(lambda: S.hessian_diagonal(loss_fn, betas, index, chunk=rows),
                                repeats, device, warmup=False)
        else:
            seconds = timed(lambda: S.hessian_diagonal_loop(loss_fn, betas, index), repeats,
                            device, warmup=False)
        live = sum(int(m.sum()) for m in model.masks())
        batches = math.ceil(500 / live)
        out.update(rows=rows, per_row=seconds / rows, event_seconds=seconds / rows * live * batches,
                   event_rows=live * batches)
    out["peak_mb"] = peak_memory_mb(device)
    return out


def run_isolated(*args) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON line."""
    cmd = [sys.executable, __file__, "--one", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="small,default", help="comma-separated: small, default")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (median)")
    p.add_argument("--rows", type=int, default=8, help="Hessian rows timed for s2")
    p.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        config, what, cl, repeats, rows = args.one
        print(json.dumps(measure(config, what, cl == "True", int(repeats), int(rows))))
        return
    device = distributed.init().device
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for config in args.configs.split(","):
        print(f"\n== {config}: {CONFIGS[config]}")
        iters = {}
        for what in ("iter_full", "iter_pruned"):
            for cl in (False, True):
                r = run_isolated(config, what, cl, args.repeats, args.rows)
                iters[what, cl] = r.get("seconds")
                print(f"{what:12s} channels_last={cl!s:5s} {r.get('seconds', float('nan')):8.3f} s/iter"
                      f"   peak {r.get('peak_mb', float('nan')):8.0f} MB  {r.get('error', '')}")
        for cl in (False, True):
            if iters["iter_full", cl] and iters["iter_pruned", cl]:
                ratio = iters["iter_pruned", cl] / iters["iter_full", cl]
                print(f"pruned / full (channels_last={cl}): {ratio:.1%}")
        cl = device.type == "cpu"  # the search's default memory format there
        r = run_isolated(config, "s1", cl, args.repeats, args.rows)
        nan = float("nan")
        print(f"s1 event   {r.get('seconds', nan):9.1f} s  ({r.get('per_batch', nan):.3f} s/batch x "
              f"{VALID_BATCHES})   peak {r.get('peak_mb', nan):8.0f} MB  {r.get('error', '')}")
        r1r = run_isolated(config, "s1r", cl, args.repeats, args.rows)
        if "error" not in r and "error" not in r1r:
            print(f"s1r event  {r['seconds'] + r1r['compare_seconds']:9.1f} s  (s1 + 2 cells x 5 "
                  f"candidates x 31 eval batches at {r1r['per_eval_batch']:.3f} s)   "
                  f"peak {r1r['peak_mb']:8.0f} MB")
        rb = run_isolated(config, "s2_batched", cl, 1, args.rows)
        rl = run_isolated(config, "s2_loop", cl, 1, args.rows)
        for name, r in (("batched", rb), ("loop", rl)):
            print(f"s2 {name:8s} {r.get('per_row', float('nan')):8.3f} s/Hessian row  -> event "
                  f"{r.get('event_seconds', float('nan')):9.1f} s ({r.get('event_rows', '?')} rows)"
                  f"   peak {r.get('peak_mb', float('nan')):8.0f} MB  {r.get('error', '')}")
        if "per_row" in rb and "per_row" in rl:
            speedup = rl["per_row"] / rb["per_row"]
            print(f"s2 Hessian diagonal: batched is {speedup:.1f}x faster than the loop")


if __name__ == "__main__":
    main()
