"""What a whole FP-DARTS search costs, against an unpruned search in the same code, and where the
time goes: architecture + weight steps, saliency, s1r's comparisons, end-of-epoch validation.

1. A real reduced search (`train_search.py` on the digits, with the authors' schedule shape:
   60 epochs, 10 warm-up, two prune events per epoch, 90 events taking each cell from 98 to 8
   ops) gives a real prune trajectory and its own time accounting (`time_seconds`).
2. Along that trajectory, at a few pruning levels, the pieces of a search are timed with the
   search's own code (costs.Pieces, the model `--plan` uses: `train_search.build`, `search_step`,
   the saliency functions, `utils.evaluate`): one iteration (with and without --sal_source
   arch_steps), one s1 saliency batch, one evaluation batch (validation and s1r's comparisons),
   one s2 Hessian row (a few timed at once) and s2's gradient batch of 32. Between levels the
   costs are interpolated linearly.
3. The schedule is integrated over those pieces, step by step (costs.integrate): 25,000 weight
   and 25,000 validation images per epoch, an s1 event one pass over the validation half, s2
   about 500 Hessian rows, s1r 5 candidates x 31 evaluation batches per cell.
4. The model is checked against the real reduced runs (the same integration, with the pieces
   timed at the runs' configuration, against the runs' own seconds).

    python bench/bench_whole_search.py                  # everything (35 minutes on a 2-core CPU)
    python bench/bench_whole_search.py --configs small --levels 0,45,90 --check s1
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_search  # noqa: E402
import utils  # noqa: E402
from plumbing import distributed, rundir  # noqa: E402
from plumbing.drivers import costs  # noqa: E402
from plumbing.drivers.costs import Method  # noqa: E402
from saliency import PruneSchedule  # noqa: E402

IMAGES = 25_000  # the CIFAR-10 halves: weights, and architecture + saliency + validation
CONFIGS = {  # channels, cells, batch size, image side (those of bench_search.py)
    "small": dict(C=8, layers=5, batch=32, size=32),
    "default": dict(C=16, layers=8, batch=64, size=32),
}
# The reduced search: the digits, 384 + 384 images in batches of 64 (6 steps per epoch, an event
# every 3 steps), cells of 4 nodes (the DARTS cell), 3 cells of 8 channels.
REDUCED = dict(C=8, layers=3, batch=64, size=8, subset=768)
REDUCED_ARGS = ["--dataset", "digits", "--subset", "768", "--batch_size", "64", "--init_channels", "8",
                "--layers", "3", "--epochs", "60", "--warmup", "10", "--report_freq", "1000", "--no_summary"]
METHODS = {  # name: what it does at an event, its flags
    "unpruned": (Method(prunes=False), ["--prune_interval", "1000000"]),  # never a point of the schedule
    "s1": (Method(), []),
    "s1r": (Method(num_compare=5), ["--num_compare", "5"]),
    "s2": (Method(second=True), ["--sal_second"]),
    "s1+arch_steps": (Method(arch_steps=True), ["--sal_source", "arch_steps"]),
    "s1r+arch_steps": (Method(num_compare=5, arch_steps=True), ["--num_compare", "5", "--sal_source", "arch_steps"]),
}
PHASES = ("steps", "saliency", "compare", "validation")


def reduced_search(method: str, seed: int, out: str) -> tuple[dict, Path]:
    """Run the reduced search of `method` (or reuse a finished one in `out`); its results and run
    directory."""
    save = f"{method.replace('+', '-')}-seed{seed}"
    for run_dir in rundir.find(out, rundir.SEARCH, save):
        if (run_dir / rundir.RESULTS).is_file():
            return json.loads((run_dir / rundir.RESULTS).read_text()), run_dir
    cmd = [sys.executable, "train_search.py", *REDUCED_ARGS, *METHODS[method][1], "--seed", str(seed),
           "--out_dir", str(Path(out).resolve()), "--save", save]
    print(f"reduced search: {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # its log is in its run directory
    (run_dir,) = rundir.find(out, rundir.SEARCH, save)
    return json.loads((run_dir / rundir.RESULTS).read_text()), run_dir


def trajectory(run_dir: Path) -> list[list[dict]]:
    """The decisions of each prune event of a search, in order (one per cell type)."""
    events: dict[tuple, list] = {}
    for line in (run_dir / rundir.PRUNE_EVENTS).read_text().splitlines():
        d = json.loads(line)
        events.setdefault((d["epoch"], d["step"]), []).append(d)
    return list(events.values())


def accounted(results: dict) -> dict[str, float]:
    """A run's seconds in the phases the model covers."""
    t = results["time_seconds"]
    return {"steps": t.get("arch", 0) + t.get("weight", 0), "saliency": t.get("saliency", 0),
            "compare": t.get("compare", 0), "validation": t.get("validation", 0)}


def pieces_of(cfg: dict, events: list[list[dict]], device: torch.device, num_classes: int = 10) -> costs.Pieces:
    """costs.Pieces of a configuration (channels, cells, batch, image side) along `events`, on
    random batches."""
    args = train_search.parse_args(
        ["--init_channels", str(cfg["C"]), "--layers", str(cfg["layers"]), "--batch_size", str(cfg["batch"])])
    world = distributed.World(device=device)
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format  # the search's default
    torch.manual_seed(0)
    run = train_search.build(args, world, num_classes, fmt)

    def batch(n: int):
        x = torch.randn(n, 3, cfg["size"], cfg["size"], device=device).contiguous(memory_format=fmt)
        return x, torch.randint(0, num_classes, (n,), device=device)
    return costs.Pieces(run, events, batch, train_search.search_step)


def measure(pieces: costs.Pieces, cfg: dict, level: int, repeats: int, hessian_rows: int) -> dict[str, float]:
    """Every piece at `level`: the iteration and s1 at the configuration's batch, s2 at 32."""
    return pieces.measure(level, repeats, batch=cfg["batch"], sal_batch=cfg["batch"], s2_batch=32,
                          hessian_rows=hessian_rows, arch_steps=True)


def integrate(pieces: costs.Pieces, method: str, *, epochs: int = 60, warmup: int = 10, steps: int, interval: int,
              sal_batches: int, eval_batches: int) -> dict[str, float]:
    """Seconds per phase (PHASES) of a whole search of `method` (costs.integrate, no loading)."""
    seconds = costs.integrate(pieces, METHODS[method][0], PruneSchedule(warmup, interval, steps, epochs),
                              sal_batches=sal_batches, eval_batches=eval_batches)
    return {"steps": seconds["arch"] + seconds["weight"], **{k: seconds[k] for k in PHASES[1:]}}


def parse_levels(text: str, last: int) -> list[int]:
    """The levels listed (capped at the last), always with the first and the last."""
    return sorted({min(int(v), last) for v in text.split(",")} | {0, last})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="small,default", help="comma-separated: small, default (or empty)")
    p.add_argument("--levels", default="0,18,36,54,72,90",
                   help="pruning levels (events done) at which pieces are timed")
    p.add_argument("--reduced_levels", default="0,10,20,30,45,60,75,90",
                   help="the same, at the reduced runs' configuration")
    p.add_argument("--check", default="s1,unpruned,s1+arch_steps",
                   help=f"reduced searches to check (s1 runs first): {', '.join(METHODS)}")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed repetitions per piece (their mean, after a warm-up call)")
    p.add_argument("--reduced_repeats", type=int, default=7, help="the same at the reduced configuration")
    p.add_argument("--hessian_rows", type=int, default=4, help="s2 Hessian rows timed (at once) per level")
    p.add_argument("--seed", type=int, default=0, help="seed of the reduced searches")
    p.add_argument("--runs_dir", help="keep the reduced searches here (finished ones found here are reused; "
                   "default: a temporary directory)")
    p.add_argument("--json", help="also write every figure to this JSON file")
    args = p.parse_args()
    checks = list(dict.fromkeys(["s1", *filter(None, args.check.split(","))]))
    for name in checks:
        if name not in METHODS:
            p.error(f"--check: unknown method {name!r}; choose from {', '.join(METHODS)}")
    device = distributed.init().device
    utils.set_determinism(False)  # (cuDNN's autotuner on, as in the runs)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    report: dict = {"device": str(device), "reduced": {}, "configs": {}}

    with tempfile.TemporaryDirectory() as temporary:
        runs = {}
        for name in checks:
            results, run_dir = reduced_search(name, args.seed, args.runs_dir or temporary)
            runs[name] = results
            if name == "s1":
                events = trajectory(run_dir)

    print(f"\n== reduced searches (digits, {REDUCED}; 60 epochs, warm-up 10, 2 events per epoch, "
          f"{len(events)} events)", flush=True)
    pieces = pieces_of(REDUCED, events, device)
    for level in parse_levels(args.reduced_levels, len(events)):
        measure(pieces, REDUCED, level, args.reduced_repeats, args.hessian_rows)
    steps = REDUCED["subset"] // 2 // REDUCED["batch"]
    for name, results in runs.items():
        model = integrate(pieces, name, steps=steps, interval=steps // 2, sal_batches=steps, eval_batches=steps)
        real = accounted(results)
        total_model, total_real = sum(model.values()), sum(real.values())
        report["reduced"][name] = {"model": model, "run": real, "run_wall": results["search_cost_seconds"]}
        print(f"{name:15s} run {total_real:6.1f} s of {results['search_cost_seconds']:6.1f} s wall "
              f"({', '.join(f'{k} {v:.1f}' for k, v in real.items())})  model {total_model:6.1f} s  "
              f"model/run {total_model / total_real:5.2f}", flush=True)
    if "unpruned" in runs:
        base = sum(accounted(runs["unpruned"]).values())
        for name, r in report["reduced"].items():
            print(f"  {name:15s} run / unpruned run: {sum(r['run'].values()) / base:.2f}")

    for config in filter(None, args.configs.split(",")):
        cfg = CONFIGS[config]
        steps = math.ceil(IMAGES / cfg["batch"])
        print(f"\n== {config}: {cfg}; {steps} steps per epoch, an s1 event {steps} batches of {cfg['batch']}",
              flush=True)
        pieces = pieces_of(cfg, events, device)
        print(f"{'level':>5s} {'live':>4s} {'iter':>7s} {'iter_acc':>8s} {'s1':>7s} {'s1_s2':>7s} "
              f"{'h_row':>7s} {'eval':>7s}  (seconds)")
        for level in parse_levels(args.levels, len(events)):
            s = measure(pieces, cfg, level, args.repeats, args.hessian_rows)
            print(f"{level:5d} {pieces.live[level]:4d} {s['arch'] + s['weight']:7.3f} "
                  f"{s['arch_acc'] + s['weight']:8.3f} {s['s1']:7.3f} {s['s1_s2']:7.3f} {s['hessian_row']:7.3f} "
                  f"{s['eval']:7.3f}", flush=True)
        table = {name: integrate(pieces, name, steps=steps, interval=steps // 2, sal_batches=steps,
                                 eval_batches=steps) for name in METHODS}
        unpruned = sum(table["unpruned"].values())
        print(f"{'method':15s} {'total h':>8s} {'x unpruned':>10s} {'steps h':>8s} {'saliency h':>10s} "
              f"{'compare h':>9s} {'valid h':>8s}")
        for name, t in table.items():
            print(f"{name:15s} {sum(t.values()) / 3600:8.2f} {sum(t.values()) / unpruned:10.2f} "
                  f"{t['steps'] / 3600:8.2f} {t['saliency'] / 3600:10.2f} {t['compare'] / 3600:9.2f} "
                  f"{t['validation'] / 3600:8.2f}")
        report["configs"][config] = {"pieces": pieces.seconds, "table": table}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
