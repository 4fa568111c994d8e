"""The job runner of the campaigns: runs of the scripts (a search, the retrain of its cell, the
selection rounds, the ImageNet retrain of the winner) as jobs with dependencies, run on this
machine one job per listed GPU (or N CPU processes) at a time, or as SLURM job arrays through
submitit. A job that has finished is skipped, one with a checkpoint resumed. The state of every job
is in <campaign>/campaign.json (`python scripts/campaign_status.py` prints it as a table).

The one place that builds the command of a job (python, or torchrun on several GPUs). The command
line, with the paper's jobs, is scripts/campaign_cli.py.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from plumbing import rundir
from plumbing.cli import UserError
from plumbing.fileio import write_json

ROOT = Path(__file__).resolve().parents[2]  # the repository: its scripts and modules
MANIFEST = "campaign.json"  # in the campaign folder


@dataclass
class Job:
    """One run of a script: `argv(done)` builds its command once the jobs it comes `after` are
    done (`done`: their run directories); `run_dir()` finds its run directory, if any."""
    name: str
    group: str  # jobs of a group go out as one SLURM array (a variant's seeds)
    argv: Callable[[dict], list[str]]
    run_dir: Callable[[dict], Path | None]
    finished: Callable[[Path], bool] = lambda d: (d / rundir.RESULTS).is_file()
    after: list[str] = field(default_factory=list)
    gpus: int = 1
    resumable: bool = True


def newest(root: Path, kind: str, save: str = "*", suffix: str = "*") -> Path | None:
    """The newest run directory of `kind` under `root` (rundir.find's patterns), a finished one
    (with its results) before an unfinished one."""
    found = rundir.find(root, kind, save, suffix)
    finished = [p for p in found if (p / rundir.RESULTS).is_file()]
    return (finished or found or [None])[-1]


# ---------------------------------------------------------------- the kinds of job

def search_job(name: str, group: str, flags: list[str], *, save: str, seed: int, ckpt: Path,
               extra: list[str], gpus: int) -> Job:
    """train_search.py with `flags`, then the user's `extra` flags (last, so they win); its run
    directory is <ckpt>/search-<save>-<time>-task<seed>."""
    argv = ["train_search.py", *flags, "--seed", str(seed), "--task", str(seed), "--save", save,
            "--out_dir", str(ckpt), *extra]
    return Job(name, group, lambda done: argv,
               lambda done: newest(ckpt, rundir.SEARCH, save, f"task{seed}"), gpus=gpus)


def retrain_job(name: str, search: str | Path, flags: list[str], gpus: int) -> Job:
    """train.py on the cell of `search` (a run directory, or the name of the search job this one
    comes after) with `flags`; its run directory is <search>/eval-*."""
    def base(done: dict) -> Path | None:
        return search if isinstance(search, Path) else done.get(search)

    return Job(name, "retrain", lambda done: ["train.py", "--mode", "train", "--cutout", "--auxiliary",
                                              "--base_dir", str(base(done)), *flags],
               lambda done: None if base(done) is None else newest(base(done), rundir.EVAL),
               after=[] if isinstance(search, Path) else [search], gpus=gpus)


def select_job(searches: list[str | Path], out: Path, flags: list[str]) -> Job:
    """scripts/select_genotype.py over `searches` (run directories, or the search jobs it comes
    after) with `flags`, into `out`. Not resumable: its rounds start again from scratch."""
    def runs(done: dict) -> list[str]:
        return [str(s if isinstance(s, Path) else done[s]) for s in searches]

    return Job("select", "select",
               lambda done: ["scripts/select_genotype.py", *runs(done), *flags, "--out_dir", str(out)],
               lambda done: out, finished=lambda d: (d / rundir.SELECTION).is_file(),
               after=[s for s in searches if isinstance(s, str)], resumable=False)


def imagenet_job(flags: list[str], gpus: int, cell: tuple[str, str] | None = None) -> Job:
    """train_imagenet.py with `flags` on `cell` (a search run directory and an epoch), or without
    it on the winner of the select job it then comes after; its run directory is <search>/imagenet-*."""
    def chosen(done: dict) -> tuple[str, str] | None:
        selection = done.get("select")
        if cell is not None or selection is None or not (selection / rundir.SELECTION).is_file():
            return cell
        winner = json.loads((selection / rundir.SELECTION).read_text())
        return winner["run"], str(winner["epoch"])

    def argv(done: dict) -> list[str]:
        run, epoch = chosen(done) or ("<selected run>", "<selected epoch>")
        return ["train_imagenet.py", *flags, "--base_path", run, "--genotype_name", epoch]

    def run_dir(done: dict) -> Path | None:
        found = chosen(done)
        return None if found is None else newest(Path(found[0]), rundir.IMAGENET_EVAL)

    return Job("imagenet", "imagenet", argv, run_dir, after=[] if cell else ["select"], gpus=gpus)


# ---------------------------------------------------------------- planning and records

def plan(job: Job, done: dict) -> tuple[str, list[str] | None, Path | None]:
    """What to do with `job` now: ("skip", None, run dir) when it has finished, ("resume", argv,
    run dir) when it has a checkpoint, else ("start", argv, None)."""
    run_dir = job.run_dir(done)
    if run_dir is not None and job.finished(run_dir):
        return "skip", None, run_dir
    argv = job.argv(done)
    if run_dir is not None and job.resumable and (run_dir / rundir.CHECKPOINT).is_file():
        return "resume", [*argv, "--resume", str(run_dir)], run_dir
    return "start", argv, None


def command(job: Job, argv: list[str], shown: bool = False) -> list[str]:
    """The process to start: the script run by python, or by torchrun on the job's GPUs; `shown`:
    as the README writes it (`python train_search.py ...`)."""
    if job.gpus > 1:
        head = ["torchrun", "--standalone", "--nproc_per_node", str(job.gpus)]
    else:
        head = ["python" if shown else sys.executable]
    return [*head, argv[0] if shown else str(ROOT / argv[0]), *argv[1:]]


class Manifest:
    """<campaign>/campaign.json: every job's state, command, devices, times, exit code, logs and
    run directory, rewritten atomically on every change."""

    def __init__(self, folder: Path, jobs: list[Job], executor: str):
        self.path, self.executor = folder / MANIFEST, executor
        self.records = {j.name: {"name": j.name, "group": j.group, "after": j.after, "gpus": j.gpus,
                                 "state": "queued"} for j in jobs}

    def update(self, name: str, **fields) -> None:
        """Change a job's record and write the manifest."""
        self.records[name].update({k: str(v) if isinstance(v, Path) else v for k, v in fields.items()})
        write_json(self.path, {"executor": self.executor, "updated": time.time(),
                               "jobs": list(self.records.values())})

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

def run_local(jobs: list[Job], manifest: Manifest, slots: list[str | None], logs: Path, log) -> None:
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
    manifest.update(job.name, state="running", action=what,
                    command=shlex.join(command(job, argv, shown=True)),
                    devices=devices if devices[0] is not None else None, pid=proc.pid, started=time.time(),
                    stdout=out, stderr=err, run_dir=run_dir)
    log(f"{STARTED[what]:8} {job.name}" + (f" on GPU {','.join(devices)}" if devices[0] is not None else ""))
    return proc


def finish(job: Job, manifest: Manifest, returncode: int, log) -> None:
    """Record how `job` ended: done when it exited 0 and its run directory holds its results."""
    run_dir = job.run_dir(done_dirs(manifest))
    ok = returncode == 0 and run_dir is not None and job.finished(run_dir)
    manifest.update(job.name, state="done" if ok else "failed", rc=returncode, ended=time.time(),
                    run_dir=run_dir)
    log(f"{'done' if ok else 'FAILED':8} {job.name}" + ("" if ok else f" (exit {returncode}): see "
                                                          f"{manifest.records[job.name]['stderr']}"))


# ---------------------------------------------------------------- SLURM (submitit)

@dataclass
class Slurm:
    """The SLURM settings of the job arrays (None: the cluster's default); `time`, in minutes,
    limits submitit_local's jobs too."""
    partition: str | None = None
    time: int = 2880
    cpus_per_task: int | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None

    def parameters(self, group: str, gpus: int, count: int) -> dict:
        """The settings of one job array (submitit's SlurmExecutor names)."""
        params = {"job_name": f"fpdarts-{group}", "partition": self.partition, "time": self.time, "nodes": 1,
                  "gpus_per_node": gpus, "ntasks_per_node": 1, "cpus_per_task": self.cpus_per_task,
                  "mem": self.mem, "account": self.account, "qos": self.qos, "array_parallelism": count}
        return {k: v for k, v in params.items() if v is not None}


def execute(argv: list[str], cwd: str, env: dict) -> int:
    """The body of a submitit job: run the command in `cwd` with `env` added; raise when it fails."""
    subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, check=True)
    return 0


def submit(group: list[Job], manifest: Manifest, executor: str, slurm: Slurm, folder: Path, log) -> list:
    """Submit the jobs of `group` that have not finished as one array; [(job, submitit handle)]."""
    import submitit

    plans = [(j, *plan(j, done_dirs(manifest))) for j in group]
    for job, what, _, run_dir in plans:
        if what == "skip":
            skipped(job, run_dir, manifest, log)
    todo = [(j, what, argv, d) for j, what, argv, d in plans if what != "skip"]
    if not todo:
        return []
    if executor == "slurm":
        runner = submitit.SlurmExecutor(folder=folder / "%j")
        runner.update_parameters(**slurm.parameters(group[0].group, group[0].gpus, len(todo)))
    else:
        runner = submitit.LocalExecutor(folder=folder / "%j")
        runner.update_parameters(timeout_min=slurm.time)
    # CPU threads per job: the cores SLURM gives it, or this machine's shared by the array
    threads = slurm.cpus_per_task if executor == "slurm" else max(1, (os.cpu_count() or 1) // len(todo))
    env = {} if threads is None or "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(threads)}
    handles = runner.map_array(execute, [command(j, argv) for j, _, argv, _ in todo],
                               [os.getcwd()] * len(todo), [env] * len(todo))
    for (job, what, argv, run_dir), handle in zip(todo, handles):
        manifest.update(job.name, state="running", action=what, job_id=handle.job_id, started=time.time(),
                        command=shlex.join(command(job, argv, shown=True)), stdout=handle.paths.stdout,
                        stderr=handle.paths.stderr, run_dir=run_dir)
        log(f"{STARTED[what]:8} {job.name} as job {handle.job_id}")
    return [(job, handle) for (job, _, _, _), handle in zip(todo, handles)]


def run_submitit(jobs: list[Job], manifest: Manifest, executor: str, slurm: Slurm, folder: Path, log) -> None:
    """Submit the jobs wave by wave: every ready job of a group (a variant's seeds) as one array,
    then wait for the wave. `executor` "slurm", or "submitit_local": the same jobs as local
    subprocesses (submitit's LocalExecutor)."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    pending = list(jobs)
    while pending:
        wave = settle(pending, manifest, log)
        if not wave:
            return
        submitted = []
        for group in dict.fromkeys(j.group for j in wave):
            submitted += submit([j for j in wave if j.group == group], manifest, executor, slurm, folder, log)
        while submitted:
            for job, handle in [(j, h) for j, h in submitted if h.done()]:
                submitted.remove((job, handle))
                finish(job, manifest, 0 if handle.exception() is None else 1, log)
            find_run_dirs([job for job, _ in submitted], manifest)
            time.sleep(1.0)
        pending = [j for j in pending if manifest.state(j.name) == "queued"]


# ---------------------------------------------------------------- a campaign

def run_jobs(jobs: list[Job], folder: Path, *, executor: str, slots: list[str | None], slurm: Slurm) -> dict:
    """Run the jobs, recording them in <folder>/campaign.json: with `executor` "machine" here on
    `slots` (GPU ids, or None per CPU process), else through submitit; return every job's record.
    A failed job does not stop the others; a UserError names them all at the end."""
    manifest = Manifest(folder, jobs, executor)
    log = lambda line: print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
    if executor == "machine":
        run_local(jobs, manifest, slots, folder / "logs", log)
    else:
        run_submitit(jobs, manifest, executor, slurm, folder / "submitit", log)
    bad = [r for r in manifest.records.values() if r["state"] in ("failed", "blocked")]
    log(f"campaign: {len(jobs) - len(bad)} of {len(jobs)} jobs done or skipped; {manifest.path}")
    if bad:
        failed = lambda r: f" (exit {r.get('rc')}, log {r.get('stderr')})" if r["state"] == "failed" else ""
        raise UserError(f"{len(bad)} of {len(jobs)} jobs did not finish: "
                        + "; ".join(f"{r['name']} {r['state']}{failed(r)}" for r in bad))
    return manifest.records
