"""Shared fixtures: two CPU threads, fixed seeds, and a helper that runs the real CLI scripts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist (scripts/test.sh runs 2 workers) each test process gets one core's worth of
# threads: two workers with 2 threads each on 2 cores would oversubscribe them.
THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
torch.set_num_threads(int(THREADS))


def pytest_collection_modifyitems(items):
    """With `--dist loadgroup`: the tests of a file on one worker (module fixtures run once), and
    the files that share a session fixture's searches on the same worker (run once, not twice)."""
    shared = ("complete_searches", "search_runs")
    groups = {}
    for item in items:
        uses = next((f for f in shared if f in item.fixturenames), None)
        if uses:
            groups.setdefault(item.module.__name__, uses)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups.get(item.module.__name__, item.module.__name__)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Every script the tests run goes through the device harness: a tensor the project's code makes
# without naming its device lands on the meta device, so that a device mix-up fails here as it
# would on a GPU (tests/device_harness.py).
HARNESS = str(ROOT / "tests" / "device_harness.py")


def run_cli(script: str, *args, cwd: Path | None = None, check: bool = True,
            timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python <script> args...` from the repository as a user would, under the device
    harness; return the result."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": THREADS, **(env or {})}
    result = subprocess.run(
        [sys.executable, HARNESS, str(ROOT / script), *map(str, args)],
        cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def make_image_folder(root: Path, size: int = 32, classes: int = 3, train: int = 8, val: int = 4) -> Path:
    """An ImageFolder tree `root/{train,val}/c<k>/<i>.jpg` of small JPEGs, one colour per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    for split, count in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([40 + 80 * c, 120, 220 - 80 * c])
            for i in range(count):
                pixels = (rng.rand(size, size, 3) * 50 + base).clip(0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return root


def make_imagenet16(root: Path, per_file: int = 6) -> Path:
    """ImageNet16-120 as NAS-Bench-201 reads it: `train_data_batch_1..10` and `val_data`, pickled
    dicts of `data` (n, 768) uint8 and 1-based `labels` over all 1,000 classes (every third image
    is of a class above 120, which the loader drops)."""
    import pickle

    import numpy as np

    rng = np.random.RandomState(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]:
        labels = [int(rng.randint(121, 1001)) if i % 3 == 2 else int(rng.randint(1, 121)) for i in range(per_file)]
        entry = {"data": rng.randint(0, 256, (per_file, 768), dtype=np.uint8), "labels": labels}
        with open(root / name, "wb") as f:
            pickle.dump(entry, f)
    return root


TINY_SEARCH = ["--dataset", "digits", "--subset", "64", "--batch_size", "16", "--init_channels", "4",
               "--layers", "3", "--steps", "2", "--epochs", "3", "--warmup", "1", "--prune_interval", "1",
               "--report_freq", "100", "--seed", "3", "--no_summary"]


@pytest.fixture(scope="session")
def search_runs(tmp_path_factory):
    """Two short real searches (restricted and --no_restrict): {kind: run directory}."""
    runs = {}
    for kind, extra in (("restricted", []), ("larger", ["--no_restrict", "--num_kept_max", "4"])):
        out = tmp_path_factory.mktemp(f"search_{kind}")
        run_cli("train_search.py", *TINY_SEARCH, "--out_dir", out, *extra)
        (runs[kind],) = [p for p in out.iterdir() if p.name.startswith("search-")]
    return runs


# 32 weight images in batches of 16 with a prune event every step: 2 events per epoch, so the
# 31 events of a 2-node cell (35 -> 4 ops) end in epoch 16 of 18.
TINY_COMPLETE = ["--dataset", "digits", "--subset", "64", "--batch_size", "16", "--init_channels", "4",
                 "--layers", "3", "--steps", "2", "--epochs", "18", "--warmup", "1", "--prune_interval", "1",
                 "--report_freq", "100", "--seed", "7"]
COMPLETE = {
    # s1 in the DARTS cell, with the saliency audit at prune events 1 and 21 (on one batch)
    "s1": ["--audit_every", "20", "--audit_batches", "1", "--hessian_chunk", "80"],
    # s1r in the larger space (pruning stops at 4 live ops per cell anywhere)
    "s1r-larger": ["--no_restrict", "--num_kept_min", "4", "--num_kept_max", "4", "--num_compare", "2",
                   "--iter_compare", "0"],
}


@pytest.fixture(scope="session")
def complete_searches(tmp_path_factory):
    """complete_searches(kind) -> the run directory of a search through its whole prune schedule
    (TINY_COMPLETE plus COMPLETE[kind]), run once per session."""
    done = {}

    def get(kind):
        if kind not in done:
            out = tmp_path_factory.mktemp(f"complete_{kind}")
            run_cli("train_search.py", *TINY_COMPLETE, *COMPLETE[kind], "--out_dir", out)
            (done[kind],) = out.iterdir()
        return done[kind]
    return get


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """A 3-class ImageFolder tree of 32-pixel JPEGs."""
    return make_image_folder(tmp_path_factory.mktemp("folder"))


def prune_randomly(space, restrict, seed, num_kept_min=8, invariant=None):
    from saliency import shortlist

    """Prune one op per cell type per event by random saliency until the space's rule stops;
    `invariant(cell, keep)` must hold after every prune."""
    gen = torch.Generator().manual_seed(seed)
    keeps = [torch.ones(len(space.endpoints), space.num_ops, dtype=torch.bool) for _ in space.cell_types]
    events = 0
    while any(space.unfinished(c, k, restrict, num_kept_min) for c, k in enumerate(keeps)):
        for c, keep in enumerate(keeps):
            if not space.unfinished(c, keep, restrict, num_kept_min):
                continue
            eligible = space.eligible(c, keep, restrict)
            flat = shortlist(torch.randn(keep.shape, generator=gen), eligible, 1)[0]
            assert eligible.view(-1)[flat] and keep.view(-1)[flat]
            keep.view(-1)[flat] = False
            if invariant:
                assert invariant(c, keep)
        events += 1
    return keeps, events


def fail_on_call(monkeypatch, owner, name: str, call: int, error: BaseException) -> None:
    """`owner.name` raises `error` on its `call`-th call (and works otherwise): a fault injected
    at a real call site (e.g. PyTorch's out-of-memory error inside a step)."""
    real, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise error
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapper)
