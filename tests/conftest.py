"""Shared fixtures: two CPU threads, fixed seeds, and a helper that runs the real CLI scripts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_cli(script: str, *args, cwd: Path | None = None, check: bool = True,
            timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python <script> args...` from the repository as a user would; return the result."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2", **(env or {}))
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result
