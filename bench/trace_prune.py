"""Which of the project's files one prune event passes through: runs a tiny search on the digits
(in this process, `--sal_type task` unless told otherwise), profiles its first prune event
(`train_search.prune_event`) and prints, per project file, the functions it entered.

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


def trace(argv: list[str]) -> dict[str, list[str]]:
    """{project file: functions entered} during the search's first prune event."""
    entered: dict[str, list[str]] = {}

    def profile(frame, event, arg):
        path = Path(frame.f_code.co_filename)
        if event == "call" and path.is_relative_to(ROOT) and "<" not in frame.f_code.co_name:
            names = entered.setdefault(str(path.relative_to(ROOT)), [])
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


if __name__ == "__main__":
    files = trace(sys.argv[1:])
    print(json.dumps({"files": len(files), "functions": sum(map(len, files.values())), "entered": files}, indent=1))
