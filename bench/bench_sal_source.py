"""How close is the saliency accumulated over the architecture steps (`--sal_source arch_steps`) to
the authors' full pass? A real search (train_search.main, on the digits by default) prunes with the
accumulated saliency; at every prune event this script also computes the full-pass s1 on the same
supernet and prints, per event and cell type, the Spearman rank correlation of the two over the
live ops and whether both would prune the same op (the lowest |S| among the eligible ops).

With --accuracy it compares the two variants by what they find instead: for each seed, a search
with each saliency source, then the found cell trained from scratch (train.py), and the test
accuracies' mean and standard deviation per variant.

    python bench/bench_sal_source.py
    python bench/bench_sal_source.py --seed 1 -- --init_channels 8 --layers 5
    python bench/bench_sal_source.py --accuracy --seeds 0,1,2

The extra pass runs in train mode, like the search's own passes, so it also moves the BN running
statistics: the search it watches is therefore not bit for bit the one it would be alone.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import audit  # noqa: E402
import saliency as S  # noqa: E402
import train_search  # noqa: E402
from plumbing import rundir  # noqa: E402

SEARCH = ["--dataset", "digits", "--batch_size", "64", "--init_channels", "8", "--layers", "5", "--steps", "2",
          "--epochs", "22", "--warmup", "5", "--report_freq", "1000"]


def watch(records: list):
    """A prune_event that first compares the accumulated saliency with a full pass."""
    real = train_search.prune_event

    def prune_event(search, run, epoch, step):
        pruner = search.pruner
        run.sal_queue.sampler.set_epoch(10_000 + run.events)  # not the order the search draws
        full = S.saliency_first_order(search.model, run.sal_queue, run.world.device).cpu()
        accumulated = pruner.accumulated().cpu()
        for cell, mask in enumerate(search.model.masks()):
            if not pruner._unfinished(cell, mask):
                continue
            live = mask.cpu().flatten()
            eligible = pruner.space.eligible(cell, mask, pruner.restrict).cpu()
            same = S.shortlist(full[cell], eligible, 1) == S.shortlist(accumulated[cell], eligible, 1)
            rho = audit.spearman(full[cell].abs().flatten()[live], accumulated[cell].abs().flatten()[live])
            records.append({"epoch": epoch, "cell": cell, "spearman": rho, "same_op": same,
                            "steps": pruner.sal_count})
            print(f"epoch {epoch:2d} cell {cell}: Spearman {rho:+.3f} over {int(live.sum())} live ops, "
                  f"same op: {same}  ({pruner.sal_count} architecture steps accumulated)")
        return real(search, run, epoch, step)
    train_search.prune_event = prune_event


# --accuracy: 384 + 384 digits in batches of 64, an event every 3 steps (windows of 3 architecture
# steps against a pass over 6 batches), 3-node cells: 57 events (63 -> 6 ops per cell), the last in epoch 33.
ACCURACY_SEARCH = ["--dataset", "digits", "--subset", "768", "--batch_size", "64", "--init_channels", "8",
                   "--layers", "3", "--steps", "3", "--epochs", "36", "--warmup", "5", "--report_freq", "1000",
                   "--no_summary"]
# The quick start's training from scratch, on all 1,437 training digits.
RETRAIN = ["--dataset", "digits", "--no_auxiliary", "--no_cutout", "--epochs", "20", "--batch_size", "64",
           "--learning_rate", "0.05", "--init_channels", "16", "--layers", "4", "--drop_path_prob", "0.1",
           "--report_freq", "1000"]
ROOT = Path(__file__).resolve().parents[1]


def accuracy(seeds: list[int], extra: list[str]) -> None:
    """Search with each saliency source and train the found cell, per seed; test accuracies."""
    found: dict[str, list[float]] = {"pass": [], "arch_steps": []}
    with tempfile.TemporaryDirectory() as out:
        for seed in seeds:
            for source in found:
                save = f"{source}-{seed}"
                cmd = [sys.executable, "train_search.py", *ACCURACY_SEARCH, *extra, "--sal_source", source,
                       "--seed", str(seed), "--out_dir", out, "--save", save]
                subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
                (search,) = rundir.find(out, rundir.SEARCH, save)
                subprocess.run([sys.executable, "train.py", "--base_dir", str(search), *RETRAIN, "--seed", str(seed)],
                               cwd=ROOT, check=True, capture_output=True)
                (evaluation,) = rundir.find(search, rundir.EVAL)
                top1 = json.loads((evaluation / rundir.RESULTS).read_text())["final_test_top1"]
                genotype = json.loads((search / rundir.RESULTS).read_text())["genotype"]
                found[source].append(top1)
                print(f"seed {seed} --sal_source {source:10s}: test {top1:.2f}%  normal {genotype['normal']}",
                      flush=True)
    for source, accs in found.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"--sal_source {source:10s}: {statistics.mean(accs):.2f} +- {spread:.2f}% test accuracy "
              f"over seeds {', '.join(map(str, seeds))} (360 held-out digits)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="seed of the watched search")
    p.add_argument("--accuracy", action="store_true", help="search + train with both sources per seed instead")
    p.add_argument("--seeds", default="0,1,2", help="--accuracy: comma-separated seeds")
    p.add_argument("extra", nargs="*", help="flags passed on to train_search.py (after --)")
    args = p.parse_args()
    if args.accuracy:
        return accuracy([int(s) for s in args.seeds.split(",")], args.extra)
    records: list[dict] = []
    watch(records)
    with tempfile.TemporaryDirectory() as out:
        train_search.main([*SEARCH, *args.extra, "--sal_source", "arch_steps", "--seed", str(args.seed),
                           "--out_dir", out])
    rhos = [r["spearman"] for r in records]
    same = sum(r["same_op"] for r in records)
    print(f"\n{len(records)} decisions: Spearman mean {statistics.mean(rhos):.3f}, median "
          f"{statistics.median(rhos):.3f}, min {min(rhos):.3f}; same op pruned in {same} "
          f"({same / len(records):.0%})")


if __name__ == "__main__":
    main()
