"""Choose among searched genotypes without the test set: successive halving of short retrains.

The candidates are the genotypes of several search runs (their final epoch, or the epochs given
by `--genotype_names`). Round k retrains every remaining candidate from scratch with train.py for
`--budgets[k]` epochs on the training set minus a held-out `--val_portion`, ranks them by the
final validation accuracy, and keeps the best 1/`--eta` of them (the authors planned
20 -> 60 -> 600 epochs). The test split is never opened (train.py `--no_test`). The winner is
printed as the flags that train it on ImageNet and on CIFAR-10, and `selection.json` records
every round.

    python scripts/select_genotype.py ckpt/search-EXP-* --budgets 20 60 600 \\
        --train_args "--dataset cifar10 --data ../data --batch_size 96"
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import utils  # noqa: E402
from genotypes import load_genotype_of  # noqa: E402
from plumbing import rundir  # noqa: E402
from plumbing.cli import ArgumentParser, UserError  # noqa: E402
from plumbing.fileio import write_json  # noqa: E402

log = utils.logger
# Flags this script sets on every retrain; --train_args may not give them.
OWN_FLAGS = ("--mode", "--epochs", "--val_portion", "--no_test", "--out_dir", "--base_dir",
             "--genotype_names", "--arch", "--genotype", "--resume", "--seed", "--save")
RECORDED = ("name", "run", "epoch", "valid_top1", "valid_loss", "retrain_dir")


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="search run directories (made by train_search.py)")
    p.add_argument("--genotype_names", type=int, nargs="+", default=[-1],
                   help="epochs of each run to consider (negative counts from the last)")
    p.add_argument("--budgets", type=int, nargs="+", default=[20, 60, 600],
                   help="retraining epochs of each round")
    p.add_argument("--eta", type=int, default=3, help="each round keeps the best 1/eta of the candidates")
    p.add_argument("--keep", type=int, nargs="+", default=None,
                   help="candidates kept after each round instead of 1/eta (the authors planned 6, then 1)")
    p.add_argument("--val_portion", type=float, default=0.1,
                   help="share of the training set held out to rank the candidates on")
    p.add_argument("--seed", type=int, default=0, help="seed of every retrain")
    p.add_argument("--out_dir", default="ckpt/selection", help="folder of the retrains and selection.json")
    p.add_argument("--train_args", default="",
                   help="more train.py flags, as one string (data set, network size, ...)")
    return p


def candidates(runs: list[str], names: list[int]) -> list[dict]:
    """One candidate per distinct genotype: {name, run, epoch, genotype}; repeats are dropped."""
    found, seen = [], set()
    for run in runs:
        for name in names:
            genotype, path = load_genotype_of(run, name)
            if repr(genotype) not in seen:
                seen.add(repr(genotype))
                found.append({"name": f"c{len(found)}", "run": str(run), "epoch": int(Path(path).stem),
                              "genotype": genotype._asdict()})
    return found


def retrain(candidate: dict, epochs: int, args: argparse.Namespace, out_dir: Path) -> dict:
    """Train one candidate for `epochs` with train.py (a process of its own, started in the current
    directory) on the held-out split; the results.json of the run directory it made."""
    argv = ["--save", candidate["name"], "--base_dir", candidate["run"],
            "--genotype_names", str(candidate["epoch"]),
            "--epochs", str(epochs), "--val_portion", str(args.val_portion), "--no_test",
            "--seed", str(args.seed), "--out_dir", str(out_dir), *shlex.split(args.train_args)]
    # A rerun of an interrupted selection goes on where it stopped: a candidate whose retrain
    # finished with these flags is not trained again, one that has a checkpoint is resumed.
    earlier = [d for d in rundir.find(out_dir, rundir.EVAL, candidate["name"])
               if same_retrain(d, candidate, epochs, args)]
    done = [d for d in earlier if (d / rundir.RESULTS).is_file()]
    if done:
        log.info("%s: retrained already in %s", candidate["name"], done[-1])
        return json.loads((done[-1] / rundir.RESULTS).read_text())
    started = [d for d in earlier if (d / rundir.CHECKPOINT).is_file()]
    resume = ["--resume", str(started[-1])] if started else []
    before = set(rundir.find(out_dir, rundir.EVAL, candidate["name"])) - set(started[-1:])
    code = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv, *resume]).returncode
    made = [d for d in rundir.find(out_dir, rundir.EVAL, candidate["name"])
            if d not in before and (d / rundir.RESULTS).is_file()]
    if code or len(made) != 1:
        raise UserError(f"train.py failed on {candidate['name']} ({candidate['run']}, epoch "
                        f"{candidate['epoch']}) with exit code {code}: {shlex.join(argv)}")
    return json.loads((made[0] / rundir.RESULTS).read_text())


def same_retrain(run_dir: Path, candidate: dict, epochs: int, args: argparse.Namespace) -> bool:
    """Whether `run_dir` retrained `candidate` for `epochs` as this selection does (its args.json:
    the cell, the epochs, the seed, the held-out share; --train_args must be the same as before)."""
    try:
        saved = json.loads((run_dir / rundir.ARGS).read_text())
    except (OSError, ValueError):
        return False
    return (saved.get("base_dir"), saved.get("genotype_names"), saved.get("epochs"), saved.get("seed"),
            saved.get("val_portion")) == (candidate["run"], [candidate["epoch"]], epochs, args.seed, args.val_portion)


def successive_halving(pool: list[dict], args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """Run the rounds; return the winner and one record per round."""
    rounds = []
    for k, budget in enumerate(args.budgets):
        for c in pool:
            results = retrain(c, budget, args, Path(args.out_dir) / f"round{k}-{budget}ep")
            c["valid_top1"], c["valid_loss"] = results["final_valid_top1"], results["final_valid_loss"]
            c["retrain_dir"] = results["run_dir"]
        pool = sorted(pool, key=lambda c: (-c["valid_top1"], c["valid_loss"]))  # stable: ties keep order
        rounds.append({"epochs": budget, "ranking": [{key: c[key] for key in RECORDED} for c in pool]})
        log.info("round %d (%d epochs): %s", k, budget,
                 ", ".join(f"{Path(c['run']).name}@{c['epoch']}: {c['valid_top1']:.2f}%" for c in pool))
        keep = args.keep[k] if args.keep and k < len(args.keep) else math.ceil(len(pool) / args.eta)
        pool = pool[:max(1, keep)]
        if len(pool) == 1:
            break
    return pool[0], rounds


def main(argv: list[str] | None = None) -> dict:
    """Select a genotype; print and return {run, epoch, genotype, rounds, ...}."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.val_portion < 1:
        parser.error(f"--val_portion must be in (0, 1), got {args.val_portion}")
    if args.eta < 2 or min(args.budgets) < 1:
        parser.error("--eta must be at least 2 and every budget at least 1 epoch")
    clash = [f for f in OWN_FLAGS if f in shlex.split(args.train_args)]
    if clash:
        parser.error(f"--train_args may not set {' '.join(clash)}: select_genotype.py sets them")
    utils.setup_logging(None)
    pool = candidates(args.runs, args.genotype_names)
    log.info("%d candidate genotypes from %d runs", len(pool), len(args.runs))
    best, rounds = successive_halving(pool, args)
    selection = {"run": best["run"], "epoch": best["epoch"], "genotype": best["genotype"],
                 "valid_top1": best["valid_top1"], "val_portion": args.val_portion, "rounds": rounds,
                 "train_imagenet": f"--base_path {best['run']} --genotype_name {best['epoch']}",
                 "train": f"--base_dir {best['run']} --genotype_names {best['epoch']}"}
    write_json(Path(args.out_dir) / rundir.SELECTION, selection)
    log.info("selected %s, epoch %d (validation top-1 %.2f%%); written to %s", best["run"], best["epoch"],
             best["valid_top1"], Path(args.out_dir) / rundir.SELECTION)
    print(f"python train_imagenet.py --mode train --auxiliary {selection['train_imagenet']}")
    print(f"python train.py --mode train --cutout --auxiliary {selection['train']}")
    return selection


if __name__ == "__main__":
    utils.run_cli(main)
