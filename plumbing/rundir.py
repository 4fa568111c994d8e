"""Run directories, the contract between the scripts: the one module that names their files, lays
them out, makes them, finds them again and decides whether a checkpoint may be resumed.

A search writes `<out_dir>/search-<save>-<YYYYmmdd-HHMMSS>-task<k>/`, a training run
`<root>/<kind>-<save>-<YYYYmmdd-HHMMSS>-g<name>/` (kind `eval`, or `nb201` for train_nb201.py).
Every other module asks this one for a path; none spells a file name of a run directory.
"""
from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from plumbing.cli import UserError

# Every run directory.
ARGS, LOG, TB, CHECKPOINT, RESULTS = "args.json", "log.txt", "tb", "checkpoint.pt", "results.json"
PREVIOUS = "checkpoint.prev.pt"  # the checkpoint before the newest, kept in case that one is damaged
DRAWING = "genotype"  # the cells' drawings: genotype_<cell type>.pdf / .png
# A search's own files.
SEARCH_SPACE, FINAL_ARCH = "search_space.json", "genotype.json"
PRUNE_EVENTS, SALIENCY, AUDIT = "prune_events.jsonl", "saliency.jsonl", "audit.jsonl"
APPENDED = (PRUNE_EVENTS, SALIENCY, AUDIT)  # append-only: cut back to the checkpoint's sizes on resume
SUMMARY, PLOTS, ONE_SHOT = "summary", "plots", "one_shot"
SELECTION = "selection.json"  # scripts/select_genotype.py's ranking, in its --out_dir
PLAN = "plan-{kind}-{save}.json"  # --plan's projection, in the --out_dir a run would go to (no run directory)
LOCK = ".lock"  # held (flock) by the process running in a run directory
# The authors' per-epoch layout: results_of_7q/{genotype,alpha,sal}/<epoch>.txt and results.csv.
EPOCHS, RESULTS_CSV = "results_of_7q", "results.csv"
# The kinds of run directory: train_search.py, train.py, train_imagenet.py, train_nb201.py.
SEARCH, EVAL, IMAGENET_EVAL, NB201_EVAL = "search", "eval", "imagenet", "nb201"

# Flags that change nothing a resumed run computes: where things are, how much is logged, and
# what only measures. Every other flag must be as the checkpoint's run had it.
RESUME_IGNORED = {"resume", "seed", "out_dir", "report_freq", "workers", "gpu", "deterministic", "nb201_file",
                  "audit_every", "audit_batches", "summary", "mode", "model_path",
                  "hessian_chunk",  # (memory only: lowered after running out of memory)
                  "dist_timeout"}


def make(root: str | Path, kind: str, save: str, suffix: str | None = None) -> Path:
    """`<root>/<kind>-<save>-<YYYYmmdd-HHMMSS>[-<suffix>]`, created; the DARTS naming."""
    name = f"{kind}-{save}-{time.strftime('%Y%m%d-%H%M%S')}" + (f"-{suffix}" if suffix else "")
    path = Path(root) / name
    path.mkdir(parents=True, exist_ok=False)
    return path


_LOCKS: dict = {}  # run directory: its open lock file, held until this process ends


def lock(run_dir: str | Path) -> None:
    """Take `run_dir` for this process, or refuse with one line when another process has it (a
    rerun while the first still runs). The lock is the kernel's (flock on <run_dir>/.lock): a
    process that dies, even by SIGKILL, holds it no more. (Not where flock is missing, and on
    some network file systems it only excludes processes of one machine.) Once the directory is
    this process's, the temporary files of a writer killed mid-write (SIGKILL leaves them) go."""
    key = Path(run_dir).resolve()
    if key not in _LOCKS:
        _LOCKS[key] = _take(key, run_dir)
    for stale in key.rglob(".*.tmp"):  # (fileio.atomic_write's and checkpoints' temporary names)
        stale.unlink(missing_ok=True)


def _take(key: Path, run_dir):
    """The open lock file of `key`, locked (None where flock is missing)."""
    try:
        import fcntl
    except ImportError:
        return None
    f = open(key / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise UserError(f"{run_dir} is in use by {holder}; wait for it to end (or stop it), then --resume") from None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def plan_path(root: str | Path, kind: str, save: str) -> Path:
    """Where `--plan` writes its JSON for a run of `kind` named `save` under `root`."""
    return Path(root) / PLAN.format(kind=kind, save=save)


def find(root: str | Path, kind: str, save: str = "*", suffix: str = "*") -> list[Path]:
    """The run directories of `kind` (and experiment name `save`, name suffix `suffix`: glob
    patterns) directly under `root`, oldest first."""
    found = (p for p in Path(root).glob(f"{kind}-{save}-????????-??????-{suffix}") if p.is_dir())
    return sorted(found, key=lambda p: (re.search(r"-(\d{8}-\d{6})-", p.name).group(1), p.name))


def _name_parts(run_dir: str | Path) -> re.Match | None:
    return re.match(r"(\w+)-(.*)-\d{8}-\d{6}(-|$)", Path(run_dir).name)


def kind_of(run_dir: str | Path) -> str | None:
    """The kind of a run directory from its name (`search`, `eval`, ...), or None."""
    found = _name_parts(run_dir)
    return found.group(1) if found else None


def save_of(run_dir: str | Path) -> str | None:
    """The experiment name (`--save`) in a run directory's name, or None."""
    found = _name_parts(run_dir)
    return found.group(2) if found else None


# ---------------------------------------------------------------- the per-epoch files of a search

def epoch_path(run_dir: str | Path, kind: str, epoch: int) -> Path:
    """`results_of_7q/<kind>/<epoch>.txt`: kind `genotype` (the architecture), `alpha` (the
    mixing weights) or `sal` (the saliency of the epoch's last prune event)."""
    return Path(run_dir) / EPOCHS / kind / f"{epoch}.txt"


def epochs(run_dir: str | Path, kind: str = "genotype") -> list[int]:
    """The epochs that have a `kind` file, in order."""
    return sorted(int(p.stem) for p in (Path(run_dir) / EPOCHS / kind).glob("*.txt") if p.stem.isdigit())


def one_shot_path(run_dir: str | Path, epoch: int) -> Path:
    """The supernet of epoch `epoch` (--save_one_shot)."""
    return Path(run_dir) / ONE_SHOT / f"weights_{epoch}.pt"


def results_csv(run_dir: str | Path) -> Path:
    """The search's `epoch,val_loss,val_acc,...` table."""
    return Path(run_dir) / EPOCHS / RESULTS_CSV


def epoch_file(base_dir: str | Path, name: int | str) -> Path:
    """The architecture file of epoch `name` of a search run directory (negative: counted from
    the last epoch, -1 = the last); a UserError when there is none."""
    base = Path(base_dir)
    if not base.is_dir():
        raise UserError(f"{base}: no such search run directory")
    found = epochs(base)
    if not found:
        raise UserError(f"{base}: no per-epoch genotypes in {EPOCHS}/genotype/ "
                        "(is this a train_search.py run directory?)")
    epoch = int(name)
    if epoch < 0:
        if -epoch > len(found):
            raise UserError(f"{base}: genotype name {name} reaches before the first epoch "
                            f"(epochs {found[0]}..{found[-1]})")
        epoch = found[epoch]
    if epoch not in found:
        raise UserError(f"{base}: no genotype for epoch {name}; available: "
                        f"{found[0]}..{found[-1]} ({len(found)} epochs) or -1 for the last")
    return epoch_path(base, "genotype", epoch)


def search_of_epoch_file(path: str | Path) -> Path | None:
    """The search run directory of a `<run>/results_of_7q/genotype/<epoch>.txt` path, else None."""
    parents = Path(path).parents
    if len(parents) >= 3 and (parents[1].name, parents[0].name) == (EPOCHS, "genotype"):
        return parents[2] if parents[2].name else None
    return None


def results_files(root: str | Path) -> Iterator[Path]:
    """Every run's results.json under `root`, in order."""
    return iter(sorted(Path(root).rglob(RESULTS)))


# ---------------------------------------------------------------- resuming

def checkpoint_of(path: str | Path) -> Path:
    """The checkpoint `--resume` names: the file itself, or the one in a run directory."""
    path = Path(path)
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"{path}: nothing to resume (no such checkpoint)")
    return path


def check_resumable(checkpoint: Path, saved: dict, args) -> None:
    """The one resume policy: every flag the checkpoint's run was given, but those in
    RESUME_IGNORED, must be the same now; otherwise one line naming the flag."""
    for key, old in saved.items():
        if key not in RESUME_IGNORED and getattr(args, key, old) != old:
            raise UserError(f"{checkpoint}: checkpoint from a different configuration "
                            f"(--{key} {old} there, {getattr(args, key)} now)")

