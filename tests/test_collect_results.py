"""scripts/collect_results.py on a fake tree of runs: linking, means, stds, GPU-hours, CSV, errors."""
import csv
import io
import json

import pytest

from conftest import ROOT, run_cli

SCRIPT = "scripts/collect_results.py"
SCRIPT_PATH = ROOT / SCRIPT
S1, S1R, S2 = "FP-DARTS-s1", "FP-DARTS-s1r", "FP-DARTS-s2"


def write(run_dir, **results):
    """Write `results` as `run_dir/results.json`; return `run_dir`."""
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"run_dir": str(run_dir), **results}))
    return run_dir


def search(root, name, variant, seed, seconds, valid, device="cuda:0", **extra):
    """A search run directory with a genotype file for epoch 49 (by default a one-process search
    on CIFAR-10 in the DARTS space)."""
    extra = {"search_space": "darts", "dataset": "cifar10", "world_size": 1, **extra}
    run = write(root / name, variant=variant, seed=seed, search_cost_seconds=seconds, device=device,
                final_valid_top1=valid, genotype={}, **extra)
    (run / "results_of_7q" / "genotype").mkdir(parents=True)
    (run / "results_of_7q" / "genotype" / "49.txt").write_text("{}")
    return run


def evaluation(run_dir, top1, params, madds, source, **extra):
    """An evaluation run directory (by default on CIFAR-10)."""
    return write(run_dir, final_test_top1=top1, final_test_top5=99.0, params_M=params, multadds_M=madds,
                 genotype_source=str(source), seed=0, wall_time_seconds=10.0, device="cuda:0",
                 **{"dataset": "cifar10", "world_size": 1, **extra})


@pytest.fixture
def tree(tmp_path):
    """tmp_path/ckpt: 3 s1 searches (evaluated inside, one also on ImageNet), 2 s1r searches on 2 GPUs
    (evaluated under tmp_path/evals), an unevaluated CPU s2 search, a corrupt results.json;
    tmp_path/evals: the s1r evaluations and a DARTS_V2 one."""
    ckpt, evals = tmp_path / "ckpt", tmp_path / "evals"
    # s1: 1.0, 2.0 and 1.5 GPU-hours; valid 88, 89, 90; test 97.0, 97.2, 97.4
    s1_runs = ((0, 3600, 97.0, 3.3, 500), (1, 7200, 97.2, 3.4, 520), (2, 5400, 97.4, 3.5, 540))
    for seed, seconds, top1, params, madds in s1_runs:
        run = search(ckpt, f"search-s1-20240101-00000{seed}-task{seed}", S1, seed, seconds, 88.0 + seed)
        genotype = run / "results_of_7q" / "genotype" / "49.txt"
        evaluation(run / f"eval-s1-2024010{seed}-000000-g49", top1, params, madds, genotype)
    # ImageNet eval of the first s1 search, linked by a genotype path relative to tmp_path (the cwd)
    evaluation(evals / "imagenet-s1-20240105-000000-g49", 75.3, 5.1, 580.0,
               "ckpt/search-s1-20240101-000000-task0/results_of_7q/genotype/49.txt", dataset="imagenet")
    # s1r on 2 GPUs: 1800 s and 2700 s of wall time -> 1.0 and 1.5 GPU-hours
    for k, seconds in enumerate((1800, 2700)):
        search(ckpt, f"search-s1r-20240102-00000{k}-task{k}", S1R, k, seconds, 91.0, world_size=2)
    # linked by the absolute path, then by the name only (the run was moved from elsewhere)
    evaluation(evals / "eval-s1r-20240103-000000-g49", 97.5, 3.6, 600.0,
               ckpt / "search-s1r-20240102-000000-task0" / "results_of_7q" / "genotype" / "49.txt",
               dataset="cifar10", world_size=4)
    evaluation(evals / "eval-s1r-20240103-000001-g49", 97.7, 3.6, 610.0,
               "/elsewhere/ckpt/search-s1r-20240102-000001-task1/results_of_7q/genotype/49.txt",
               dataset="cifar10")
    search(ckpt, "search-s2-20240104-000000-task0", S2, 0, 36000, 80.0, device="cpu", world_size=1)
    evaluation(evals / "eval-darts-20240106-000000-gDARTS_V2", 97.0, 3.3, 528.0, "DARTS_V2",
               dataset="cifar10")
    (ckpt / "eval-broken").mkdir()
    (ckpt / "eval-broken" / "results.json").write_text('{"final_test_top1": 9')
    return tmp_path


EXPECTED_MARKDOWN = """\
### cifar10

| Variant | Test top-1 (%) | Params (M) | Mult-adds (M) | Search cost (GPU-h) | Seeds |
| --- | ---: | ---: | ---: | ---: | ---: |
| DARTS_V2 | 97.00 | 3.30 | 528.0 | – | 1 |
| FP-DARTS-s1 | 97.20 ± 0.20 | 3.40 ± 0.10 | 520.0 ± 20.0 | 1.50 ± 0.50 | 3 |
| FP-DARTS-s1r | 97.60 ± 0.14 | 3.60 ± 0.00 | 605.0 ± 7.1 | 1.25 ± 0.35 | 2 |

### imagenet

| Variant | Test top-1 (%) | Params (M) | Mult-adds (M) | Search cost (GPU-h) | Seeds |
| --- | ---: | ---: | ---: | ---: | ---: |
| FP-DARTS-s1 | 75.30 | 5.10 | 580.0 | 1.00 | 1 |

### searches

| Variant | Supernet valid top-1 (%) | Search cost (GPU-h) | Searches |
| --- | ---: | ---: | ---: |
| FP-DARTS-s1 | 89.00 ± 1.00 | 1.50 ± 0.50 | 3 |
| FP-DARTS-s1r | 91.00 ± 0.00 | 1.25 ± 0.35 | 2 |
| FP-DARTS-s2 | 80.00 | 10.00 (cpu) | 1 |
"""

# (dataset, variant): n, then mean and std of test top-1, params, mult-adds, GPU-hours (None: empty)
EXPECTED_CSV = {
    ("cifar10", "DARTS_V2"): (1, 97.0, None, 3.3, None, 528.0, None, None, None),
    ("cifar10", S1): (3, 97.2, 0.2, 3.4, 0.1, 520.0, 20.0, 1.5, 0.5),
    ("cifar10", S1R): (2, 97.6, 0.2 / 2 ** 0.5, 3.6, 0.0, 605.0, 10 / 2 ** 0.5, 1.25, 0.5 / 2 ** 0.5),
    ("imagenet", S1): (1, 75.3, None, 5.1, None, 580.0, None, 1.0, None),
}


def check_csv(text):
    """The CSV has exactly the expected rows, in order, with the expected numbers."""
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["dataset"], r["variant"]) for r in rows] == list(EXPECTED_CSV)
    for row in rows:
        n, *numbers = EXPECTED_CSV[row["dataset"], row["variant"]]
        assert int(row["n"]) == n
        names = [f"{c}_{s}" for c in ("test_top1", "params_M", "multadds_M", "search_gpu_hours")
                 for s in ("mean", "std")]
        for name, expected in zip(names, numbers):
            if expected is None:
                assert row[name] == "", name
            else:
                assert float(row[name]) == pytest.approx(expected, abs=1e-6), name


def test_markdown_tables_and_warning(tree):
    result = run_cli(SCRIPT, "ckpt", "evals", cwd=tree)
    assert result.stdout == EXPECTED_MARKDOWN
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: skipping ") and "eval-broken/results.json" in warnings[0]


def test_csv_stdout_and_file(tree):
    out = tree / "tables" / "results.csv"
    result = run_cli(SCRIPT, "ckpt", "evals", "--format", "csv", "--csv", out, cwd=tree)
    check_csv(result.stdout)
    assert out.read_text() == result.stdout
    assert not [p for p in out.parent.iterdir() if p.name != "results.csv"]  # no temporary file left


def test_both_formats_and_overlapping_roots(tree):
    # tmp_path holds both roots: every run is counted once
    result = run_cli(SCRIPT, ".", "ckpt", "--format", "both", cwd=tree)
    markdown, _, csv_text = result.stdout.partition("\ndataset,")
    assert markdown == EXPECTED_MARKDOWN
    check_csv("dataset," + csv_text)


def test_searches_only(tmp_path):
    search(tmp_path, "search-s2-20240104-000000-task0", S2, 0, 1800, 70.0, world_size=2)
    result = run_cli(SCRIPT, tmp_path, "--format", "both")
    assert "### searches" in result.stdout and "| FP-DARTS-s2 | 70.00 | 1.00 | 1 |" in result.stdout
    assert result.stdout.endswith(",".join(["dataset", "variant", "n", "test_top1_mean", "test_top1_std",
                                            "params_M_mean", "params_M_std", "multadds_M_mean",
                                            "multadds_M_std", "search_gpu_hours_mean",
                                            "search_gpu_hours_std"]) + "\n")


def test_results_without_what_the_tables_read_are_skipped_with_a_warning(tmp_path):
    """A search's results.json without its space (or in a space that does not exist) or an
    evaluation's without its data set: one warning each, as for an unreadable file."""
    kept = search(tmp_path, "search-s1-20240101-000000-task0", S1, 0, 3600, 88.0)
    spaceless = search(tmp_path, "search-s1-20240101-000001-task1", S1, 1, 3600, 89.0)
    data = json.loads((spaceless / "results.json").read_text())
    del data["search_space"]
    (spaceless / "results.json").write_text(json.dumps(data))
    unknown = search(tmp_path, "search-s1-20240101-000002-task2", S1, 2, 3600, 90.0, search_space="s9")
    evaluation(kept / "eval-s1-20240102-000000-g49", 97.0, 3.3, 500.0,
               kept / "results_of_7q" / "genotype" / "49.txt")
    data = json.loads((kept / "eval-s1-20240102-000000-g49" / "results.json").read_text())
    del data["dataset"]
    (kept / "eval-s1-20240102-000001-g49").mkdir()
    (kept / "eval-s1-20240102-000001-g49" / "results.json").write_text(json.dumps(data))
    result = run_cli(SCRIPT, tmp_path)
    assert "| FP-DARTS-s1 | 97.00 | 3.30 | 500.0 | 1.00 | 1 |" in result.stdout
    assert "| FP-DARTS-s1 | 88.00 | 1.00 | 1 |" in result.stdout
    skipped = lambda run, why: f"warning: skipping {run / 'results.json'}: {why}"
    assert sorted(result.stderr.splitlines()) == [
        skipped(kept / "eval-s1-20240102-000001-g49", "an evaluation's results without dataset"),
        skipped(spaceless, "a search's results without search_space"),
        skipped(unknown, "a search's results in an unknown search space ('s9')")]


@pytest.mark.parametrize("args, message", [
    (["missing"], "error: no such folder 'missing'"),
    (["empty"], "error: no results.json of a search or evaluation run under empty"),
    (["empty", "--format", "html"], "collect_results.py: error: argument --format: invalid choice"),
])
def test_errors(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    result = run_cli(SCRIPT, *args, cwd=tmp_path, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(message)


def test_search_space_tables(tmp_path):
    """S1-S4 evaluations give the test-error table per space and data set; NAS-Bench-201 searches
    the benchmark table; neither mixes with the DARTS-space rows of the same variant."""
    for k, (space, dataset, top1) in enumerate((("s2", "cifar10", 96.0), ("s2", "cifar10", 97.0),
                                                ("s2", "svhn", 97.5), ("s3", "cifar100", 75.0))):
        run = search(tmp_path, f"search-{space}_{dataset}-2024010{k}-000000-task{k}", S1R, k, 3600, 80.0,
                     dataset=dataset, search_space=space)
        evaluation(run / "eval-x-g49", top1, 3.0, 500.0, run / "results_of_7q" / "genotype" / "49.txt",
                   dataset=dataset)
    darts = search(tmp_path, "search-s1r-20240109-000000-task0", S1R, 0, 3600, 80.0, dataset="cifar10")
    evaluation(darts / "eval-y-g49", 97.6, 3.5, 600.0, darts / "results_of_7q" / "genotype" / "49.txt",
               dataset="cifar10")
    for k, base in enumerate((90.0, 92.0)):
        bench = {key: base + i for i, key in enumerate(("cifar10_valid", "cifar10_test", "cifar100_valid",
                                                         "cifar100_test", "imagenet16_valid", "imagenet16_test"))}
        search(tmp_path, f"search-nb201_cifar10-2024011{k}-000000-task{k}", S1R, k, 1800, 60.0,
               dataset="cifar10", search_space="nb201", benchmark=bench)
    search(tmp_path, "search-nb201_cifar100-20240120-000000-task0", S1R, 0, 1800, 60.0,
           dataset="cifar100", search_space="nb201", benchmark=None)
    out = run_cli(SCRIPT, tmp_path).stdout
    assert "| FP-DARTS-s1r | 97.60 | 3.50 | 600.0 | 1.00 | 1 |" in out  # the DARTS space alone
    assert "| FP-DARTS-s1r [s2] | 96.50 ± 0.71 | 3.00 ± 0.00 | 500.0 ± 0.0 | 1.00 ± 0.00 | 2 |" in out
    robust = out[out.index("### RobustDARTS S1-S4"):out.index("### searches")]
    assert robust.splitlines()[2:6] == [
        "| Space | Variant | CIFAR-10 | CIFAR-100 | SVHN |",
        "| --- | --- | ---: | ---: | ---: |",
        "| S2 | FP-DARTS-s1r | 3.50 ± 0.71 (2) | – | 2.50 (1) |",
        "| S3 | FP-DARTS-s1r | – | 25.00 (1) | – |",
    ]
    nb201 = out[out.index("### NAS-Bench-201"):]
    assert "| FP-DARTS-s1r | 91.00 ± 1.41 | 92.00 ± 1.41 | 93.00 ± 1.41 | 94.00 ± 1.41 | 95.00 ± 1.41 | " \
           "96.00 ± 1.41 | 0.50 ± 0.00 | 2 |" in nb201
    assert "| FP-DARTS-s1r on cifar100 | – | – | – | – | – | – | 0.50 | 1 |" in nb201
    assert "| FP-DARTS-s1r [s2] on svhn | 80.00 | 1.00 | 1 |" in out  # the searches table


def test_plot_draws_each_table_with_the_papers_figures(tree):
    import importlib.util

    import numpy as np

    from plumbing.drivers import plots
    from test_plots import check_figure_files

    result = run_cli(SCRIPT, "ckpt", "evals", "--plot", "figures", cwd=tree)
    assert result.stdout == EXPECTED_MARKDOWN  # the tables are unchanged; the figures are named on stderr
    written = sorted((tree / "figures").iterdir())
    assert [p.name for p in written] == ["results_cifar10.pdf", "results_cifar10.png",
                                         "results_imagenet.pdf", "results_imagenet.png"]
    assert all(f"figure: figures/{p.name}" in result.stderr for p in written)
    check_figure_files(written)
    # The data behind the CIFAR-10 figure: one point per variant at its means, the paper's stars.
    spec = importlib.util.spec_from_file_location("collect_results", SCRIPT_PATH)
    collect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(collect)
    rows = [r for r in collect.evaluation_rows(*collect.scan([tree / "ckpt", tree / "evals"]))
            if r["dataset"] == "cifar10"]
    fig = plots.fig_results(rows, "cifar10", collect.PUBLISHED["cifar10"])
    params, cost = fig.axes[:2]
    points = [c[0].get_data() for c in params.containers]  # errorbar containers: (line, caps, bars)
    assert [(float(x[0]), float(y[0])) for x, y in points] == [
        pytest.approx((r["params_M_mean"], r["test_top1_mean"])) for r in rows]
    stars = np.concatenate([c.get_offsets() for c in params.collections if c.get_gid() == "paper"])
    assert sorted(map(tuple, stars)) == sorted((p, t) for t, p in collect.PUBLISHED["cifar10"].values())
    assert len(cost.containers) == 2  # DARTS_V2 has no search cost
