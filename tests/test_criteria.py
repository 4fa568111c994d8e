"""A saliency criterion is one registered entry: a toy criterion, registered here alone, is a
choice of --sal_type with its help, prunes by its own scores, is charged by --plan as it says,
is named by the results, audited under its label and offered by the campaign."""
import json

import pytest

import train_search
from conftest import TINY_SEARCH
from plumbing.fileio import read_jsonl as lines
from saliency import CRITERIA, Criterion, register
from test_readme import load_script


def by_op_index(pruner, batches):
    """The toy: an op's saliency is its index on the edge plus one (the first op goes first)."""
    betas = pruner.model.betas().detach()  # (cell types, edges, n_ops)
    return betas.new_ones(betas.shape).cumsum(-1)


@pytest.fixture
def toy():
    """Registers the toy criterion for one test (reading batches or not); it is gone afterwards."""
    def make(reads_batches: bool = False) -> Criterion:
        return register(Criterion("toy", by_op_index, "the op's index on its edge", reads_batches=reads_batches,
                                  label="toy"))
    yield make
    CRITERIA.pop("toy", None)


def test_a_criterion_is_registered_once():
    with pytest.raises(ValueError, match="registered already"):
        register(Criterion("task", by_op_index, "again", reads_batches=True, label="s1"))


def test_a_toy_criterion_searches_and_is_audited_under_its_label(tmp_path, toy):
    toy()
    helps = {a.dest: a.help for a in train_search.build_parser()._actions}
    assert "toy: the op's index on its edge" in helps["sal_type"]
    results = train_search.main([*TINY_SEARCH, "--epochs", "2", "--sal_type", "toy", "--audit_every", "2",
                                 "--audit_batches", "1", "--out_dir", str(tmp_path)])  # (2 events, 1 audited)
    assert results["variant"] == "FP-DARTS-toy"
    run_dir = next(tmp_path.glob("search-*"))
    events = lines(run_dir / "prune_events.jsonl")
    # Every op scores its index + 1: the first event prunes op 0 of edge 0 in each cell type.
    assert [(e["cell"], e["edge"], e["saliency"]) for e in events[:2]] == [("normal", 0, 1.0), ("reduce", 0, 1.0)]
    audited = lines(run_dir / "audit.jsonl")
    assert audited and all({"s1", "s2", "s2_half", "toy"} <= set(r) for r in audited)
    assert all(r["toy"]["pick"] == {"edge": 0, "op": events[0]["op"]} for r in audited[:2])
    assert set(results["audit"]) == {"events", "s1", "s2", "s2_half", "toy"}
    assert json.loads((run_dir / "results.json").read_text())["variant"] == "FP-DARTS-toy"


@pytest.mark.parametrize("reads_batches", [False, True])
def test_plan_charges_a_criterion_as_registered(tmp_path, toy, reads_batches):
    toy(reads_batches)
    (run,) = train_search.main([*TINY_SEARCH, "--sal_type", "toy", "--plan", "--plan_file",
                                str(tmp_path / "plan.json")])["runs"]
    assert (run["phases"]["saliency"]["seconds"] > 0) is reads_batches  # (a pass over the scoring split)


def test_the_campaign_offers_a_registered_criterion(toy):
    toy()
    campaign_cli = load_script("scripts/campaign_cli.py")
    args = campaign_cli.build_parser().parse_args(["--variants", "s1", "toy"])
    found = {s.save: s.flags for s in campaign_cli.searches(args)}
    assert found["toy"][:2] == ["--sal_type", "toy"] and found["s1"][:2] == ["--sal_type", "task"]
    assert campaign_cli.build_parser().parse_args([]).variants == ["s1", "s2", "s1r", "s1r_larger"]
