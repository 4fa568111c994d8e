"""train_search.py end to end in RobustDARTS' S1, S3, S4 and in NAS-Bench-201, on the real digits:
each search prunes to its end state, writes valid genotypes / architecture strings, and resumes
after SIGKILL exactly; NAS-Bench-201 looks its cells up in a benchmark file built in the API's own
format; the found cells train with train.py / train_nb201.py."""
import json
import re

import pytest
import torch

import train_search
import utils
from architectures import parse_nb201_arch
from conftest import make_imagenet16, run_cli
from genotypes import cell_edges, is_restricted, load_genotype
from model import NetworkCIFAR
from nb201_bench import expected, make_benchmark
from search_spaces import get_space
from test_resume import kill_when, only_run

# 32 weight images in batches of 8 with a prune event every step: 4 events per epoch after the
# warm-up epoch. S1: 28 -> 8 ops (20 events), S3 with 2-node cells: 15 -> 4 (11), S4: 10 -> 4 (6),
# NAS-Bench-201: 30 -> 6 (24). One variant each: s1, s1r, s2, s1r.
TINY = ["--dataset", "digits", "--subset", "64", "--batch_size", "8", "--init_channels", "4", "--warmup", "1",
        "--prune_interval", "1", "--report_freq", "100", "--seed", "5"]
RUNS = {
    "s1": (["--search_space", "s1", "--layers", "3", "--epochs", "7"], 20, 8),
    "s3": (["--search_space", "s3", "--layers", "3", "--steps", "2", "--epochs", "5", "--num_compare", "2",
            "--iter_compare", "0"], 11, 4),
    "s4": (["--search_space", "s4", "--layers", "3", "--steps", "2", "--epochs", "4", "--sal_second",
            "--sal_second_budget", "1", "--hessian_chunk", "20"], 6, 4),
    "nb201": (["--search_space", "nb201", "--layers", "1", "--epochs", "8", "--num_compare", "2",
               "--iter_compare", "0"], 24, 6),
}


def events_written(count):
    """Ready to kill once `count` lines of prune_events.jsonl are written (one per cell type)."""
    def ready(out_dir):
        files = list(out_dir.glob("search-*/prune_events.jsonl"))
        return bool(files) and files[0].read_text().count("\n") >= count
    return ready


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """searched(space) -> (uninterrupted run, run killed mid-pruning and resumed), run once per
    space. The NAS-Bench-201 search is resumed with --nb201_file: a benchmark holding every cell
    the uninterrupted run derived."""
    done = {}

    def get(space):
        if space not in done:
            done[space] = search_twice(space, tmp_path_factory.mktemp(space))
        return done[space]
    return get


def search_twice(space, out):
    flags, events, _ = RUNS[space]
    run_cli("train_search.py", *TINY, *flags, "--out_dir", out / "ref")
    ref = only_run(out / "ref")
    cut = kill_when("train_search.py", [*TINY, *flags], out / "cut",
                    events_written(events // 2 * (1 if space == "nb201" else 2)))
    assert not (cut / "results.json").exists(), "the search finished before it was killed"
    extra = []
    if space == "nb201":
        archs = {json.loads(p.read_text())["arch_str"] for p in (ref / "results_of_7q" / "genotype").glob("*.txt")}
        bench = make_benchmark(out / "bench.pth", {a: 50.0 + 3 * i for i, a in enumerate(sorted(archs))})
        extra = ["--nb201_file", bench]
    run_cli("train_search.py", *TINY, *flags, *extra, "--resume", cut)
    return ref, cut


@pytest.mark.parametrize("space", list(RUNS))
def test_search_reaches_the_end_state_and_resumes_exactly(searched, space):
    ref, cut = searched(space)
    _, events, live = RUNS[space]
    for name in ("genotype.json", "prune_events.jsonl", "search_space.json"):
        assert (ref / name).read_text() == (cut / name).read_text(), name
    epochs = len(list((ref / "results_of_7q" / "genotype").iterdir()))
    for epoch in range(epochs):
        for kind in ("genotype", "alpha"):
            rel = f"results_of_7q/{kind}/{epoch}.txt"
            assert (ref / rel).read_text() == (cut / rel).read_text(), rel
    a, b = (torch.load(d / "checkpoint.pt", weights_only=False)["model"] for d in (ref, cut))
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed search ended with other weights"
    assert "resuming" in (cut / "log.txt").read_text()
    results = json.loads((ref / "results.json").read_text())
    assert results["search_space"] == space and results["pruning_finished"]
    assert results["live_ops"] == [live] * (1 if space == "nb201" else 2)
    lines = (ref / "prune_events.jsonl").read_text().splitlines()
    assert len(lines) == events * len(results["live_ops"])


@pytest.mark.parametrize("space", list(RUNS))
def test_every_space_is_plotted(searched, space):
    import numpy as np

    from plumbing.drivers import plots
    from test_plots import check_figure_files

    ref, cut = searched(space)
    check_figure_files([ref / "summary.png", cut / "summary.png"])  # drawn by the search at its end
    run = plots.load_run(ref)
    state = torch.load(ref / "checkpoint.pt", weights_only=False)["model"]
    fig = plots.fig_betas(run)
    columns = len(plots.snapshot_epochs(run))
    for ax, cell in zip(fig.axes[columns - 1::columns], run.types):  # the last epoch of each cell type
        (image,) = ax.get_images()
        np.testing.assert_array_equal(~image.get_array().mask, state[f"keep_{cell}"].numpy())
    fig = plots.fig_timeline(run)
    for ax, _cell in zip(fig.axes, run.types):  # one timeline per cell type
        (markers,) = [c for c in ax.collections if c.get_gid() == "prune markers"]
        assert len(markers.get_offsets()) == RUNS[space][1]


@pytest.mark.parametrize("space_name", ["s1", "s3", "s4"])
def test_darts_cell_spaces_derive_a_darts_cell_from_their_own_ops(searched, space_name):
    ref, _ = searched(space_name)
    space = get_space(space_name, 4 if space_name == "s1" else 2)
    described = json.loads((ref / "search_space.json").read_text())
    assert described["edge_ops"] == space.edge_ops and described["name"] == space_name
    genotype = load_genotype(ref / "genotype.json")
    assert is_restricted(genotype) and len(genotype.normal) == 2 * space.steps
    masks = torch.load(ref / "checkpoint.pt", weights_only=False)["model"]
    for cell in ("normal", "reduce"):
        keep = masks[f"keep_{cell}"]
        for op, src, dst in cell_edges(getattr(genotype, cell)):
            edge = space.endpoints.index((src, dst))
            assert op != "none" and keep[edge, space.edge_ops[cell][edge].index(op)], (cell, op, src, dst)
    alpha = json.loads((ref / "results_of_7q" / "alpha" / "0.txt").read_text())
    assert len(alpha["alphas_normal"][0]) == space.num_ops
    assert (ref / "genotype_normal.png").is_file() and (ref / "genotype_reduce.png").is_file()
    model = NetworkCIFAR(4, 10, 3, False, genotype).eval()
    assert model(torch.randn(2, 3, 8, 8))[0].shape == (2, 10)


def test_nb201_search_ends_with_one_op_per_edge_and_its_benchmark_figures(searched, tmp_path):
    ref, cut = searched("nb201")
    arch = json.loads((ref / "genotype.json").read_text())["arch_str"]
    keep = torch.load(ref / "checkpoint.pt", weights_only=False)["model"]["keep_cell"]
    assert keep.sum(1).tolist() == [1] * 6
    assert parse_nb201_arch(arch) == [get_space("nb201").edge_ops["cell"][e][int(keep[e].float().argmax())]
                                      for e in range(6)]
    assert "python nasbench201.py --nb201_file PATH" in (ref / "log.txt").read_text()
    assert (ref / "genotype_cell.png").is_file()
    plain, looked_up = (json.loads((d / "results.json").read_text()) for d in (ref, cut))
    assert plain["arch_str"] == looked_up["arch_str"] == arch and plain["benchmark"] is None
    archs = sorted({r["arch_str"] for r in looked_up["benchmark_per_epoch"]})
    assert looked_up["benchmark"] == pytest.approx(expected(50.0 + 3 * archs.index(arch)))
    # Epochs finished before the kill (the search had no file then) have no figures, the rest do.
    resumed = int(re.search(r"resuming \S+ at epoch (\d+)", (cut / "log.txt").read_text()).group(1))
    per_epoch = looked_up["benchmark_per_epoch"]
    assert [r["epoch"] for r in per_epoch] == list(range(8)) and 0 < resumed < 8
    assert [r["cifar10_test"] is None for r in per_epoch] == [e < resumed for e in range(8)]
    assert per_epoch[-1]["cifar10_test"] == looked_up["benchmark"]["cifar10_test"]
    assert "cifar10_test" in (cut / "results_of_7q" / "results.csv").read_text().splitlines()[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (cut / "tb").glob("events.out.tfevents.*"):
        tags |= set(EventAccumulator(str(events)).Reload().Tags()["scalars"])
    assert {"nb201/cifar10_test", "nb201/imagenet16_valid", "live_ops/cell"} <= tags
    # The same figures afterwards, for the search that ran without the file.
    run_cli("nasbench201.py", "--nb201_file", cut.parent.parent / "bench.pth", ref)
    after = json.loads((ref / "results.json").read_text())
    assert after["benchmark"] == pytest.approx(looked_up["benchmark"])
    # The cell trained from scratch on ImageNet16-120 (the benchmark's protocol, tiny), then evaluated.
    data = make_imagenet16(tmp_path / "ImageNet16")
    run_cli("train_nb201.py", "--base_dir", ref, "--dataset", "imagenet16", "--data", data, "--epochs", "1",
            "--batch_size", "16", "--init_channels", "4", "--layers", "1", "--report_freq", "100")
    (run,) = list(ref.glob("nb201-*"))
    result = json.loads((run / "results.json").read_text())
    assert result["genotype"] == {"arch_str": arch} and result["dataset"] == "imagenet16"
    assert result["memory"]["max_MB"] > 0 and "train" in result["memory"]["peak_MB"]
    args = json.loads((run / "args.json").read_text())
    assert args["nesterov"] and args["weight_decay"] == 5e-4 and not args["auxiliary"]
    evaluated = run_cli("train_nb201.py", "--mode", "eval", "--model_path", result["checkpoint"],
                        "--dataset", "imagenet16", "--data", data)
    assert f"test top1 {result['final_test_top1']:.4f}" in evaluated.stderr + evaluated.stdout


@pytest.mark.parametrize("space", ["s1", "nb201"])
def test_the_spaces_recipe_is_in_the_run_directory(searched, space):
    """The authors' settings of the space where no flag was given, the flags where one was, in
    search_space.json, args.json and results.json alike."""
    ref, _ = searched(space)
    recipe = json.loads((ref / "search_space.json").read_text())["recipe"]
    args = json.loads((ref / "args.json").read_text())
    results = json.loads((ref / "results.json").read_text())
    assert results["recipe"] == recipe and all(args[k] == v for k, v in recipe.items())
    assert (recipe["warmup"], recipe["epochs"]) == (1, int(RUNS[space][0][RUNS[space][0].index("--epochs") + 1]))
    if space == "s1":
        assert (recipe["drop_path_prob"], recipe["lr_schedule"], recipe["step_order"]) == (0.2, "cosine", "arch_first")
        assert (recipe["weight_decay"], recipe["reg_alpha"], results["data_split"]) == (3e-4, 0.1, "train_portion")
        assert "drop_path_prob 2.000000e-01" in (ref / "log.txt").read_text()  # the last epoch's
    else:
        expected = ("warmup_cosine_nb201", "weight_first", 0.0)
        assert (recipe["lr_schedule"], recipe["step_order"], recipe["reg_alpha"]) == expected
        assert (recipe["nesterov"], recipe["weight_decay"], recipe["scoring_transform"]) == (True, 5e-4, "test")
        assert results["data_split"] == "train_portion (no --nb201_splits given)"
        assert "no --nb201_splits: searching on the --train_portion 0.5 split" in (ref / "log.txt").read_text()


def test_train_py_trains_a_robustdarts_cell(searched):
    ref, _ = searched("s4")
    run_cli("train.py", "--base_dir", ref, "--dataset", "digits", "--epochs", "1", "--batch_size", "64",
            "--init_channels", "4", "--layers", "3", "--no_auxiliary", "--report_freq", "100")
    (run,) = list(ref.glob("eval-*"))
    results = json.loads((run / "results.json").read_text())
    assert results["genotype"] == json.loads((ref / "genotype.json").read_text())
    assert 0 <= results["final_test_top1"] <= 100


@pytest.mark.parametrize("flags, message", [
    (["--search_space", "s1", "--steps", "2"], "--search_space s1 lists its ops for the 14 edges of 4 nodes"),
    (["--search_space", "nb201", "--steps", "4"], "--steps does not apply to --search_space nb201"),
    (["--search_space", "nb201", "--no_restrict"], "--no_restrict is a DARTS-cell rule"),
    (["--nb201_file", "x.pth"], "--nb201_file needs --search_space nb201"),
    (["--search_space", "nb201", "--nb201_file", "nowhere.pth"], "--nb201_file nowhere.pth: no such file"),
])
def test_impossible_space_settings_are_refused(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(train_search.main, ["--out_dir", str(tmp_path), *flags])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in stderr and stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())
