"""train_search.py end to end on the real digits data: every variant prunes to its final cell."""
import json

import pytest
import torch

import train_search
import utils
from conftest import TINY_COMPLETE, run_cli
from genotypes import is_restricted, load_genotype
from model import NetworkCIFAR

TINY = TINY_COMPLETE


def search(tmp_path, *extra):
    out = tmp_path / "ckpt"
    run_cli("train_search.py", *TINY, "--out_dir", out, "--no_summary", *extra)
    (run_dir,) = out.iterdir()
    return run_dir


def check_run_dir(run_dir, epochs=18):
    for name in ("args.json", "log.txt", "genotype.json", "results.json", "checkpoint.pt",
                 "genotype_normal.png", "genotype_reduce.pdf"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    root = run_dir / "results_of_7q"
    for epoch in range(epochs):
        load_genotype(root / "genotype" / f"{epoch}.txt")
        alpha = json.loads((root / "alpha" / f"{epoch}.txt").read_text())
        assert len(alpha["alphas_normal"]) == 5 and len(alpha["alphas_reduce"][0]) == 7
    assert (root / "results.csv").read_text().count("\n") == epochs + 1
    sal = json.loads((root / "sal" / "16.txt").read_text())
    assert len(sal["normal"]) == 5
    events = [json.loads(line) for line in (run_dir / "prune_events.jsonl").read_text().splitlines()]
    assert len(events) == 2 * 31 and events[-1]["epoch"] == 16
    assert {e["cell"] for e in events} == {"normal", "reduce"}
    results = json.loads((run_dir / "results.json").read_text())
    assert results["pruning_finished"] and results["search_cost_seconds"] > 0
    genotype = load_genotype(run_dir / "genotype.json")
    assert load_genotype(root / "genotype" / f"{epochs - 1}.txt") == genotype
    model = NetworkCIFAR(4, 10, 3, False, genotype).eval()
    assert model(torch.randn(2, 3, 8, 8))[0].shape == (2, 10)
    return genotype, events


def test_s1_reaches_the_darts_cell(complete_searches):
    # (The search runs a saliency audit too: test_plots.py checks it.)
    genotype, events = check_run_dir(complete_searches("s1"))
    assert is_restricted(genotype) and len(genotype.normal) == len(genotype.reduce) == 4
    assert all(e["loss"] is None and len(e["candidates"]) == 1 for e in events)


def test_s2_prunes_with_the_hessian_term(tmp_path):
    # s2 differs from s1 only in its saliency (test_saliency.py proves the Hessian diagonal), and
    # its Hessian passes make it the slowest variant here: 3 epochs, 4 events, not to the end.
    run_dir = search(tmp_path, "--sal_second", "--sal_second_budget", "1", "--hessian_chunk", "80",
                     "--epochs", "3")
    events = [json.loads(line) for line in (run_dir / "prune_events.jsonl").read_text().splitlines()]
    assert len(events) == 2 * 2 * 2 and all(torch.isfinite(torch.tensor(e["saliency"])) for e in events)
    assert not (run_dir / "summary.png").exists()  # --no_summary
    results = json.loads((run_dir / "results.json").read_text())
    assert results["variant"] == "FP-DARTS-s2" and results["live_ops"] == [35 - 4, 35 - 4]
    sal = json.loads((run_dir / "results_of_7q" / "sal" / "2.txt").read_text())
    assert len(sal["normal"]) == 5 and sum(v != 0 for row in sal["normal"] for v in row) == 35 - 3  # live
    genotype = load_genotype(run_dir / "genotype.json")
    assert is_restricted(genotype) and NetworkCIFAR(4, 10, 3, False, genotype).eval()(torch.randn(2, 3, 8, 8))


def test_s1r_compares_candidates(tmp_path):
    # The comparison is what s1r adds to s1 (pruning to the end is proven above): 6 events.
    run_dir = search(tmp_path, "--num_compare", "3", "--iter_compare", "1", "--fixed_compare_batches",
                     "--deterministic", "--epochs", "4")
    events = [json.loads(line) for line in (run_dir / "prune_events.jsonl").read_text().splitlines()]
    assert len(events) == 2 * 2 * 3 and all(len(e["candidates"]) == 3 for e in events)
    assert all(e["loss"] == min(c["loss"] for c in e["candidates"]) for e in events)
    assert json.loads((run_dir / "results.json").read_text())["variant"] == "FP-DARTS-s1r"
    assert is_restricted(load_genotype(run_dir / "genotype.json"))


def test_no_restrict_larger_space(complete_searches):
    genotype, events = check_run_dir(complete_searches("s1r-larger"))
    assert not is_restricted(genotype)
    assert events[-1]["live_ops"] == [4, 4]
    assert len(genotype.normal) <= 4


@pytest.mark.parametrize("flags,message", [
    (["--num_compare", "0"], "--num_compare must be positive"),
    (["--batch_size", "0"], "--batch_size must be positive"),
    (["--train_portion", "1.5"], "--train_portion must be in (0, 1)"),
    (["--warmup", "60"], "--warmup (60) must be at least 0 and below --epochs (60)"),
    (["--sal_type", "magic"], "invalid choice: 'magic'"),
])
def test_impossible_values_are_refused(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(train_search.main, ["--out_dir", str(tmp_path), *flags])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in stderr and stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_non_finite_loss_stops_the_search_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(train_search.main, [*TINY, "--out_dir", str(tmp_path), "--epochs", "2",
                                          "--learning_rate", "1e30", "--grad_clip", "1e30"])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and "the search diverged: " in stderr and "became non-finite in epoch " in stderr
