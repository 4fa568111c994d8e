"""The supernet: parameters, keep-masks (pruned ops cost nothing), genotype derivation."""
import copy

import pytest
import torch

from genotypes import PRIMITIVES, validate
from model import NetworkCIFAR
from model_search import Network
from search_spaces import derive_cell, edge_endpoints


def tiny(steps=4, seed=0):
    torch.manual_seed(seed)
    return Network(4, 10, 3, steps=steps)


def test_forward_shape_and_parameter_split():
    model = tiny()
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    arch, weights = model.arch_parameters(), model.weight_parameters()
    assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
    assert len(arch) + len(weights) == len(list(model.parameters()))
    assert model.betas().shape == (2, 14, len(PRIMITIVES))


def pruned_params(model, cell, edge, op):
    cells = [c for c in model.cells if c.reduction == bool(cell)]
    return [p for c in cells for p in c._ops[edge]._ops[op].parameters()]


def test_pruned_op_gets_no_gradient_and_does_not_affect_output():
    model = tiny()
    edge, op = 3, PRIMITIVES.index("sep_conv_3x3")
    model.keep_normal[edge, op] = False
    x = torch.randn(4, 3, 8, 8)
    model.eval()
    before = model(x)
    with torch.no_grad():
        for p in pruned_params(model, 0, edge, op):
            p.add_(1.0)
    assert torch.equal(before, model(x))
    model.train()
    model(x).logsumexp(1).mean().backward()
    assert all(p.grad is None for p in pruned_params(model, 0, edge, op))
    live = [p for p in model.weight_parameters() if p.grad is not None]
    assert live, "live ops must receive gradients"


def test_pruned_parameters_never_change_under_sgd_and_clipping():
    model = tiny()
    edge, op = 0, PRIMITIVES.index("dil_conv_3x3")
    model.keep_reduce[edge, op] = False
    frozen = [p.detach().clone() for p in pruned_params(model, 1, edge, op)]
    opt = torch.optim.SGD(model.weight_parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        model(torch.randn(4, 3, 8, 8)).logsumexp(1).mean().backward()
        live = [p.grad.flatten() for p in model.weight_parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
        assert torch.isclose(norm, torch.cat(live).norm())  # the norm ignores pruned ops
        opt.step()
    for before, p in zip(frozen, pruned_params(model, 1, edge, op)):
        assert torch.equal(before, p)


def test_masks_travel_with_state_dict_and_deepcopy():
    model = tiny()
    model.keep_normal[2, 1] = False
    model.keep_reduce[5, 6] = False
    clone = tiny(seed=1)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.keep_normal, model.keep_normal)
    assert torch.equal(copy.deepcopy(model).keep_reduce, model.keep_reduce)


def test_dead_node_is_skipped():
    """A node whose every input is pruned outputs zeros and feeds nothing."""
    model = tiny(steps=2)
    model.keep_normal[0:2] = False  # node 2 loses both input edges
    model.eval()
    out = model.cells[0](torch.randn(1, 12, 8, 8), torch.randn(1, 12, 8, 8),
                         model.betas()[0], model.keep_normal.tolist())
    assert torch.count_nonzero(out[:, :4]) == 0 and torch.count_nonzero(out[:, 4:]) > 0


def test_restricted_derivation_on_hand_made_weights():
    keep = torch.ones(5, 7, dtype=torch.bool)  # 2 nodes: edges (0,2) (1,2) (0,3) (1,3) (2,3)
    w = torch.zeros(5, 7)
    w[0, 3], w[1, 5] = 0.5, 0.4  # node 2: both edges
    w[2, 1], w[3, 2], w[4, 6] = 0.1, 0.3, 0.35  # node 3: edges 4 and 3 win
    w[4, 0] = 0.9
    keep[4, 0] = False  # ...but the strongest op of edge 4 is pruned
    genes, concat = derive_cell(w, keep, 2, PRIMITIVES, restrict=True)
    assert genes == [("sep_conv_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_5x5", 2), ("skip_connect", 1)]
    assert concat == [2, 3]


def test_unrestricted_derivation_keeps_strongest_ops_with_active_sources():
    keep = torch.ones(5, 7, dtype=torch.bool)
    w = torch.zeros(5, 7)
    w[0, 3], w[0, 4], w[3, 1], w[4, 2] = 0.9, 0.8, 0.7, 0.6
    genes, concat = derive_cell(w, keep, 2, PRIMITIVES, restrict=False, num_kept_max=3)
    assert genes == [("sep_conv_3x3", 0, 2), ("sep_conv_5x5", 0, 2), ("avg_pool_3x3", 1, 3)]
    assert concat == [2, 3]
    # Only node 3's edge from node 2 survives: node 2 is inactive, so the op is dropped.
    keep[:4] = False
    genes, concat = derive_cell(w, keep, 2, PRIMITIVES, restrict=False)
    assert genes == [] and concat == []


@pytest.mark.parametrize("restrict", [True, False])
def test_genotype_never_names_a_pruned_op(restrict):
    torch.manual_seed(3)
    for _ in range(20):
        model = tiny()
        with torch.no_grad():
            for a in model.arch_parameters():
                a.normal_()
        for mask in model.masks():
            mask &= torch.rand(mask.shape) < 0.5
            mask[torch.arange(0, 14), torch.randint(0, 7, (14,))] = True  # every edge stays live
        genotype = model.genotype(restrict=restrict)
        ends = edge_endpoints(4)
        for genes, mask in zip((genotype.normal, genotype.reduce), model.masks()):
            for k, gene in enumerate(genes):
                src, dst = (gene[1], 2 + k // 2) if restrict else gene[1:]
                assert mask[ends.index((src, dst)), PRIMITIVES.index(gene[0])]
        validate(genotype)
        NetworkCIFAR(4, 10, 3, False, genotype)(torch.randn(1, 3, 8, 8))
