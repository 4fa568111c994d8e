"""The true effect of pruning each op (what the saliency audit compares s1 and s2 with), and the
rank correlation the audit and the benchmarks report."""
import copy

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

import audit
import saliency as S
from model_search import Network


def test_removal_change_equals_flipping_each_op_in_a_copy():
    torch.manual_seed(0)
    model = Network(2, 3, 3, steps=1).double()  # 1-node cells: 2 edges x 7 ops per cell type
    model.keep_normal[1, 2] = model.keep_reduce[0, 4] = False
    batches = [(torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (4,))) for _ in range(2)]
    before = copy.deepcopy(model.state_dict())
    change = audit.removal_change(model, batches, torch.device("cpu"))
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # masks back, BN statistics untouched

    def loss(net):
        net.train()
        with S.explicit_batchnorm(net):
            return sum(F.cross_entropy(net(x), y).double() for x, y in batches) / len(batches)
    base = loss(model)
    for cell, mask in enumerate(model.masks()):
        for edge, op in torch.ones_like(mask).nonzero().tolist():
            if not mask[edge, op]:
                assert change[cell, edge, op] == 0
                continue
            other = copy.deepcopy(model)
            other.masks()[cell][edge, op] = False
            assert change[cell, edge, op] == loss(other) - base  # exactly: the same computation
    assert change.abs().sum() > 0


def test_spearman_matches_scipy_and_its_bounds():
    torch.manual_seed(1)
    a, b = torch.randn(40), torch.randn(40)
    assert audit.spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-12)
    assert audit.spearman(a, a) == pytest.approx(1.0) and audit.spearman(a, -a) == pytest.approx(-1.0)
    assert audit.ranks(torch.tensor([3.0, 1.0, 2.0])).tolist() == [2.0, 0.0, 1.0]
