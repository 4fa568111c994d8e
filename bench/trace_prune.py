"""Which of the project's files one prune event passes through: runs a tiny search on the digits
(in this process, `--sal_type task` unless told otherwise), profiles its first prune event
(`train_search.prune_event`) and prints, per project file, the functions it entered: those the
project's code calls itself ("called") and those torch calls for it (a module's forward, a data
set's items), split into the method's files and the base plumbing's (plumbing/*.py).

    python bench/trace_prune.py                        # s1, the default criterion
    python bench/trace_prune.py --sal_second           # any train_search.py flags
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_search  # noqa: E402

TINY = ["--dataset", "digits", "--subset", "64", "--batch_size", "16", "--init_channels", "4", "--layers", "3",
        "--steps", "2", "--epochs", "2", "--warmup", "1", "--prune_interval", "2", "--report_freq", "100",
        "--seed", "1", "--no_summary"]


def ours(path: Path) -> bool:
    return path.is_relative_to(ROOT) and not path.is_relative_to(ROOT / "tests")


def trace(argv: list[str]) -> dict[str, dict[str, list[str]]]:
    """{"called" or "by torch": {project file: functions entered}} during the first prune event."""
    entered: dict[str, dict[str, list[str]]] = {"called": {}, "by torch": {}}

    def profile(frame, event, arg):
        path = Path(frame.f_code.co_filename)
        if event == "call" and ours(path) and "<" not in frame.f_code.co_name:
            caller = frame.f_back and Path(frame.f_back.f_code.co_filename)
            how = "called" if caller and ours(caller) else "by torch"
            names = entered[how].setdefault(str(path.relative_to(ROOT)), [])
            if frame.f_code.co_name not in names:
                names.append(frame.f_code.co_name)

    real, calls = train_search.prune_event, []

    def first_traced(*args, **kwargs):
        if calls:
            return real(*args, **kwargs)
        calls.append(1)
        sys.setprofile(profile)
        try:
            return real(*args, **kwargs)
        finally:
            sys.setprofile(None)

    train_search.prune_event = first_traced
    with tempfile.TemporaryDirectory() as out:
        train_search.main([*TINY, "--data", out, "--out_dir", out, *argv])
    return entered


def layer(file: str) -> str:
    return "base" if file.startswith("plumbing/") and not file.startswith("plumbing/drivers/") else "method"


if __name__ == "__main__":
    found = trace(sys.argv[1:])
    out = {}
    for how, files in found.items():
        for name in ("method", "base"):
            mine = {f: fns for f, fns in files.items() if layer(f) == name}
            out[f"{how}, {name}"] = {"files": len(mine), "functions": sum(map(len, mine.values())), "entered": mine}
    print(json.dumps(out, indent=1))
