"""The cost model of `--plan` and bench/bench_whole_search.py (costs.py): the schedule it
integrates is the search's (events, levels, phases), checked in closed form with constant piece
costs; its timings use the search's code."""
import math

import pytest
import torch

import saliency as S
from bench import bench_whole_search as B
from model_search import Network


@pytest.fixture(scope="module")
def pieces():
    """A DARTS-cell trajectory to the end (90 events, lowest beta first) and its pieces."""
    torch.manual_seed(0)
    model = Network(2, 10, 2)
    pruner = S.Pruner(model, device=torch.device("cpu"), sal_type="vanilla")
    events = []
    while not pruner.finished():
        decisions = pruner.decide(pruner.saliency([]), lambda: [])
        pruner.apply(decisions)
        events.append([{k: d[k] for k in ("cell", "edge", "op")} for d in decisions])
    # (4 channels, not 2: PyTorch 2.14's CPU backward of a 1x1 stride-2 convolution of <= 4
    # channels_last channels corrupts memory on some CPUs, and the reduction cells' skip has one)
    return B.pieces_of(dict(C=4, layers=2, batch=4, size=8), events, torch.device("cpu"))


def test_the_trajectory_goes_from_the_supernet_to_the_darts_cell(pieces):
    assert len(pieces.masks) == 91 and pieces.live[0] == 196 and pieces.live[-1] == 16
    assert pieces.live == [196 - 2 * k for k in range(91)]
    assert pieces.eligible[-1] == [0, 0] and min(pieces.eligible[0]) > 5


def test_the_integration_follows_the_authors_schedule(pieces):
    unit = {"arch": 0.25, "weight": 0.75, "arch_acc": 0.75, "s1": 0.5, "s1_s2": 0.25, "eval": 0.1,
            "compare": 0.05, "hessian_row": 0.01}
    pieces.seconds = {0: dict(unit), 90: dict(unit)}  # constant costs: closed forms
    run = dict(steps=10, interval=5, sal_batches=8, eval_batches=4)  # 2 events per epoch
    unpruned = B.integrate(pieces, "unpruned", **run)
    assert unpruned == {"steps": 600.0, "saliency": 0.0, "compare": 0.0, "validation": pytest.approx(24.0)}
    s1 = B.integrate(pieces, "s1", **run)
    assert s1["steps"] == 600.0 and s1["saliency"] == pytest.approx(90 * 8 * 0.5)
    # The architecture steps accumulate (as the search does) until the 90th event, the second
    # of epoch 54: epochs 0-54, then 5 epochs of plain steps.
    arch = B.integrate(pieces, "s1+arch_steps", **run)
    assert arch["saliency"] == 0.0 and arch["steps"] == pytest.approx(550 * 1.5 + 50)
    s1r = B.integrate(pieces, "s1r", **run)
    candidates = sum(min(5, e) for level in range(90) for e in pieces.eligible[level])
    assert s1r["compare"] == pytest.approx(candidates * 31 * 0.05)
    s2 = B.integrate(pieces, "s2", **run)
    expected = sum(math.ceil(500 / pieces.live[k]) * (0.25 + pieces.live[k] * 0.01) for k in range(90))
    assert s2["saliency"] == pytest.approx(expected)


def test_the_pieces_are_timed_with_the_search_code(pieces):
    pieces.seconds = {}
    seconds = B.measure(pieces, dict(batch=4), 45, repeats=1, hessian_rows=1)
    assert set(seconds) == {"arch", "weight", "arch_acc", "s1", "s1_s2", "eval", "compare", "hessian_row"}
    assert all(v > 0 for v in seconds.values())
    assert [int(m.sum()) for m in pieces.run.model.masks()] == [98 - 45, 98 - 45]
    assert pieces.cost(0, "arch") == pieces.cost(90, "arch") == seconds["arch"]  # one level: flat
    # Each phase's peak memory comes with it, from the search's own phase timer.
    assert set(pieces.memory[45]) == {"arch", "weight", "saliency", "validation", "compare"}
    assert all(v > 0 for v in pieces.memory[45].values())
