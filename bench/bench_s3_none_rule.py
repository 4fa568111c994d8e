"""How often our S3 rule for `none` and the authors' decide differently.

Ours (`--none_rule skip`, the default): `none` carries nothing, so it never counts as a node's
input for the restricted rule, it is pruned before the search ends and never derived. The
authors' (`--none_rule count`): it counts like any op, may be one of a node's 2 last ops, and an
edge left with only `none` derives `skip_connect`. For each method and seed, this runs the same
tiny S3 search on the digits under both rules (same seed: identical until the first decision
that differs) and prints per run: whether the prune sequences differ and from which event, whether
the final cells differ, and how many `none` the authors' rule left live; then the totals.

    python bench/bench_s3_none_rule.py                       # s1, s1r, vanilla x seeds 0 1 2
    python bench/bench_s3_none_rule.py --methods vanilla --seeds 0 1 2 3 4
    python bench/bench_s3_none_rule.py --steps 4             # the authors' 4-node cells (14 edges)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from plumbing import rundir  # noqa: E402

# 4 events per epoch: 3-node cells (9 edges x 3 ops = 27 -> 6 live ops per cell) take 21 events,
# 4-node cells (42 -> 8) 34.
TINY = ["--search_space", "s3", "--dataset", "digits", "--subset", "128", "--batch_size", "16",
        "--init_channels", "4", "--layers", "3", "--warmup", "2", "--prune_interval", "1", "--report_freq", "1000",
        "--no_summary", "--deterministic"]
METHODS = {"s1": ["--sal_type", "task"], "s1r": ["--sal_type", "task", "--num_compare", "5", "--iter_compare", "1"],
           "vanilla": ["--sal_type", "vanilla"]}


def search(method: str, seed: int, rule: str, out: Path, steps: int) -> dict:
    """Run one search; its prune sequence, final genotype and live `none` ops."""
    events = 3 * sum(2 + i for i in range(steps)) - 2 * steps  # 3 ops per edge down to 2 per node
    epochs = 2 + -(-events // 4) + 1  # the warm-up, the events (4 per epoch), one more epoch
    subprocess.run([sys.executable, "train_search.py", *TINY, *METHODS[method], "--seed", str(seed),
                    "--steps", str(steps), "--epochs", str(epochs),
                    "--none_rule", rule, "--out_dir", str(out)], cwd=ROOT, check=True, capture_output=True)
    (run,) = out.iterdir()
    events = [(e["cell"], e["edge"], e["op"]) for e in map(json.loads, (run / rundir.PRUNE_EVENTS).open())]
    state = torch.load(run / rundir.CHECKPOINT, map_location="cpu", weights_only=False)["model"]
    none_live = sum(int(state[f"keep_{t}"][:, 0].sum()) for t in ("normal", "reduce"))  # column 0: none
    return {"events": events, "genotype": json.loads((run / rundir.FINAL_ARCH).read_text()), "none_live": none_live}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), help="variants to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds per variant")
    p.add_argument("--steps", type=int, default=3, help="intermediate nodes per cell")
    args = p.parse_args(argv)
    totals = {m: [0, 0, 0] for m in args.methods}  # runs, prune sequences differ, cells differ
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            for seed in args.seeds:
                ours, theirs = (search(method, seed, rule, Path(tmp, f"{method}-{seed}-{rule}"), args.steps)
                                for rule in ("skip", "count"))
                first = next((i for i, (a, b) in enumerate(zip(ours["events"], theirs["events"])) if a != b), None)
                if first is None and len(ours["events"]) != len(theirs["events"]):
                    first = min(len(ours["events"]), len(theirs["events"]))
                cells = ours["genotype"] != theirs["genotype"]
                totals[method][0] += 1
                totals[method][1] += first is not None
                totals[method][2] += cells
                print(f"{method} seed {seed}: prune sequences "
                      f"{'identical' if first is None else f'differ from decision {first + 1}'} "
                      f"({len(ours['events'])} / {len(theirs['events'])} decisions), cells "
                      f"{'differ' if cells else 'identical'}, none left live by the authors' rule: "
                      f"{theirs['none_live']}", flush=True)
    for method, (runs, sequences, cells) in totals.items():
        print(f"{method}: prune sequences differ in {sequences} of {runs} searches, final cells in {cells} of {runs}")


if __name__ == "__main__":
    main()
