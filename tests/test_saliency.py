"""Saliency mathematics, eligibility rules, the prune schedule and candidate comparison."""
import pytest
import torch
import torch.nn.functional as F

import saliency as S
from conftest import prune_randomly
from model_search import Network
from saliency import PruneSchedule
from search_spaces import edge_endpoints, get_space


def tiny_double(steps=1, seed=0):
    """A supernet small enough for full Hessians, in double precision for finite differences."""
    torch.manual_seed(seed)
    model = Network(2, 3, 3, steps=steps).double()
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    return model, x, y


def loss_at(model, x, y):
    return lambda b: F.cross_entropy(model(x, betas=b), y)


def test_first_order_saliency_is_minus_gradient_times_beta():
    model, x, y = tiny_double()
    sal = S.saliency_first_order(model, [(x, y)], torch.device("cpu"))
    betas = model.betas().detach()
    f, eps = loss_at(model, x, y), 1e-6
    for flat in [0, 3, 9, 13, 17, 27]:
        e = torch.zeros_like(betas).view(-1)
        e[flat] = eps
        g = (f(betas + e.view_as(betas)) - f(betas - e.view_as(betas))) / (2 * eps)
        assert torch.isclose(sal.view(-1)[flat], -g * betas.view(-1)[flat], rtol=1e-5, atol=1e-10)


def test_hessian_diagonal_equals_autograd_functional_hessian():
    model, x, y = tiny_double(steps=2)
    model.train()
    betas = model.betas().detach()
    f = loss_at(model, x, y)
    full = torch.autograd.functional.hessian(lambda b: f(b.view_as(betas)), betas.reshape(-1))
    with S.explicit_batchnorm(model):
        diag = S.hessian_diagonal(f, betas, torch.arange(betas.numel()), chunk=16)
    assert torch.allclose(diag.reshape(-1), full.diagonal(), atol=1e-10)
    assert full.diagonal().abs().max() > 1e-3


def test_batched_hessian_diagonal_equals_per_entry_loop():
    torch.manual_seed(0)
    model = Network(4, 10, 3, steps=2)
    model.train()
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    betas = model.betas().detach()
    index = torch.randperm(betas.numel())[:24]
    loop = S.hessian_diagonal_loop(loss_at(model, x, y), betas, index)
    with S.explicit_batchnorm(model):
        batched = S.hessian_diagonal(loss_at(model, x, y), betas, index, chunk=10)
    assert torch.allclose(batched, loop, atol=1e-5)
    assert torch.count_nonzero(batched.view(-1)[index]) > 0


def test_second_order_saliency_adds_hessian_term_on_live_entries():
    model, x, y = tiny_double(steps=2)
    model.keep_normal[1, 2] = False
    dev = torch.device("cpu")
    s1 = S.saliency_first_order(model, [(x, y)], dev)
    s2 = S.saliency_second_order(model, [(x, y)], dev, hessian_coef=0.5)
    betas = model.betas().detach()
    h = S.hessian_diagonal_loop(loss_at(model, x, y), betas, torch.arange(betas.numel()))
    expected = s1 + 0.5 * h * betas**2
    expected[0, 1, 2] = s1[0, 1, 2]  # pruned entries get no Hessian term
    assert torch.allclose(s2, expected, atol=1e-10)


def test_explicit_batchnorm_matches_the_fused_one_and_updates_nothing():
    model, x, y = tiny_double(steps=2)
    model.train()
    stats = [b.clone() for b in model.buffers()]
    with S.explicit_batchnorm(model):
        explicit = model(x)
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    assert torch.allclose(explicit, model(x), atol=1e-10)


def test_vanilla_and_sgas_scores():
    model = Network(2, 3, 3, steps=2)
    assert torch.equal(S.saliency_vanilla(model), model.betas().detach())
    with torch.no_grad():
        model.alphas_normal.zero_()
        model.alphas_normal[0, 0] = 5.0  # edge 0 is certain, the others uniform
    sgas = S.saliency_sgas(model)
    betas = model.betas().detach()
    assert torch.allclose(sgas[0, 0], betas[0, 0])  # certainty normalised to 1
    assert torch.count_nonzero(sgas[0, 1:]) == 0  # uniform edges: certainty 0


def restricted_invariant_holds(keep, steps):
    """Every intermediate node keeps at least 2 distinct live input edges."""
    ends = edge_endpoints(steps)
    for node in range(2, 2 + steps):
        rows = [e for e, (_, dst) in enumerate(ends) if dst == node]
        if int(keep[rows].any(1).sum()) < 2:
            return False
    return True


def prune_to_the_end(restrict, seed, steps=4, num_kept_min=8):
    """Prune one op per event by random saliency until the rule stops; check every step. The
    normal cell's keep-mask and the number of events."""
    invariant = (lambda cell, keep: restricted_invariant_holds(keep, steps)) if restrict else None
    keeps, events = prune_randomly(get_space("darts", steps), restrict, seed, num_kept_min, invariant)
    return keeps[0], events


@pytest.mark.parametrize("seed", range(25))
def test_restricted_end_state_is_the_darts_cell(seed):
    keep, events = prune_to_the_end(True, seed)
    assert events == 90
    ends = edge_endpoints(4)
    for node in range(2, 6):
        rows = [e for e, (_, dst) in enumerate(ends) if dst == node]
        assert int(keep[rows].sum()) == 2 and int(keep[rows].any(1).sum()) == 2


@pytest.mark.parametrize("seed", range(5))
def test_unrestricted_end_state_has_num_kept_min_ops(seed):
    keep, events = prune_to_the_end(False, seed, num_kept_min=8)
    assert int(keep.sum()) == 8 and events == 90


def test_shortlist_never_contains_ineligible_ops_even_on_ties():
    keep = torch.ones(5, 7, dtype=torch.bool)
    eligible = keep.clone()
    eligible[0] = False
    sal = torch.ones(5, 7)
    sal[0] = 0.0  # the smallest |S| are all ineligible
    picked = S.shortlist(sal, eligible, 10)
    assert len(picked) == 10 and all(p >= 7 for p in picked)


def test_shortlist_breaks_ties_by_the_lowest_flat_index():
    sal = torch.tensor([[3.0, 0.0, -1.0], [0.0, 5.0, 0.0], [0.0, -0.0, 2.0]])  # five exact zeros
    eligible = torch.ones(3, 3, dtype=torch.bool)
    eligible[1, 0] = False
    assert S.shortlist(sal, eligible, 4) == [1, 5, 6, 7]
    assert S.shortlist(-sal, eligible, 6) == [1, 5, 6, 7, 2, 8]


def test_schedule_last_prune_in_epoch_54():
    """98 live ops, warm-up 10, 391 batches per epoch (interval 195: two events per epoch)."""
    torch.manual_seed(0)
    model = Network(2, 10, 3)
    pruner = S.Pruner(model, device=torch.device("cpu"))
    schedule, last = PruneSchedule(warmup=10, interval=391 // 2, steps=391, epochs=60), None
    for epoch in range(60):
        for step in range(391):
            if schedule.due(epoch, step) and not pruner.finished():
                pruner.apply(pruner.decide(torch.rand(2, 14, 7), lambda: []))
                last = epoch
    assert last == 54 and pruner.live_ops() == [8, 8] and pruner.finished()


def test_compare_removes_each_candidate_in_place_and_restores_the_mask():
    torch.manual_seed(0)
    model = Network(4, 10, 3, steps=2)
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,)))]
    before = model.keep_reduce.clone()
    losses = S.compare_candidates(model, 1, [0, 8, 20], lambda: batches, torch.device("cpu"))
    assert torch.equal(model.keep_reduce, before)
    model.eval()
    model.keep_reduce[1, 1] = False  # flat index 8 = edge 1, op 1
    with torch.no_grad():
        expected = F.cross_entropy(model(batches[0][0]), batches[0][1]).item()
    assert losses[1] == pytest.approx(expected, rel=1e-6)


def test_pruner_with_comparison_prunes_the_lowest_loss_candidate():
    torch.manual_seed(0)
    model = Network(4, 10, 3, steps=2)
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,)))]
    pruner = S.Pruner(model, device=torch.device("cpu"), num_compare=4)
    decisions = pruner.decide(torch.rand(2, 5, 7), lambda: batches)
    for d in decisions:
        losses = [c["loss"] for c in d["candidates"]]
        assert len(losses) == 4 and d["loss"] == min(losses)
    pruner.apply(decisions)
    assert pruner.live_ops() == [34, 34]
