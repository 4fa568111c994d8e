"""How close is the saliency accumulated over the architecture steps (`--sal_source arch_steps`) to
the authors' full pass? A real search (train_search.main, on the digits by default) prunes with the
accumulated saliency; at every prune event this script also computes the full-pass s1 on the same
supernet and prints, per event and cell type, the Spearman rank correlation of the two over the
live ops and whether both would prune the same op (the lowest |S| among the eligible ops).

    python bench/bench_sal_source.py
    python bench/bench_sal_source.py --seed 1 -- --init_channels 8 --layers 5

The extra pass runs in train mode, like the search's own passes, so it also moves the BN running
statistics: the search it watches is therefore not bit for bit the one it would be alone.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import saliency as S  # noqa: E402
import train_search  # noqa: E402

SEARCH = ["--dataset", "digits", "--batch_size", "64", "--init_channels", "8", "--layers", "5", "--steps", "2",
          "--epochs", "22", "--warmup", "5", "--report_freq", "1000"]


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of the values of a 1-d tensor (ties broken by position)."""
    out = torch.empty_like(x)
    out[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two 1-d tensors."""
    ra, rb = ranks(a.double()), ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def watch(records: list):
    """A prune_event that first compares the accumulated saliency with a full pass."""
    real = train_search.prune_event

    def prune_event(run, epoch, step):
        pruner = run.pruner
        run.sal_queue.sampler.set_epoch(10_000 + run.events)  # not the order the search draws
        full = S.saliency_first_order(run.model, run.sal_queue, run.world.device).cpu()
        accumulated = pruner.accumulated().cpu()
        for cell, mask in enumerate(run.model.masks()):
            if not pruner._unfinished(cell, mask):
                continue
            live = mask.cpu().flatten()
            eligible = pruner.space.eligible(cell, mask, pruner.restrict).cpu()
            same = S.shortlist(full[cell], eligible, 1) == S.shortlist(accumulated[cell], eligible, 1)
            rho = spearman(full[cell].abs().flatten()[live], accumulated[cell].abs().flatten()[live])
            records.append({"epoch": epoch, "cell": cell, "spearman": rho, "same_op": same,
                            "steps": pruner.sal_count})
            print(f"epoch {epoch:2d} cell {cell}: Spearman {rho:+.3f} over {int(live.sum())} live ops, "
                  f"same op: {same}  ({pruner.sal_count} architecture steps accumulated)")
        return real(run, epoch, step)
    train_search.prune_event = prune_event


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="seed of the watched search")
    p.add_argument("extra", nargs="*", help="flags passed on to train_search.py (after --)")
    args = p.parse_args()
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
