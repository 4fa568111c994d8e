"""NAS-Bench-201 look-ups through the real API packages, on small benchmark files built in their
own formats (NAS-Bench-201 .pth, NATS-Bench file and folder): the right numbers for every data set,
and one clear line for a wrong path, an unreadable file or an architecture the file lacks."""
import json

import pytest

import nasbench201
from conftest import run_cli
from nb201_bench import expected, make_benchmark
from plumbing.cli import UserError

A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
B = "|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|"
MISSING = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.mark.parametrize("kind, name", [("nas201", "NAS-Bench-201-v1_1-tiny.pth"),
                                        ("nats", "NATS-tss-tiny.pickle"), ("nats_dir", "NATS-tss-tiny-simple")])
def test_lookup_reads_the_200_epoch_mean_of_each_data_set(tmp_path, kind, name):
    path = make_benchmark(tmp_path / name, {A: 90.0, B: 60.0}, kind)
    bench = nasbench201.Benchmark(path)
    assert bench.lookup(A) == pytest.approx(expected(90.0))
    assert bench.lookup(B) == pytest.approx(expected(60.0))
    with pytest.raises(UserError, match=r"architecture \|none~0\|.* is not in this benchmark file"):
        bench.lookup(MISSING)


def test_a_file_that_holds_more_than_weights_is_still_read(tmp_path):
    # PyTorch 2.6+ loads weights only by default; numpy scalars inside need the full unpickler.
    path = make_benchmark(tmp_path / "b.pth", {A: 80.0}, numpy_scalars=True)
    assert nasbench201.Benchmark(path).lookup(A) == pytest.approx(expected(80.0))


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "nowhere.pth", "nowhere.pth: no such NAS-Bench-201 file; expected NAS-Bench-201-v1_0"),
    (lambda p: (p / "junk.pth").write_bytes(b"not a benchmark") and p / "junk.pth",
     "junk.pth: not a readable NAS-Bench-201 / NATS-Bench topology file"),
    (lambda p: (p / "junk.pickle.pbz2").write_bytes(b"BZh9 broken") and p / "junk.pickle.pbz2",
     "junk.pickle.pbz2: not a readable NAS-Bench-201 / NATS-Bench topology file"),
])
def test_bad_files_give_one_line(tmp_path, setup, message):
    path = setup(tmp_path)
    result = run_cli("nasbench201.py", "--nb201_file", path, "--arch_str", A, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_cli_looks_up_strings_and_reports_a_missing_architecture(tmp_path):
    path = make_benchmark(tmp_path / "b.pth", {A: 90.0, B: 60.0})
    result = run_cli("nasbench201.py", "--nb201_file", path, "--arch_str", A, "--arch_str", B)
    header, first, second = result.stdout.splitlines()
    assert header.split("\t")[1:3] == ["cifar10_valid", "cifar10_test"]
    assert first.split("\t")[1:3] == ["91.50", "93.50"] and second.split("\t")[-1] == B
    missing = run_cli("nasbench201.py", "--nb201_file", path, "--arch_str", MISSING, check=False)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert f"architecture {MISSING} is not in this benchmark file" in missing.stderr


def test_lookup_run_adds_the_figures_to_results_json(tmp_path):
    run = tmp_path / "search-nb201"
    (run / "results_of_7q" / "genotype").mkdir(parents=True)
    for epoch, arch in enumerate([A, B, B]):
        (run / "results_of_7q" / "genotype" / f"{epoch}.txt").write_text(json.dumps({"arch_str": arch}))
    (run / "results.json").write_text(json.dumps({"variant": "FP-DARTS-s1r", "benchmark": None}))
    bench = nasbench201.Benchmark(make_benchmark(tmp_path / "b.pth", {A: 90.0, B: 60.0}))
    nasbench201.lookup_run(bench, run)
    results = json.loads((run / "results.json").read_text())
    assert results["variant"] == "FP-DARTS-s1r" and results["arch_str"] == B
    assert results["benchmark"] == pytest.approx(expected(60.0))
    assert [r["arch_str"] for r in results["benchmark_per_epoch"]] == [A, B, B]
    assert results["benchmark_per_epoch"][0]["cifar100_test"] == pytest.approx(expected(90.0)["cifar100_test"])
