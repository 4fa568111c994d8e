"""NAS-Bench-201 look-ups: the benchmark's accuracies of a cell given its architecture string, read
from the user's benchmark file with the official API package (NAS-Bench-201 v1.0 / v1.1 through
`nas-bench-201`, NATS-Bench topology through `nats_bench`); also a command line that looks up the
cells of finished searches:

    python nasbench201.py --nb201_file NAS-Bench-201-v1_1-096897.pth ckpt/search-*nb201*/
    python nasbench201.py --nb201_file NATS-tss-v1_0-3ffb9.pickle.pbz2 --arch_str '|nor_conv_3x3~0|+...'
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import sys
import warnings
from pathlib import Path

from plumbing import rundir
from plumbing.cli import ArgumentParser, UserError, run_cli
from plumbing.fileio import write_json

FILES = ("NAS-Bench-201-v1_0-e61699.pth or NAS-Bench-201-v1_1-096897.pth (pip install nas-bench-201), "
         "or NATS-tss-v1_0-3ffb9.pickle.pbz2 or its unpacked folder NATS-tss-v1_0-3ffb9-simple "
         "(pip install nats_bench), from https://github.com/D-X-Y/NATS-Bench")
HOW_TO = ("no --nb201_file, so the found cell's benchmark accuracies are not looked up; get "
          f"{FILES}, then give --nb201_file PATH, or look this search up when it is done: "
          "python nasbench201.py --nb201_file PATH {run_dir}")

# (our key, the benchmark's data set, the field of `get_more_info`): the accuracies (%) a
# NAS-Bench-201 table reports, after the 200-epoch protocol, averaged over the benchmark's seeds.
METRICS = (
    ("cifar10_valid", "cifar10-valid", "valid-accuracy"),  # trained on 25k, the other 25k
    ("cifar10_test", "cifar10", "test-accuracy"),  # trained on all 50k, the 10k test images
    ("cifar100_valid", "cifar100", "valid-accuracy"),
    ("cifar100_test", "cifar100", "test-accuracy"),
    ("imagenet16_valid", "ImageNet16-120", "valid-accuracy"),
    ("imagenet16_test", "ImageNet16-120", "test-accuracy"),
)


KEYS = [key for key, _, _ in METRICS]


def summary(rows: list[dict], path: str | os.PathLike) -> dict:
    """The NAS-Bench-201 fields of a search's results.json from its per-epoch rows
    ({"epoch", "arch_str", KEYS...}; figures may be missing): the final cell and its accuracies,
    every epoch's, and the benchmark file."""
    final = rows[-1]
    return {"arch_str": final["arch_str"], "benchmark": {k: final.get(k) for k in KEYS},
            "benchmark_per_epoch": [{k: r.get(k) for k in ("epoch", "arch_str", *KEYS)} for r in rows],
            "benchmark_file": str(path)}


def _import(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"reading a NAS-Bench-201 file needs the official API: pip install {package}") from None


def _nas_bench_201(path: Path):
    """The NAS-Bench-201 API on a .pth file. PyTorch 2.6+ loads files as weights only by
    default; a benchmark file that holds other objects is the user's own, so it is loaded
    again without that restriction."""
    api = _import("nas_201_api", "nas-bench-201")
    try:
        return api.NASBench201API(str(path), verbose=False)
    except pickle.UnpicklingError:
        saved = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            with warnings.catch_warnings():  # PyTorch's notice that the variable is set
                warnings.simplefilter("ignore", UserWarning)
                return api.NASBench201API(str(path), verbose=False)
        finally:
            if saved is None:
                del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
            else:
                os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = saved


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


class Benchmark:
    """A benchmark file opened with its official API; `lookup` gives a cell's accuracies."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path}: no such NAS-Bench-201 file; expected {FILES}")
        nats = self.path.is_dir() or self.path.name.endswith((".pbz2", ".pickle"))
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the APIs print as they load
                if nats:
                    self.api = _import("nats_bench", "nats_bench").create(
                        str(self.path), "tss", fast_mode=self.path.is_dir(), verbose=False)
                else:
                    self.api = _nas_bench_201(self.path)
        except UserError:
            raise
        except Exception as e:  # the APIs assert, raise ValueError, or fail inside pickle
            raise UserError(f"{self.path}: not a readable NAS-Bench-201 / NATS-Bench topology file "
                            f"({_first_line(e)}); expected {FILES}") from None

    def lookup(self, arch_str: str) -> dict[str, float]:
        """The METRICS of architecture `arch_str`; UserError when the file does not hold it."""
        with contextlib.redirect_stdout(io.StringIO()):
            index = self.api.query_index_by_arch(arch_str)
            if index < 0:
                raise UserError(f"{self.path}: architecture {arch_str} is not in this benchmark file")
            try:
                return {key: float(self.api.get_more_info(index, dataset, hp="200", is_random=False)[field])
                        for key, dataset, field in METRICS}
            except Exception as e:  # a partial file: no results for this cell, data set or field
                raise UserError(f"{self.path}: no 200-epoch results for architecture {arch_str} "
                                f"({_first_line(e)})") from None


def lookup_run(benchmark: Benchmark, run_dir: Path) -> dict:
    """Look up every epoch's cell of a NAS-Bench-201 search run and its final cell; add them to
    the run's results.json (when it has one) and return {"arch_str", "benchmark", "per_epoch"}."""
    archs = {}
    for epoch in rundir.epochs(run_dir):
        path = rundir.epoch_path(run_dir, "genotype", epoch)
        try:
            archs[epoch] = json.loads(path.read_text())["arch_str"]
        except (ValueError, KeyError, TypeError, OSError):
            raise UserError(f"{path}: not a NAS-Bench-201 architecture file (is {run_dir} a "
                            "train_search.py --search_space nb201 run?)") from None
    if not archs:
        raise UserError(f"{run_dir}: no per-epoch architectures in {rundir.epoch_path(run_dir, 'genotype', 0).parent}")
    found = summary([{"epoch": e, "arch_str": a, **benchmark.lookup(a)} for e, a in sorted(archs.items())],
                    benchmark.path)
    results = run_dir / rundir.RESULTS
    if results.is_file():
        write_json(results, {**json.loads(results.read_text()), **found})
    return found


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR",
                   help="search run directories of train_search.py --search_space nb201")
    p.add_argument("--nb201_file", required=True,
                   help="the benchmark: NAS-Bench-201 v1.0/v1.1 .pth, "
                        "or NATS-Bench's NATS-tss-v1_0-3ffb9 file or folder")
    p.add_argument("--arch_str", action="append", default=[],
                   help="also look up this architecture string (repeatable)")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    """Print (and add to each run's results.json) the benchmark accuracies."""
    p = build_parser()
    args = p.parse_args(argv)
    if not args.runs and not args.arch_str:
        p.error("give run directories and/or --arch_str")
    benchmark = Benchmark(args.nb201_file)
    rows = [{"source": s, "arch_str": s, **benchmark.lookup(s)} for s in args.arch_str]
    for run_dir in args.runs:
        found = lookup_run(benchmark, run_dir)
        rows.append({"source": str(run_dir), "arch_str": found["arch_str"], **found["benchmark"]})
    lines = ["\t".join(["source", *KEYS, "arch_str"])]  # the table is the command's output
    lines += ["\t".join([r["source"], *(f"{r[k]:.2f}" for k in KEYS), r["arch_str"]]) for r in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    run_cli(main)
