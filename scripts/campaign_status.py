"""The jobs of a campaign (scripts/run_*.sh, scripts/campaign_cli.py) as one table, readable while it runs:
queued, running (with its epoch and ETA, read from its run directory's log), done, skipped
(finished before), failed (with its log) or blocked (a job it comes after failed).

Usage: `python scripts/campaign_status.py [CAMPAIGN]` (default: ckpt/campaign).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plumbing import rundir  # noqa: E402
from plumbing.cli import ArgumentParser, UserError, duration, run_cli, table  # noqa: E402
from plumbing.drivers.campaign import MANIFEST  # noqa: E402

ETA = re.compile(r"epoch ETA ([^,\s]+)(?:, (?:search|run) ETA (\S+))?")  # the scripts' progress lines
EPOCH = re.compile(r"\bepoch (\d+) lr ")


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("campaign", nargs="?", default="ckpt/campaign", help=f"the campaign folder (holding {MANIFEST})")
    return p


def alive(pid: int | None) -> bool:
    """Whether process `pid` still runs (on this machine)."""
    if not pid:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # (Linux) a killed process left unreaped is a zombie: not running
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def progress(run_dir: str | None) -> tuple[str, str]:
    """(epoch e/E, ETA) of a running job, from its run directory's args.json and log.txt."""
    if not run_dir or not (Path(run_dir) / rundir.LOG).is_file():
        return "starting", ""
    lines = (Path(run_dir) / rundir.LOG).read_text(errors="replace").splitlines()
    args = Path(run_dir) / rundir.ARGS
    epochs = json.loads(args.read_text()).get("epochs") if args.is_file() else None
    epoch = next((int(m.group(1)) for line in reversed(lines) if (m := EPOCH.search(line))), None)
    eta = next((m.group(2) or m.group(1) for line in reversed(lines) if (m := ETA.search(line))), "")
    where = "" if epoch is None else f"epoch {epoch + 1}/{epochs}" if epochs else f"epoch {epoch + 1}"
    return where, eta


def rows(manifest: dict, now: float) -> list[list[str]]:
    """One row per job: name, state, progress, ETA, time, run directory or log."""
    out = []
    for job in manifest["jobs"]:
        state, where, eta = job["state"], "", ""
        if state == "running" and manifest["executor"] == "machine" and not alive(job.get("pid")):
            state = "interrupted"  # the runner was stopped: run the campaign again to resume it
        if state == "running":
            where, eta = progress(job.get("run_dir"))
        started, ended = job.get("started"), job.get("ended")
        took = "" if not started else duration((ended or now) - started)
        detail = job.get("stderr", "") if state == "failed" else job.get("run_dir") or ""
        out.append([job["name"], state + (f" (exit {job.get('rc')})" if state == "failed" else ""), where, eta,
                    took, str(detail)])
    return out


def status_table(data: list[list[str]]) -> str:
    """The jobs' rows under a header."""
    return table([["job", "state", "progress", "ETA", "time", "run directory (failed: log)"], *data])


def main(argv: list[str] | None = None) -> list[list[str]]:
    """Print the table; return its rows."""
    args = build_parser().parse_args(argv)
    path = Path(args.campaign) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no campaign here "
                        "(run scripts/run_campaign.sh or scripts/campaign_cli.py first)") from None
    except ValueError as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    data = rows(manifest, time.time())
    counts = {}
    for r in data:
        counts[r[1].split()[0]] = counts.get(r[1].split()[0], 0) + 1
    sys.stdout.write(status_table(data) + ", ".join(f"{n} {s}" for s, n in counts.items()) + "\n")
    return data


if __name__ == "__main__":
    run_cli(main)
