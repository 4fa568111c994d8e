"""Fingerprints of fixed-seed searches and retrains, to prove a change leaves them bit for bit as
they were (or to show exactly where it does not).

Runs tiny `--deterministic` searches on the digits with the `train_search.py` of a checkout: in
the DARTS space (s1, s1r, the larger space, s2, and one with 4-node cells) and, with
`--runs all`, in S3, S4 and NAS-Bench-201 too, then retrains the s1 cell with `train.py` and the
NAS-Bench-201 cell with `train_nb201.py`. It prints one JSON object: per run, the SHA-1 of the
files a change must leave alone (prune history, every epoch's genotype, mixing-weight and
saliency files, results.csv) and of the final weights, alphas and masks (the checkpoint's
state_dict, tensor by tensor).

    python bench/fingerprint.py --repo . > new.json                   # the DARTS space
    git worktree add /tmp/base HEAD~1 && python bench/fingerprint.py --repo /tmp/base > old.json
    python bench/fingerprint.py --compare old.json new.json
    python bench/fingerprint.py --repo . --runs all > new_all.json   # every space, and retrains
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plumbing import rundir  # noqa: E402  (this checkout's names read the runs of any checkout: they do not change)

TINY = ["--dataset", "digits", "--subset", "64", "--batch_size", "16", "--init_channels", "4", "--layers", "3",
        "--epochs", "10", "--warmup", "1", "--prune_interval", "1", "--report_freq", "100", "--seed", "11",
        "--deterministic", "--no_summary"]
RUNS = {  # the DARTS space
    "s1": ["--search_space", "darts", "--steps", "2"],
    "s1r": ["--search_space", "darts", "--steps", "2", "--num_compare", "3", "--iter_compare", "1"],
    "s1r-larger": ["--search_space", "darts", "--steps", "2", "--num_compare", "2", "--iter_compare", "0",
                   "--no_restrict", "--num_kept_min", "4", "--num_kept_max", "4"],
    "s2": ["--search_space", "darts", "--steps", "2", "--sal_second", "--sal_second_budget", "20",
           "--hessian_chunk", "35"],
    "s1-4nodes": ["--search_space", "darts", "--steps", "4", "--epochs", "4"],
}
OTHER_SPACES = {
    "s3-s1r": ["--search_space", "s3", "--steps", "2", "--num_compare", "2", "--iter_compare", "0", "--epochs", "8"],
    "s4-s2": ["--search_space", "s4", "--steps", "2", "--sal_second", "--sal_second_budget", "10",
              "--hessian_chunk", "20", "--epochs", "6"],
    "nb201-s1r": ["--search_space", "nb201", "--layers", "1", "--num_compare", "2", "--iter_compare", "0",
                  "--epochs", "10"],
}
# The retrains: (script, the search whose final cell they train, flags).
RETRAINS = {
    "train-s1": ("train.py", "s1", ["--dataset", "digits", "--epochs", "2", "--batch_size", "64",
                                    "--init_channels", "4", "--layers", "3", "--no_auxiliary", "--report_freq", "100",
                                    "--seed", "2", "--deterministic"]),
    "train_nb201": ("train_nb201.py", "nb201-s1r", ["--dataset", "digits", "--epochs", "2", "--batch_size", "64",
                                                    "--init_channels", "4", "--layers", "1", "--report_freq", "100",
                                                    "--seed", "2", "--deterministic"]),
}


def sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def epoch_files(run_dir: Path, kind: str) -> bytes:
    return b"".join(rundir.epoch_path(run_dir, kind, e).read_bytes() for e in rundir.epochs(run_dir, kind))


def weights(checkpoint: Path) -> str:
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    return sha(b"".join(name.encode() + t.cpu().numpy().tobytes() for name, t in state.items()))


def fingerprint(run_dir: Path) -> dict:
    """SHA-1s of a finished search's prune history, per-epoch files and final state_dict."""
    return {"prune_events": sha((run_dir / rundir.PRUNE_EVENTS).read_bytes()),
            "genotypes": sha(epoch_files(run_dir, "genotype")), "genotype_files": len(rundir.epochs(run_dir)),
            "alphas": sha(epoch_files(run_dir, "alpha")), "saliency_files": sha(epoch_files(run_dir, "sal")),
            "results_csv": sha(rundir.results_csv(run_dir).read_bytes()),
            "weights": weights(run_dir / rundir.CHECKPOINT)}


def retrain_fingerprint(eval_dir: Path) -> dict:
    results = json.loads((eval_dir / rundir.RESULTS).read_text())
    return {"weights": weights(eval_dir / rundir.CHECKPOINT), "final_test_top1": results["final_test_top1"]}


def run_all(repo: Path, only: list[str]) -> dict:
    out, dirs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in only:
            if name in RETRAINS:
                script, search, flags = RETRAINS[name]
                subprocess.run([sys.executable, script, "--base_dir", str(dirs[search]), *flags,
                                "--out_dir", f"{tmp}/{name}"], cwd=repo, check=True, capture_output=True)
                (eval_dir,) = Path(tmp, name).iterdir()
                out[name] = retrain_fingerprint(eval_dir)
            else:
                flags = RUNS.get(name) or OTHER_SPACES[name]
                subprocess.run([sys.executable, "train_search.py", *TINY, *flags, "--out_dir", f"{tmp}/{name}"],
                               cwd=repo, check=True, capture_output=True)
                (dirs[name],) = Path(tmp, name).iterdir()
                out[name] = fingerprint(dirs[name])
            print(f"{name}: {out[name]}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=".", help="checkout whose train_search.py runs")
    every = [*RUNS, *OTHER_SPACES, *RETRAINS]
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=[*every, "all"],
                   help="which searches and retrains (all: every one; a retrain needs its search listed before it)")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two printed fingerprints")
    args = p.parse_args(argv)
    if args.compare:
        old, new = (json.loads(Path(f).read_text()) for f in args.compare)
        differ = [f"{run}.{k}" for run in old for k in old[run] if new.get(run, {}).get(k) != old[run][k]]
        print("identical" if not differ else "different: " + ", ".join(differ))
        return 1 if differ else 0
    runs = every if "all" in args.runs else args.runs
    print(json.dumps(run_all(Path(args.repo).resolve(), runs), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
