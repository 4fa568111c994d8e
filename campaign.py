"""Run the paper's campaign: the searches (variants x seeds), the CIFAR-10 retrain of every search,
the selection rounds and the ImageNet retrain of the winner, as jobs with dependencies. Two ways to
run them: on this machine, one job per listed GPU (or N CPU processes) at a time; or as SLURM job
arrays through submitit. Re-running skips finished runs and resumes interrupted ones.

The shell scripts in scripts/ (run_search.sh, run_fulltrain.sh, run_campaign.sh) call this module;
`python campaign.py --help` lists its flags. The state of every job is in <campaign>/campaign.json
(`python scripts/campaign_status.py` prints it as a table).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cli import ArgumentParser, UserError, run_cli
from fileio import write_json

ROOT = Path(__file__).resolve().parent
# The paper's variants (the flags that differ from train_search.py's defaults).
VARIANTS = {
    "s1": ["--sal_type", "task"],  # first-order Taylor saliency of the search loss
    "s2": ["--sal_type", "task", "--sal_second"],  # plus the exact Hessian-diagonal term
    "s1r": ["--sal_type", "task", "--num_compare", "5"],  # the 5 lowest re-checked by removal
    "s1r_larger": ["--sal_type", "task", "--num_compare", "5", "--no_restrict"],  # the larger space
}
STAGES = ("search", "retrain", "select", "imagenet")
# The DARTS protocol on CIFAR-10 (scripts/run_fulltrain.sh) and on ImageNet (run_fulltrain_imagenet.sh).
RETRAIN = ["--layers", "20", "--init_channels", "36", "--batch_size", "96"]
SELECT = ["--budgets", "20", "60", "600", "--keep", "6", "1"]
IMAGENET = ["--mode", "train", "--auxiliary", "--batch_size", "768", "--sync_bn"]


@dataclass
class Job:
    """One run of a script: `argv(done)` builds its command once the jobs it comes `after` are
    done (`done`: their run directories); `run_dir()` finds its run directory, if any."""
    name: str
    group: str  # jobs of a group go out as one SLURM array (a variant's seeds)
    argv: Callable[[dict], list[str]]
    run_dir: Callable[[dict], Path | None]
    finished: Callable[[Path], bool] = lambda d: (d / "results.json").is_file()
    after: list[str] = field(default_factory=list)
    gpus: int = 1
    resumable: bool = True


def newest(pattern: str, root: Path) -> Path | None:
    """The newest directory matching `pattern` under `root` (run directories end in a timestamp)."""
    found = sorted((p for p in root.glob(pattern) if p.is_dir()), key=lambda p: p.name.split("-")[-3:-1])
    finished = [p for p in found if (p / "results.json").is_file()]
    return (finished or found or [None])[-1]


def launcher(gpus: int) -> list[str]:
    """python, or torchrun on `gpus` processes."""
    return ["torchrun", "--standalone", "--nproc_per_node", str(gpus)] if gpus > 1 else [sys.executable]


def campaign_jobs(args) -> list[Job]:
    """The jobs of the stages asked for, in dependency order."""
    ckpt, jobs = Path(args.ckpt), []
    searches = []
    if "search" in args.stages:
        for variant in args.variants:
            for seed in args.seeds:
                name = f"search-{variant}-seed{seed}"
                flags = [*VARIANTS[variant], "--data", args.data, "--seed", str(seed), "--task", str(seed),
                         "--save", variant, "--out_dir", str(ckpt), *shlex.split(args.search_args)]
                jobs.append(Job(name, f"search-{variant}", lambda done, f=flags: ["train_search.py", *f],
                                lambda done, p=f"search-{variant}-*-task{seed}": newest(p, ckpt), gpus=args.nproc))
                searches.append(name)
    runs = {n: n for n in searches} if searches else {str(r): Path(r) for r in args.runs}
    if "retrain" in args.stages:
        for key, search in runs.items():
            base = (lambda done, k=key: done[k]) if searches else (lambda done, p=search: p)
            jobs.append(Job(f"retrain-{Path(key).name}", "retrain", lambda done, b=base: [
                "train.py", "--mode", "train", "--cutout", "--auxiliary", "--base_dir", str(b(done)),
                "--genotype_names", str(args.epoch), "--data", args.data, "--seed", str(args.retrain_seed), *RETRAIN,
                *shlex.split(args.retrain_args)],
                lambda done, b=base: _eval_dir(b, done), after=[key] if searches else [], gpus=args.nproc))
    if "select" in args.stages:
        out = ckpt / "selection"
        jobs.append(Job("select", "select", lambda done: [
            "scripts/select_genotype.py", *(str(done[k]) if searches else str(k) for k in runs), *SELECT,
            "--out_dir", str(out), "--train_args", f"--dataset cifar10 --data {args.data} {args.retrain_args}".strip()],
            lambda done: out, finished=lambda d: (d / "selection.json").is_file(),
            after=list(searches), resumable=False))
    if "imagenet" in args.stages:
        jobs.append(Job("imagenet", "imagenet", lambda done: ["train_imagenet.py", *IMAGENET, *_winner(done),
                                                            "--data", args.imagenet_data],
                        lambda done: _imagenet_dir(done), after=["select"] if "select" in args.stages else [],
                        gpus=args.imagenet_gpus))
    return jobs


def _eval_dir(base, done) -> Path | None:
    try:
        search = base(done)
    except KeyError:
        return None
    return newest("eval-*", Path(search))


def _winner(done) -> list[str]:
    selection = done.get("select")
    if selection is None or not (selection / "selection.json").is_file():
        return ["--base_path", "<selected run>", "--genotype_name", "<selected epoch>"]
    chosen = json.loads((selection / "selection.json").read_text())
    return ["--base_path", chosen["run"], "--genotype_name", str(chosen["epoch"])]


def _imagenet_dir(done) -> Path | None:
    selection = done.get("select")
    if selection is None or not (selection / "selection.json").is_file():
        return None
    return newest("imagenet-*", Path(_winner(done)[1]))


# ---------------------------------------------------------------- planning and records

def plan(job: Job, done: dict) -> tuple[str, list[str] | None, Path | None]:
    """What to do with `job` now: ("skip", None, run dir) when it has finished, ("resume", argv,
    run dir) when it has a checkpoint, else ("start", argv, None)."""
    run_dir = job.run_dir(done)
    if run_dir is not None and job.finished(run_dir):
        return "skip", None, run_dir
    argv = job.argv(done)
    if run_dir is not None and job.resumable and (run_dir / "checkpoint.pt").is_file():
        return "resume", [*argv, "--resume", str(run_dir)], run_dir
    return "start", argv, None


def command(job: Job, argv: list[str], shown: bool = False) -> list[str]:
    """The process to start: the script run by python (torchrun on several GPUs); `shown`: as
    the README writes it (`python train_search.py ...`)."""
    head = launcher(job.gpus) if job.gpus > 1 else ["python" if shown else sys.executable]
    return [*head, argv[0] if shown else str(ROOT / argv[0]), *argv[1:]]


class Manifest:
    """<campaign>/campaign.json: every job's state, command, devices, times, exit code, logs and
    run directory, rewritten atomically on every change."""

    def __init__(self, folder: Path, jobs: list[Job], executor: str):
        self.path, self.executor = folder / "campaign.json", executor
        self.records = {j.name: {"name": j.name, "group": j.group, "after": j.after, "gpus": j.gpus,
                                 "state": "queued"} for j in jobs}

    def update(self, name: str, **fields) -> None:
        """Change a job's record and write the manifest."""
        self.records[name].update({k: str(v) if isinstance(v, Path) else v for k, v in fields.items()})
        write_json(self.path, {"executor": self.executor, "updated": time.time(), "jobs": list(self.records.values())})

    def state(self, name: str) -> str:
        """The job's state: queued, running, done, skipped, failed or blocked."""
        return self.records[name]["state"]


def ready(job: Job, manifest: Manifest) -> bool | None:
    """True when every job `job` comes after is done, None when one of them failed (it never will
    be), else False."""
    states = [manifest.state(a) for a in job.after]
    if any(s in ("failed", "blocked") for s in states):
        return None
    return all(s in ("done", "skipped") for s in states)


def settle(pending: list[Job], manifest: Manifest, log) -> list[Job]:
    """The pending jobs that can start now; those that never will (a job they come after failed)
    are marked blocked and leave `pending`."""
    for job in [j for j in pending if ready(j, manifest) is None]:
        manifest.update(job.name, state="blocked")
        log(f"blocked  {job.name}: a job it comes after failed")
        pending.remove(job)
    return [j for j in pending if ready(j, manifest)]


def skipped(job: Job, run_dir: Path, manifest: Manifest, log) -> None:
    """Record a job that had finished before this campaign run."""
    manifest.update(job.name, state="skipped", run_dir=run_dir)
    log(f"skipped  {job.name}: finished in {run_dir}")


STARTED = {"start": "started", "resume": "resumed"}  # how the log says what a job did


def done_dirs(manifest: Manifest) -> dict:
    """{job name: run directory} of the jobs done so far."""
    return {n: Path(r["run_dir"]) for n, r in manifest.records.items()
            if r["state"] in ("done", "skipped") and r.get("run_dir")}


# ---------------------------------------------------------------- this machine

def run_local(jobs: list[Job], manifest: Manifest, slots: list[str | None], logs: Path, log=print) -> None:
    """Run the jobs here, each on as many of the `slots` (GPU ids, or None for a CPU process) as
    it asks for, starting the next ready job as soon as slots free up; a failed job blocks only
    the jobs that come after it."""
    free, running, pending = list(slots), {}, list(jobs)
    threads = None if slots[0] is not None else str(max(1, (os.cpu_count() or 1) // len(slots)))
    while pending or running:
        for job in settle(pending, manifest, log):
            need = min(job.gpus, len(slots))
            if len(free) >= need:
                pending.remove(job)
                taken, free = free[:need], free[need:]
                proc = start(job, manifest, taken, logs, threads, log)
                if proc is None:
                    free += taken
                else:
                    running[job.name] = (job, proc, taken)
        for name, (job, proc, taken) in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                free += taken
                finish(job, manifest, proc.returncode, log)
        find_run_dirs([job for job, _, _ in running.values()], manifest)
        time.sleep(0.5)


def find_run_dirs(jobs: list[Job], manifest: Manifest) -> None:
    """Record the run directory of each running job once it has made one (campaign_status.py
    reads its progress there)."""
    for job in jobs:
        if not manifest.records[job.name].get("run_dir"):
            run_dir = job.run_dir(done_dirs(manifest))
            if run_dir is not None:
                manifest.update(job.name, run_dir=run_dir)


def start(job: Job, manifest: Manifest, devices: list, logs: Path, threads: str | None, log):
    """Start `job` (None when it had already finished: skipped)."""
    what, argv, run_dir = plan(job, done_dirs(manifest))
    if what == "skip":
        return skipped(job, run_dir, manifest, log)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if devices[0] is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    elif threads and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = threads  # CPU jobs side by side: no oversubscribed cores
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{job.name}.out", logs / f"{job.name}.err"
    cmd = command(job, argv)
    with open(out, "a") as o, open(err, "a") as e:
        o.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
        o.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=o, stderr=e)
    manifest.update(job.name, state="running", action=what, command=shlex.join(command(job, argv, shown=True)),
                    devices=devices if devices[0] is not None else None, pid=proc.pid, started=time.time(),
                    stdout=out, stderr=err, run_dir=run_dir)
    log(f"{STARTED[what]:8} {job.name}" + (f" on GPU {','.join(devices)}" if devices[0] is not None else ""))
    return proc


def finish(job: Job, manifest: Manifest, returncode: int, log) -> None:
    """Record how `job` ended: done when it exited 0 and its run directory holds its results."""
    run_dir = job.run_dir(done_dirs(manifest))
    ok = returncode == 0 and run_dir is not None and job.finished(run_dir)
    manifest.update(job.name, state="done" if ok else "failed", rc=returncode, ended=time.time(), run_dir=run_dir)
    log(f"{'done' if ok else 'FAILED':8} {job.name}" + ("" if ok else f" (exit {returncode}): see "
                                                          f"{manifest.records[job.name]['stderr']}"))


# ---------------------------------------------------------------- SLURM (submitit)

def execute(argv: list[str], cwd: str, env: dict) -> int:
    """The body of a submitit job: run the command in `cwd` with `env` added; raise when it fails."""
    subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, check=True)
    return 0


def slurm_parameters(args, group: str, gpus: int, count: int) -> dict:
    """The SLURM settings of one job array (submitit's SlurmExecutor names)."""
    params = {"job_name": f"fpdarts-{group}", "partition": args.partition, "time": args.time, "nodes": 1,
              "gpus_per_node": gpus, "ntasks_per_node": 1, "cpus_per_task": args.cpus_per_task,
              "mem": args.mem, "account": args.account, "qos": args.qos, "array_parallelism": count}
    return {k: v for k, v in params.items() if v is not None}


def run_submitit(jobs: list[Job], manifest: Manifest, args, folder: Path, log=print) -> None:
    """Submit the jobs wave by wave: every ready job of a group (a variant's seeds) as one array,
    then wait for the wave. `args.executor` "local" runs the same jobs as local subprocesses
    (submitit's LocalExecutor)."""
    import submitit

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    pending = list(jobs)
    while pending:
        wave = settle(pending, manifest, log)
        if not wave:
            return
        submitted = []
        for group in dict.fromkeys(j.group for j in wave):
            members = [j for j in wave if j.group == group]
            plans = [(j, *plan(j, done_dirs(manifest))) for j in members]
            for job, what, _, run_dir in plans:
                if what == "skip":
                    skipped(job, run_dir, manifest, log)
            todo = [(j, what, argv, d) for j, what, argv, d in plans if what != "skip"]
            if not todo:
                continue
            if args.executor == "slurm":
                executor = submitit.SlurmExecutor(folder=folder / "%j")
                executor.update_parameters(**slurm_parameters(args, group, members[0].gpus, len(todo)))
            else:
                executor = submitit.LocalExecutor(folder=folder / "%j")
                executor.update_parameters(timeout_min=args.time)
            # CPU threads per job: the cores SLURM gives it, or this machine's shared by the array
            threads = args.cpus_per_task if args.executor == "slurm" else max(1, (os.cpu_count() or 1) // len(todo))
            env = {} if threads is None or "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(threads)}
            handles = executor.map_array(execute, [command(j, argv) for j, _, argv, _ in todo],
                                         [os.getcwd()] * len(todo), [env] * len(todo))
            for (job, what, argv, run_dir), handle in zip(todo, handles):
                manifest.update(job.name, state="running", action=what, job_id=handle.job_id, started=time.time(),
                                command=shlex.join(command(job, argv, shown=True)), stdout=handle.paths.stdout,
                                stderr=handle.paths.stderr, run_dir=run_dir)
                log(f"{STARTED[what]:8} {job.name} as job {handle.job_id}")
                submitted.append((job, handle))
        while submitted:
            for job, handle in [(j, h) for j, h in submitted if h.done()]:
                submitted.remove((job, handle))
                finish(job, manifest, 0 if handle.exception() is None else 1, log)
            find_run_dirs([job for job, _ in submitted], manifest)
            time.sleep(1.0)
        pending = [j for j in pending if manifest.state(j.name) == "queued"]


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    """The campaign's flags."""
    p = ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_argument_group("what to run")
    g.add_argument("--stages", nargs="+", choices=STAGES, default=["search", "retrain"], help="search: the variants x seeds; retrain: train every search's cell on CIFAR-10 (after its search); select: the selection rounds over all searches (after them); imagenet: the winner on ImageNet (after select)")
    g.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="the paper's search variants")
    g.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="search seeds (also the run directory's task number)")
    g.add_argument("--runs", nargs="*", default=[], help="without the search stage: the search run directories to retrain / select among")
    g.add_argument("--epoch", type=int, default=-1, help="retrain: which epoch's genotype of each search (-1: the final one)")
    g.add_argument("--retrain_seed", type=int, default=0, help="seed of every retrain")
    g.add_argument("--data", default="../data", help="CIFAR-10 folder of the searches and retrains")
    g.add_argument("--imagenet_data", default="../data/imagenet", help="ImageNet folder of the imagenet stage")
    g.add_argument("--ckpt", default="ckpt", help="folder of the searches' run directories")
    g.add_argument("--campaign", default=None, help="folder of campaign.json and the jobs' logs (default: CKPT/campaign)")
    g.add_argument("--search_args", default="", help="more train_search.py flags for every search, as one string")
    g.add_argument("--retrain_args", default="", help="more train.py flags for every retrain and selection round, as one string")
    g = p.add_argument_group("where to run it")
    g.add_argument("--executor", choices=("machine", "slurm", "submitit_local"), default="machine", help="machine: here, on --gpus or --jobs; slurm: SLURM job arrays through submitit; submitit_local: submitit's local executor (the SLURM path without a cluster)")
    g.add_argument("--gpus", default=None, help='machine: the GPU ids to use, e.g. "0 1 2 3": one job per GPU at a time (CUDA_VISIBLE_DEVICES)')
    g.add_argument("--jobs", type=int, default=1, help="machine without --gpus: jobs side by side as CPU processes")
    g.add_argument("--nproc", type=int, default=1, help="GPUs (torchrun processes) of each search and retrain")
    g.add_argument("--imagenet_gpus", type=int, default=8, help="GPUs (torchrun processes) of the ImageNet retrain")
    g.add_argument("--partition", default=None, help="slurm: the partition")
    g.add_argument("--time", type=int, default=2880, help="slurm / submitit_local: time limit of each job in minutes")
    g.add_argument("--cpus_per_task", type=int, default=None, help="slurm: CPU cores per job")
    g.add_argument("--mem", default=None, help='slurm: memory per node, e.g. "64G"')
    g.add_argument("--account", default=None, help="slurm: the account to charge")
    g.add_argument("--qos", default=None, help="slurm: the quality of service")
    g.add_argument("--dry_run", action="store_true", help="print the jobs (and with slurm, each array's sbatch header) and run nothing")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked (one line for what cannot work)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.gpus is not None and args.executor != "machine":
        p.error("--gpus is for --executor machine (SLURM assigns the GPUs)")
    if args.jobs < 1 or args.nproc < 1 or args.imagenet_gpus < 1:
        p.error("--jobs, --nproc and --imagenet_gpus must be positive")
    if "search" not in args.stages and {"retrain", "select"} & set(args.stages) and not args.runs:
        p.error("--stages without search need --runs (the search run directories)")
    args.slots = args.gpus.split() if args.gpus else [None] * args.jobs
    wide = max([args.nproc] + ([args.imagenet_gpus] if "imagenet" in args.stages else []))
    if args.gpus and wide > len(args.slots):
        p.error(f"a job asks for {wide} GPUs but --gpus lists {len(args.slots)}")
    return args


def dry_run(jobs: list[Job], args) -> None:
    """Print every job: its name, what it comes after, and its command (placeholders for run
    directories that do not exist yet); with slurm, each array's sbatch header."""
    done = {j.name: Path(f"<run directory of {j.name}>") for j in jobs}
    for job in jobs:
        what, argv, run_dir = plan(job, done)
        after = f" after {', '.join(job.after)}" if job.after else ""
        print(f"# {job.name} ({job.gpus} GPU{'s' if job.gpus > 1 else ''}{after}): "
              + (f"finished in {run_dir}, skipped" if what == "skip" else what))
        if argv:
            print(shlex.join(command(job, argv, shown=True)))
    if args.executor == "slurm":
        from submitit.slurm.slurm import _make_sbatch_string

        for group in dict.fromkeys(j.group for j in jobs):
            members = [j for j in jobs if j.group == group]
            params = slurm_parameters(args, group, members[0].gpus, len(members))
            print(f"# sbatch header of the array {group}:")
            print(_make_sbatch_string(command="<submitit's job runner>", folder=str(campaign_folder(args) / "submitit" / "%j"),
                                      map_count=len(members), **params).split("# command")[0].strip())


def campaign_folder(args) -> Path:
    """Where campaign.json and the logs go: --campaign, else CKPT/campaign."""
    return Path(args.campaign) if args.campaign else Path(args.ckpt) / "campaign"


def main(argv: list[str] | None = None) -> dict:
    """Run (or print) the campaign; return every job's record. A failed job does not stop the
    others; the exit status says how many failed."""
    args = parse_args(argv)
    missing = [r for r in args.runs if not (Path(r) / "genotype.json").is_file()]
    for run in missing:
        sys.stderr.write(f"skipping {run}: the search has not finished\n")
    args.runs = [r for r in args.runs if r not in missing]
    jobs = campaign_jobs(args)
    if args.dry_run:
        dry_run(jobs, args)
        return {}
    folder = campaign_folder(args)
    manifest = Manifest(folder, jobs, args.executor)
    log = lambda line: print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
    if args.executor == "machine":
        run_local(jobs, manifest, args.slots, folder / "logs", log)
    else:
        run_submitit(jobs, manifest, args, folder / "submitit", log)
    bad = [r for r in manifest.records.values() if r["state"] in ("failed", "blocked")]
    log(f"campaign: {len(jobs) - len(bad)} of {len(jobs)} jobs done or skipped; {manifest.path}")
    if bad:
        raise UserError(f"{len(bad)} of {len(jobs)} jobs did not finish: " + "; ".join(
            f"{r['name']} {r['state']}" + (f" (exit {r.get('rc')}, log {r.get('stderr')})" if r["state"] == "failed" else "")
            for r in bad))
    return manifest.records


if __name__ == "__main__":
    run_cli(main)
