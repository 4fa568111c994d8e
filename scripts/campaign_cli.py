"""Run the paper's jobs as a campaign: the searches (the DARTS-space variants x seeds, or s1r in
RobustDARTS' spaces and NAS-Bench-201 x data sets x seeds), the retrain of every search's cell,
the selection rounds and the ImageNet retrain of the winner, each after the jobs it needs. On this
machine (one job per listed GPU, or N CPU processes, at a time) or as SLURM job arrays through
submitit; a rerun skips finished runs and resumes interrupted ones (campaign.py, the runner).

The run scripts (scripts/run_*.sh) call it through scripts/launch.sh;
`python scripts/campaign_cli.py --help` lists its flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plumbing import rundir  # noqa: E402
from plumbing.cli import ArgumentParser, UserError, duration, run_cli, table  # noqa: E402
from plumbing.drivers import campaign  # noqa: E402
from saliency import CRITERIA  # noqa: E402

# The paper's variants (the flags that differ from train_search.py's defaults).
PAPER = {
    "s1": ["--sal_type", "task"],  # first-order Taylor saliency of the search loss
    "s2": ["--sal_type", "task", "--sal_second"],  # plus the exact Hessian-diagonal term
    "s1r": ["--sal_type", "task", "--num_compare", "5"],  # the 5 lowest re-checked by removal
    "s1r_larger": ["--sal_type", "task", "--num_compare", "5", "--no_restrict"],  # the larger space
}


def variants() -> dict[str, list[str]]:
    """The paper's variants, and a variant for every other registered saliency criterion (by its
    label; run only when --variants names it)."""
    return {**PAPER, **{c.label: ["--sal_type", c.name] for c in CRITERIA.values() if not c.taylor}}


# The other spaces the authors searched with s1r, each on its data sets.
SPACES = {**{s: ("cifar10", "cifar100", "svhn") for s in ("s1", "s2", "s3", "s4")},
          "nb201": ("cifar10", "cifar100", "imagenet16")}
BENCHMARK = "nb201"  # its searches get the benchmark's files; its cells are not trained by train.py
STAGES = ("search", "retrain", "select", "imagenet")
SELECT = ["--budgets", "20", "60", "600", "--keep", "6", "1"]  # the authors' planned rounds


class Search(NamedTuple):
    """One kind of search (a job per seed): its run directories' name, flags and retrain flags."""
    save: str  # run directories <ckpt>/search-<save>-<time>-task<seed>
    flags: list[str]
    retrain: list[str] | None  # None: no retrain by train.py


def build_parser() -> argparse.ArgumentParser:
    """The campaign's flags."""
    p = ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_argument_group("what to run")
    g.add_argument("--stages", nargs="+", choices=STAGES, default=["search", "retrain"],
                   help="search (x seeds), retrain (each search's cell), "
                        "select (over all searches), imagenet (the winner)")
    g.add_argument("--variants", nargs="+", choices=list(variants()), default=list(PAPER),
                   help="search variants in the DARTS space: the paper's, or other registered criteria")
    g.add_argument("--spaces", nargs="+", choices=list(SPACES), default=None,
                   help="search with s1r in these spaces (on --datasets) instead of --variants; "
                        "retrain in RobustDARTS' sizes")
    g.add_argument("--datasets", nargs="+", default=None,
                   help="--spaces: data sets per space "
                        "(default: cifar10 cifar100 svhn; nb201: cifar10 cifar100 imagenet16)")
    g.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="search seeds (also the run directory's task number)")
    g.add_argument("--runs", nargs="*", default=[],
                   help="without the search stage: the search run directories to retrain / select among")
    g.add_argument("--epoch", type=int, default=-1,
                   help="retrain: which epoch's genotype of each search (-1: the final one)")
    g.add_argument("--retrain_seed", type=int, default=0, help="seed of every retrain")
    g.add_argument("--layers", type=int, default=None,
                   help="retrain: cells of the network (default: 20, or RobustDARTS' with --spaces)")
    g.add_argument("--init_channels", type=int, default=None,
                   help="retrain: initial channels (default: 36, or RobustDARTS' with --spaces)")
    g.add_argument("--data", default="../data",
                   help="folder of the data sets of the searches, retrains and selection rounds")
    g.add_argument("--nb201_splits", default=None,
                   help="NAS-Bench-201 searches: the benchmark's split files (train_search.py --nb201_splits)")
    g.add_argument("--nb201_file", default=None,
                   help="NAS-Bench-201 searches: the benchmark file (train_search.py --nb201_file)")
    g.add_argument("--imagenet_data", default="../data/imagenet", help="ImageNet folder of the imagenet stage")
    g.add_argument("--imagenet_batch_size", type=int, default=768,
                   help="global batch of the ImageNet retrain (the authors')")
    g.add_argument("--base_path", default=None,
                   help="imagenet without select: the search run directory whose cell to train")
    g.add_argument("--genotype_name", type=int, default=-1,
                   help="imagenet without select: the epoch of --base_path's cell (-1: the final one)")
    g.add_argument("--ckpt", default="ckpt", help="folder of the searches' run directories")
    g.add_argument("--campaign", default=None,
                   help="folder of campaign.json and the jobs' logs (default: CKPT/campaign)")
    g.add_argument("--search_args", default="",
                   help="more train_search.py flags for every search, as one string")
    g.add_argument("--retrain_args", default="",
                   help="more train.py flags for every retrain and selection round, as one string")
    g = p.add_argument_group("where to run it")
    g.add_argument("--executor", choices=("machine", "slurm", "submitit_local"), default="machine",
                   help="machine: here (--gpus, --jobs); slurm: SLURM job arrays via submitit; "
                        "submitit_local: submitit, here")
    g.add_argument("--gpus", default=None,
                   help='machine: the GPU ids to use, e.g. "0 1 2 3": one job per GPU at a time (CUDA_VISIBLE_DEVICES)')
    g.add_argument("--jobs", type=int, default=1,
                   help="machine without --gpus: jobs side by side as CPU processes")
    g.add_argument("--nproc", type=int, default=1,
                   help="GPUs (torchrun processes) of each search and retrain")
    g.add_argument("--imagenet_gpus", type=int, default=8,
                   help="GPUs (torchrun processes) of the ImageNet retrain")
    g.add_argument("--partition", default=None, help="slurm: the partition")
    g.add_argument("--time", type=int, default=2880,
                   help="slurm / submitit_local: time limit of each job in minutes")
    g.add_argument("--cpus_per_task", type=int, default=None, help="slurm: CPU cores per job")
    g.add_argument("--mem", default=None, help='slurm: memory per node, e.g. "64G"')
    g.add_argument("--account", default=None, help="slurm: the account to charge")
    g.add_argument("--qos", default=None, help="slurm: the quality of service")
    g.add_argument("--dry_run", action="store_true",
                   help="print the jobs (and with slurm, each array's sbatch header) and run nothing")
    g.add_argument("--plan", action="store_true",
                   help="run nothing: plan every job (its script's --plan), print one table, "
                        "write them to CAMPAIGN/plans/")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked (one line for what cannot work)."""
    p = build_parser()
    args = p.parse_args(argv)
    stages = set(args.stages)
    if args.gpus is not None and args.executor != "machine":
        p.error("--gpus is for --executor machine (SLURM assigns the GPUs)")
    if args.jobs < 1 or args.nproc < 1 or args.imagenet_gpus < 1:
        p.error("--jobs, --nproc and --imagenet_gpus must be positive")
    if "search" not in stages and {"retrain", "select"} & stages and not args.runs:
        p.error("--stages without search need --runs (the search run directories)")
    if args.spaces and {"select", "imagenet"} & stages:
        p.error("--spaces campaigns have the search and retrain stages only")
    if "imagenet" in stages and "select" not in stages and not args.base_path:
        p.error("--stages imagenet without select needs --base_path (the search run directory)")
    args.slots = args.gpus.split() if args.gpus else [None] * args.jobs
    wide = max([args.nproc] + ([args.imagenet_gpus] if "imagenet" in stages else []))
    if args.gpus and wide > len(args.slots):
        p.error(f"a job asks for {wide} GPUs but --gpus lists {len(args.slots)}")
    return args


def retrain_flags(args: argparse.Namespace, dataset: str | None) -> list[str]:
    """train.py flags of a retrain: the DARTS protocol (batch 96) on `dataset` (None: train.py's
    CIFAR-10), in RobustDARTS' size for it (DARTS' on CIFAR-10) unless --layers/--init_channels."""
    layers, channels = (20, 36) if dataset in (None, "cifar10") else (8, 16)
    return ["--genotype_names", str(args.epoch), *(["--dataset", dataset] if dataset else []),
            "--data", args.data, "--seed", str(args.retrain_seed), "--layers", str(args.layers or layers),
            "--init_channels", str(args.init_channels or channels), "--batch_size", "96",
            *shlex.split(args.retrain_args)]


def searches(args: argparse.Namespace) -> list[Search]:
    """The kinds of search asked for: the variants, or s1r in every space on every data set."""
    if not args.spaces:
        return [Search(v, [*variants()[v], "--data", args.data], retrain_flags(args, None))
                for v in args.variants]
    found = []
    for space in args.spaces:
        bench = space == BENCHMARK
        files = [("--nb201_splits", args.nb201_splits), ("--nb201_file", args.nb201_file)] if bench else []
        for dataset in args.datasets or SPACES[space]:
            flags = ["--search_space", space, "--dataset", dataset, *PAPER["s1r"],
                     *(x for flag, value in files if value for x in (flag, value)), "--data", args.data]
            found.append(Search(f"{space}_{dataset}", flags, None if bench else retrain_flags(args, dataset)))
    return found


def searched_dataset(run: str) -> str:
    """The data set of a search of --spaces, from its run directory's name."""
    save = rundir.save_of(run) if rundir.kind_of(run) == rundir.SEARCH else None
    if not save or "_" not in save:
        raise UserError(f"{run}: not a search of --spaces (named search-<space>_<dataset>-<time>-task<k>)")
    return save.split("_", 1)[1]


def campaign_jobs(args: argparse.Namespace) -> list[campaign.Job]:
    """The jobs of the stages asked for, in dependency order."""
    ckpt, jobs, retrains = Path(args.ckpt), [], []
    if "search" in args.stages:
        for search in searches(args):
            for seed in args.seeds:
                name = f"{rundir.SEARCH}-{search.save}-seed{seed}"  # (job names say what they run)
                jobs.append(campaign.search_job(name, f"{rundir.SEARCH}-{search.save}", search.flags, save=search.save,
                                                seed=seed, ckpt=ckpt, extra=shlex.split(args.search_args),
                                                gpus=args.nproc))
                retrains += [(name, search.retrain)] if search.retrain is not None else []
        searched = [job.name for job in jobs]
    else:
        searched = [Path(r) for r in args.runs]
        retrains = [(r, retrain_flags(args, searched_dataset(r) if args.spaces else None)) for r in searched]
    if "retrain" in args.stages:
        jobs += [campaign.retrain_job(f"retrain-{Path(s).name}", s, flags, args.nproc)
                 for s, flags in retrains]
    if "select" in args.stages:
        train_args = f"--dataset cifar10 --data {args.data} {args.retrain_args}".strip()
        jobs.append(campaign.select_job(searched, ckpt / "selection", [*SELECT, "--train_args", train_args]))
    if "imagenet" in args.stages:
        cell = None if "select" in args.stages else (args.base_path, str(args.genotype_name))
        # the mobile setting (train_imagenet.py's defaults) on the authors' global batch
        flags = ["--mode", "train", "--auxiliary", "--batch_size", str(args.imagenet_batch_size), "--sync_bn",
                 "--data", args.imagenet_data]
        jobs.append(campaign.imagenet_job(flags, args.imagenet_gpus, cell))
    return jobs


def slurm(args: argparse.Namespace) -> campaign.Slurm:
    """The SLURM settings from the flags of the same names."""
    return campaign.Slurm(**{f.name: getattr(args, f.name) for f in dataclasses.fields(campaign.Slurm)})


def dry_run(jobs: list[campaign.Job], args: argparse.Namespace) -> None:
    """Print every job: its name, what it comes after, and its command (placeholders for run
    directories that do not exist yet); with slurm, each array's sbatch header."""
    done = {j.name: Path(f"<run directory of {j.name}>") for j in jobs}
    for job in jobs:
        what, argv, run_dir = campaign.plan(job, done)
        after = f" after {', '.join(job.after)}" if job.after else ""
        sys.stdout.write(f"# {job.name} ({job.gpus} GPU{'s' if job.gpus > 1 else ''}{after}): "
                         + (f"finished in {run_dir}, skipped" if what == "skip" else what) + "\n")
        if argv:
            sys.stdout.write(shlex.join(campaign.command(job, argv, shown=True)) + "\n")
    if args.executor == "slurm":
        from submitit.slurm.slurm import _make_sbatch_string

        for group in dict.fromkeys(j.group for j in jobs):
            members = [j for j in jobs if j.group == group]
            params = slurm(args).parameters(group, members[0].gpus, len(members))
            sys.stdout.write(f"# sbatch header of the array {group}:\n")
            header = _make_sbatch_string(command="<submitit's job runner>", map_count=len(members),
                                         folder=str(campaign_folder(args) / "submitit" / "%j"), **params)
            sys.stdout.write(header.split("# command")[0].strip() + "\n")


STAND_IN = ["--arch", "DARTS_V2"]  # the cell a retrain plans with while its search has not run
CELL_FLAGS = {"--base_dir", "--genotype_names", "--base_path", "--genotype_name"}


def stand_in(argv: list[str]) -> list[str]:
    """`argv` with DARTS_V2 in place of a cell that does not exist yet (a search not yet run)."""
    base = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--base_dir", "--base_path")), None)
    if base is None or Path(base).is_dir():
        return argv
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in CELL_FLAGS:
            skip = True
        else:
            out.append(a)
    return [*out, *STAND_IN]


def plan_jobs(jobs: list[campaign.Job], folder: Path) -> dict:
    """--plan: each job's plan through its script's --plan (finished jobs' run directories feed
    the jobs after them, as in a run); one table on stdout; {job: plan (None: not planned)}."""
    done, plans = {}, {}
    for job in jobs:
        run_dir = job.run_dir(done)
        if run_dir is not None and job.finished(run_dir):
            done[job.name] = run_dir
    rows = [["job", "projected", "peak MB", "of MB", "fits", "to fit"]]
    for job in jobs:
        if not job.resumable:  # the selection rounds: retrains of train.py, planned one by one
            plans[job.name] = None
            rows.append([job.name, "(not planned: retrains of train.py)", "", "", "", ""])
            continue
        file = folder / f"{job.name}.json"
        argv = [*stand_in(job.argv({**{j.name: f"<{j.name}>" for j in jobs}, **done})),
                "--plan", "--plan_file", str(file)]
        result = subprocess.run(campaign.command(job, argv), cwd=campaign.ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            plans[job.name] = None
            rows.append([job.name, "plan failed: " + (result.stderr.strip().splitlines() or ["?"])[-1], "", "", "", ""])
            continue
        plans[job.name] = json.loads(file.read_text())
        for run in plans[job.name]["runs"]:
            fix = ", ".join(f"--{k} {v}" for k, v in run.get("suggestions", {}).items())
            projected = "out of memory" if run["total_seconds"] is None else duration(run["total_seconds"])
            peak = "" if run["peak_MB"] is None else f"{run['peak_MB']:.0f}"
            rows.append([job.name + (" (DARTS_V2 stand-in)" if STAND_IN[1] in argv else ""), projected, peak,
                         f"{run['capacity_MB']:.0f}", "yes" if run["fits"] else "NO", fix])
    sys.stdout.write(table(rows) + f"plans in {folder}\n")
    return plans


def campaign_folder(args: argparse.Namespace) -> Path:
    """Where campaign.json and the logs go: --campaign, else CKPT/campaign."""
    return Path(args.campaign) if args.campaign else Path(args.ckpt) / "campaign"


def main(argv: list[str] | None = None) -> dict:
    """Run (or print) the campaign; return every job's record. A failed job does not stop the
    others; the exit status says how many failed."""
    args = parse_args(argv)
    missing = [r for r in args.runs if not (Path(r) / rundir.FINAL_ARCH).is_file()]
    for run in missing:
        sys.stderr.write(f"skipping {run}: the search has not finished\n")
    args.runs = [r for r in args.runs if r not in missing]
    jobs = campaign_jobs(args)
    if args.dry_run:
        dry_run(jobs, args)
        return {}
    if args.plan:
        return plan_jobs(jobs, campaign_folder(args) / "plans")
    if "select" in args.stages and "search" not in args.stages and not args.runs:
        raise UserError("no finished search to select among")
    return campaign.run_jobs(jobs, campaign_folder(args), executor=args.executor, slots=args.slots,
                             slurm=slurm(args))


if __name__ == "__main__":
    run_cli(main)
