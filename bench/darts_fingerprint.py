"""Fingerprints of fixed-seed DARTS-space searches, to prove a change leaves them bit for bit as
they were (or to show exactly where it does not).

Runs tiny `--deterministic` searches on the digits (s1, s1r, the larger space, s2, and one with
4-node cells) with the `train_search.py` of a checkout, and prints one JSON object: per run, the
SHA-1 of its prune history (`prune_events.jsonl`), of every epoch's genotype file and of the final
supernet weights, alphas and masks (the checkpoint's state_dict, tensor by tensor).

    python bench/darts_fingerprint.py --repo . > new.json
    git worktree add /tmp/base HEAD~1 && python bench/darts_fingerprint.py --repo /tmp/base > old.json
    python bench/darts_fingerprint.py --compare old.json new.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TINY = ["--dataset", "digits", "--subset", "64", "--batch_size", "16", "--init_channels", "4", "--layers", "3",
        "--epochs", "10", "--warmup", "1", "--prune_interval", "1", "--report_freq", "100", "--seed", "11",
        "--deterministic", "--no_summary", "--search_space", "darts"]
RUNS = {
    "s1": ["--steps", "2"],
    "s1r": ["--steps", "2", "--num_compare", "3", "--iter_compare", "1"],
    "s1r-larger": ["--steps", "2", "--num_compare", "2", "--iter_compare", "0", "--no_restrict",
                   "--num_kept_min", "4", "--num_kept_max", "4"],
    "s2": ["--steps", "2", "--sal_second", "--sal_second_budget", "20", "--hessian_chunk", "35"],
    "s1-4nodes": ["--steps", "4", "--epochs", "4"],
}


def sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def fingerprint(run_dir: Path) -> dict:
    """SHA-1s of a finished search's prune history, genotypes and final state_dict."""
    import torch

    genotypes = sorted((run_dir / "results_of_7q" / "genotype").glob("*.txt"), key=lambda p: int(p.stem))
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    return {"prune_events": sha((run_dir / "prune_events.jsonl").read_bytes()),
            "genotypes": sha(b"".join(p.read_bytes() for p in genotypes)),
            "genotype_files": len(genotypes),
            "weights": sha(b"".join(name.encode() + t.cpu().numpy().tobytes() for name, t in state.items()))}


def run_all(repo: Path, only: list[str]) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in only:
            subprocess.run([sys.executable, "train_search.py", *TINY, *RUNS[name], "--out_dir", f"{tmp}/{name}"],
                           cwd=repo, check=True, capture_output=True)
            (run_dir,) = Path(tmp, name).iterdir()
            out[name] = fingerprint(run_dir)
            print(f"{name}: {out[name]}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=".", help="checkout whose train_search.py runs")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="which searches")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two printed fingerprints")
    args = p.parse_args(argv)
    if args.compare:
        old, new = (json.loads(Path(f).read_text()) for f in args.compare)
        differ = [f"{run}.{k}" for run in old for k in old[run] if new.get(run, {}).get(k) != old[run][k]]
        print("identical" if not differ else "different: " + ", ".join(differ))
        return 1 if differ else 0
    print(json.dumps(run_all(Path(args.repo).resolve(), args.runs), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
