"""Collect the results.json of search and evaluation runs into the paper's results tables.

Usage: `python scripts/collect_results.py ckpt/ [ROOT ...] [--format markdown|csv|both] [--csv FILE]`.
Every `results.json` under the roots is read: one with a `variant` key is a search run
(train_search.py), one with `final_test_top1` an evaluation (train.py, train_imagenet.py). An
evaluation belongs to the search whose `results_of_7q/genotype/<epoch>.txt` its `genotype_source`
names (matched by path, relative paths against the current directory, then by the search run
directory's name), else to the nearest enclosing search run directory, else to no search: its
variant is then the genotype's name (`DARTS_V2`) or file stem, or the search run directory's name
when that search was not scanned.

Printed: one table per dataset with one row per variant, then `### searches`, one row per search
variant (also the searches not evaluated yet). Searches in another space than the DARTS space carry
it in brackets (`FP-DARTS-s1r [s3]`), searches on another data set than CIFAR-10 name it
(`... on svhn`). When there are any, two more tables follow: `### RobustDARTS S1-S4`, the test error
(100 - top-1) of the evaluated cells per space and data set, and `### NAS-Bench-201`, the
benchmark accuracies of the searches' final cells (valid and test on CIFAR-10, CIFAR-100 and
ImageNet16-120, as recorded by `--nb201_file` or `nasbench201.py`), one row per variant and data set
searched on. Figures read `mean ± std`, std being the sample
standard deviation (n - 1); a single run shows its value alone, without `±`. Decimals: accuracies,
params (M) and search cost 2, mult-adds (M) 1. Search cost is `search_cost_seconds * world_size /
3600` of each distinct linked search run, in GPU-hours; when a search ran on a device other than
CUDA, the device kinds follow in brackets, e.g. `1.20 ± 0.10 (cpu)`; `–` when no search is linked.
The CSV holds the evaluation rows as plain numbers (empty when not available, std empty for n = 1).
Unreadable results.json files, and those without what the tables read (a search's: a known
`search_space`, `dataset`, `world_size` and `device`; an evaluation's: `dataset` and
`genotype_source`), are skipped with a warning; a missing root or no results at all is an error:
one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nasbench201 import METRICS  # noqa: E402
from plumbing.cli import ArgumentParser, UserError, run_cli  # noqa: E402
from plumbing.fileio import atomic_write  # noqa: E402
from plumbing.rundir import results_files, search_of_epoch_file  # noqa: E402
from search_spaces import DARTS_RECIPE, RDARTS_RECIPE, SearchSpace, get_space  # noqa: E402

log = logging.getLogger("collect_results")

CSV_FIELDS = ("dataset", "variant", "n", "test_top1_mean", "test_top1_std", "params_M_mean", "params_M_std",
              "multadds_M_mean", "multadds_M_std", "search_gpu_hours_mean", "search_gpu_hours_std")
EVAL_COLUMNS = ("Variant", "Test top-1 (%)", "Params (M)", "Mult-adds (M)", "Search cost (GPU-h)", "Seeds")
SEARCH_COLUMNS = ("Variant", "Supernet valid top-1 (%)", "Search cost (GPU-h)", "Searches")
ROBUST_DATASETS = ("cifar10", "cifar100", "svhn")
# What each kind of run's results.json must hold for the tables (a search's also `variant`, an
# evaluation's `final_test_top1`).
SEARCH_KEYS, EVAL_KEYS = ("search_space", "dataset", "world_size", "device"), ("dataset", "genotype_source")
NB201_COLUMNS = ("Variant", "CIFAR-10 valid", "CIFAR-10 test", "CIFAR-100 valid", "CIFAR-100 test",
                 "ImageNet16-120 valid", "ImageNet16-120 test", "Search cost (GPU-h)", "Searches")


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", metavar="ROOT",
                   help="folders searched recursively for the results.json of run directories")
    p.add_argument("--format", choices=("markdown", "csv", "both"), default="markdown",
                   help="what to print on stdout: Markdown tables (default), CSV, or both")
    p.add_argument("--csv", metavar="FILE",
                   help="also write the CSV to FILE (atomically: a temporary file, then a rename)")
    p.add_argument("--plot", metavar="DIR", nargs="?", const=".", default=None,
                   help="also draw each data set's table as results_<dataset>.png/.pdf in DIR "
                        "(default: the current folder)")
    return p


def _number(value) -> float | None:
    """`value` as a float, or None when it is missing or not a number."""
    return None if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)


def scan(roots: list[Path]) -> tuple[dict[Path, dict], list[tuple[Path, dict]]]:
    """({search run dir: results}, [(evaluation run dir, results)]) from every results.json under `roots`."""
    searches, evals, seen = {}, [], set()
    for root in roots:
        for path in results_files(root):
            run_dir = path.parent.resolve()
            if run_dir in seen:  # roots that overlap
                continue
            seen.add(run_dir)
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
                log.warning("skipping %s: %s", path, e)
                continue
            if isinstance(data, dict) and isinstance(data.get("variant"), str):
                if why := unfit(data, SEARCH_KEYS):
                    log.warning("skipping %s: a search's results %s", path, why)
                else:
                    searches[run_dir] = data
            elif isinstance(data, dict) and _number(data.get("final_test_top1")) is not None:
                if why := unfit(data, EVAL_KEYS):
                    log.warning("skipping %s: an evaluation's results %s", path, why)
                else:
                    evals.append((run_dir, data))
            else:
                log.warning("skipping %s: neither a search (variant) nor an evaluation (final_test_top1)",
                            path)
    return searches, evals


def unfit(data: dict, keys: tuple[str, ...]) -> str | None:
    """Why a run's results cannot go in the tables (a key of `keys` missing, or a search space
    that does not exist), or None."""
    missing = [key for key in keys if key not in data]
    if missing:
        return f"without {', '.join(missing)}"
    if "search_space" in keys:
        try:
            space_of(data)
        except (ValueError, TypeError):
            return f"in an unknown search space ({data['search_space']!r})"
    return None


def find_search(run_dir: Path, data: dict, searches: dict[Path, dict]) -> Path | None:
    """The scanned search run an evaluation trained a genotype of (see the module docstring), or None."""
    search = search_of_epoch_file(Path(str(data["genotype_source"])))
    if search is not None:
        resolved = (Path.cwd() / search).resolve()
        if resolved in searches:
            return resolved
        named = sorted(s for s in searches if s.parts[-1] == search.parts[-1])  # (the same directory name)
        if named:
            return named[0]
    return next((p for p in run_dir.parents if p in searches), None)


def unlinked_variant(source: str) -> str:
    """The row name of an evaluation without a scanned search: its genotype's name or file stem."""
    search = search_of_epoch_file(Path(source))
    return search.name if search is not None else (Path(source).stem or source or "unknown")


def space_of(search: dict) -> SearchSpace:
    """The search space of a search's results."""
    return _space(search["search_space"])


@functools.cache
def _space(name: str) -> SearchSpace:
    """The search space named `name`: one object per space, so that rows group by it."""
    return get_space(name)


# What the tables ask of a space (the DARTS space's rows carry no bracket, RobustDARTS' S1-S4
# have a table of their own), told by the authors' search recipe the space comes with.
def is_darts_space(space: SearchSpace) -> bool:
    return space.recipe is DARTS_RECIPE


def is_robustdarts(space: SearchSpace) -> bool:
    return space.recipe is RDARTS_RECIPE


def labelled(variant: str, search: dict, *, space: bool = True, dataset: bool = False) -> str:
    """`variant`, with (`space`) the search space in brackets unless it is the DARTS space, and
    (`dataset`) the data set searched on unless it is CIFAR-10."""
    found, searched = space_of(search), search["dataset"]
    return variant + ("" if not space or is_darts_space(found) else f" [{found.name}]") + (
        f" on {searched}" if dataset and searched != "cifar10" else "")


def gpu_hours(search: dict) -> float | None:
    """Device-hours of a search: wall seconds times processes / 3600."""
    seconds = _number(search.get("search_cost_seconds"))
    return None if seconds is None else seconds * search["world_size"] / 3600


def summarise(row: dict, columns: dict[str, list[float]], searches: list[dict]) -> dict:
    """`row` plus `<name>_mean` and `<name>_std` of each column and of the searches' GPU-hours."""
    timed = [s for s in searches if gpu_hours(s) is not None]
    columns = {**columns, "search_gpu_hours": [gpu_hours(s) for s in timed]}
    for name, values in columns.items():
        row[f"{name}_mean"] = statistics.mean(values) if values else None
        row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else None
    row["search_devices"] = ", ".join(sorted({str(s["device"]).split(":")[0] for s in timed}))
    return row


def evaluation_rows(searches: dict[Path, dict], evals: list[tuple[Path, dict]]) -> list[dict]:
    """One row per (dataset, variant) of the evaluations, sorted by dataset then variant."""
    groups: dict[tuple[str, str], list[tuple[dict, Path | None]]] = {}
    for run_dir, data in evals:
        search = find_search(run_dir, data, searches)
        source = str(data["genotype_source"])
        variant = labelled(searches[search]["variant"], searches[search]) if search else unlinked_variant(source)
        groups.setdefault((str(data["dataset"]), variant), []).append((data, search))
    rows = []
    for (dataset, variant), runs in sorted(groups.items()):
        linked = [searches[s] for s in dict.fromkeys(s for _, s in runs if s is not None)]
        columns = {key: [v for d, _ in runs if (v := _number(d.get(field))) is not None]
                   for key, field in (("test_top1", "final_test_top1"), ("params_M", "params_M"),
                                      ("multadds_M", "multadds_M"))}
        row = {"table": dataset, "dataset": dataset, "variant": variant, "n": len(runs),
               "space": space_of(linked[0]) if linked else None,
               "base_variant": linked[0]["variant"] if linked else variant}
        rows.append(summarise(row, columns, linked))
    return rows


def search_rows(searches: dict[Path, dict]) -> list[dict]:
    """One row per search variant (evaluated or not), sorted by variant."""
    groups: dict[str, list[dict]] = {}
    for data in searches.values():
        groups.setdefault(labelled(data["variant"], data, dataset=True), []).append(data)
    rows = []
    for variant, runs in sorted(groups.items()):
        valid = [v for d in runs if (v := _number(d.get("final_valid_top1"))) is not None]
        rows.append(summarise({"table": "searches", "variant": variant, "n": len(runs)},
                              {"valid_top1": valid}, runs))
    return rows


def nb201_rows(searches: dict[Path, dict]) -> list[dict]:
    """One row per (variant, data set searched on) of the NAS-Bench-201 searches: the mean and
    std of the benchmark accuracies of their final cells (searches not looked up count in n only)."""
    groups: dict[str, list[dict]] = {}
    for data in searches.values():
        if space_of(data).has_benchmark:  # (the table is NAS-Bench-201's: no bracket)
            groups.setdefault(labelled(data["variant"], data, space=False, dataset=True), []).append(data)
    rows = []
    for variant, runs in sorted(groups.items()):
        found = [d["benchmark"] for d in runs if isinstance(d.get("benchmark"), dict)]
        columns = {key: [v for b in found if (v := _number(b.get(key))) is not None] for key, _, _ in METRICS}
        rows.append(summarise({"table": "NAS-Bench-201", "variant": variant, "n": len(runs)}, columns, runs))
    return rows


def robustdarts_table(rows: list[dict]) -> list[str]:
    """Markdown lines of the S1-S4 table: test error (100 - top-1) per space and data set."""
    part = [r for r in rows if r.get("space") is not None and is_robustdarts(r["space"])
            and r["dataset"] in ROBUST_DATASETS]
    if not part:
        return []
    body = []
    pairs = sorted({(r["base_variant"], r["space"]) for r in part}, key=lambda k: (k[1].name, k[0]))
    for variant, space in pairs:
        cells = []
        for dataset in ROBUST_DATASETS:
            match = [r for r in part if (r["base_variant"], r["space"], r["dataset"]) == (variant, space, dataset)]
            if not match:
                cells.append("–")
                continue
            mean, std, n = match[0]["test_top1_mean"], match[0]["test_top1_std"], match[0]["n"]
            error = "–" if mean is None else f"{100 - mean:.2f}" + ("" if std is None else f" ± {std:.2f}")
            cells.append(f"{error} ({n})")
        body.append((space.name.upper(), variant, *cells))
    header = ("Space", "Variant", "CIFAR-10", "CIFAR-100", "SVHN")
    rule = ["---", "---"] + ["---:"] * 3
    return ["### RobustDARTS S1-S4: test error (%) (seeds)", "",
            *("| " + " | ".join(c) + " |" for c in (header, rule, *body)), ""]


def cell(row: dict, name: str, decimals: int) -> str:
    """`mean ± std` of column `name` (the mean alone for one run, `–` for none)."""
    mean, std = row[f"{name}_mean"], row[f"{name}_std"]
    if mean is None:
        return "–"
    return f"{mean:.{decimals}f}" + ("" if std is None else f" ± {std:.{decimals}f}")


def cost_cell(row: dict) -> str:
    """The search cost cell, with the device kinds in brackets unless every search ran on CUDA."""
    text = cell(row, "search_gpu_hours", 2)
    return text if text == "–" or row["search_devices"] == "cuda" else f"{text} ({row['search_devices']})"


def markdown(rows: list[dict]) -> str:
    """The Markdown tables: one per dataset, then the searches."""
    lines = []
    for table in dict.fromkeys(r["table"] for r in rows):
        part = [r for r in rows if r["table"] == table]
        if table == "searches":
            lines += robustdarts_table(rows)
            header = SEARCH_COLUMNS
            body = [(r["variant"], cell(r, "valid_top1", 2), cost_cell(r), str(r["n"])) for r in part]
        elif table == "NAS-Bench-201":
            header = NB201_COLUMNS
            body = [(r["variant"], *(cell(r, key, 2) for key, _, _ in METRICS), cost_cell(r), str(r["n"]))
                    for r in part]
        else:
            header = EVAL_COLUMNS
            body = [(r["variant"], cell(r, "test_top1", 2), cell(r, "params_M", 2), cell(r, "multadds_M", 1),
                     cost_cell(r), str(r["n"])) for r in part]
        rule = ["---"] + ["---:"] * (len(header) - 1)
        lines += [f"### {table}", "", *("| " + " | ".join(c) + " |" for c in (header, rule, *body)), ""]
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    """The CSV of the evaluation rows: plain numbers, empty where not available."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        if "dataset" in row:
            writer.writerow({k: "" if v is None else round(v, 6) if isinstance(v, float) else v
                             for k, v in row.items()})
    return out.getvalue()


# The authors' README: test top-1 (%) and params (M) of the cells they found (means of three searches).
PUBLISHED = {"cifar10": {"FP-DARTS-s1": (97.41, 3.3), "FP-DARTS-s2": (97.45, 3.3), "FP-DARTS-s1r": (97.55, 3.5),
                         "FP-DARTS-s1r-larger": (97.52, 3.4)},
             "imagenet": {"FP-DARTS-s2": (75.0, 4.9), "FP-DARTS-s1r": (75.4, 5.1), "FP-DARTS-s1r-larger": (75.3, 5.1)}}


def plot(rows: list[dict], out: Path) -> list[Path]:
    """results_<dataset>.png/.pdf for every data set with evaluations; return the files."""
    from plumbing.drivers import plots  # (matplotlib: only with --plot)

    written = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows if "dataset" in r):
        ours = [r for r in rows if r.get("dataset") == dataset]
        try:
            figure = plots.fig_results(ours, dataset, PUBLISHED.get(dataset, {}))
            written += plots.save(figure, out / f"results_{dataset}")
        except OSError as e:
            raise UserError(f"cannot write the figures to {out}: {e}") from None
    return written


def main(argv: list[str] | None = None) -> list[dict]:
    """Print the tables (and write `--csv`); return their rows, evaluations first, then searches."""
    args = build_parser().parse_args(argv)
    roots = [Path(r) for r in args.roots]
    for root in roots:
        if not root.is_dir():
            raise UserError(f"no such folder '{root}'")
    searches, evals = scan(roots)
    if not searches and not evals:
        raise UserError(f"no results.json of a search or evaluation run under {', '.join(args.roots)}")
    rows = evaluation_rows(searches, evals) + search_rows(searches) + nb201_rows(searches)
    text = to_csv(rows)
    if args.format in ("markdown", "both"):
        sys.stdout.write(markdown(rows))
    if args.format in ("csv", "both"):
        sys.stdout.write(("\n" if args.format == "both" else "") + text)
    if args.plot is not None:
        for path in plot(rows, Path(args.plot)):
            sys.stderr.write(f"figure: {path}\n")  # (stdout holds the tables)
    if args.csv:
        try:
            atomic_write(args.csv, text)
        except OSError as e:
            raise UserError(f"cannot write {args.csv}: {e}") from None
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    run_cli(main)
