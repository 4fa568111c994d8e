"""The architecture step: only alphas move; the regulariser; the unrolled second-order step."""
import torch
import torch.nn.functional as F

from architect import Architect, pruned_op_regularizer
from model_search import Network


def setup(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = Network(2, 3, 3, steps=2).to(dtype)
    batch = lambda: (torch.randn(6, 3, 4, 4, dtype=dtype), torch.randint(0, 3, (6,)))
    return model, batch


def test_regulariser_by_hand():
    betas = torch.full((2, 5, 7), 0.1)
    masks = (torch.ones(5, 7, dtype=torch.bool), torch.ones(5, 7, dtype=torch.bool))
    masks[0][0, 0] = masks[1][2, 3] = False
    assert torch.isclose(pruned_op_regularizer(betas, masks, "norm"), torch.tensor(2 * 0.01))
    assert torch.isclose(pruned_op_regularizer(betas, masks, "gini"), torch.tensor(2 * 0.09))


def test_first_order_step_moves_only_alphas():
    model, batch = setup()
    weights = [p.detach().clone() for p in model.weight_parameters()]
    alphas = [a.detach().clone() for a in model.arch_parameters()]
    Architect(model).step(*batch())
    assert all(torch.equal(w, p) for w, p in zip(weights, model.weight_parameters()))
    assert all(not torch.equal(a, p) for a, p in zip(alphas, model.arch_parameters()))
    assert all(p.grad is None for p in model.weight_parameters())


def test_regulariser_pushes_pruned_mass_down():
    model, batch = setup()
    model.keep_normal[0, 3] = False
    arch = Architect(model, reg_alpha=100.0, lr=0.05)
    start = model.betas()[0, 0, 3].item()
    for _ in range(5):
        arch.step(*batch())
    assert model.betas()[0, 0, 3].item() < start


def test_finite_difference_hvp_matches_double_backward():
    model, batch = setup(dtype=torch.float64)
    arch = Architect(model)
    x, y = batch()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    weights = arch._weights()
    vector = {n: torch.randn_like(w) for n, w in weights.items()}
    approx = arch.hessian_vector_product(vector, buffers, x, y, r=1e-4)
    loss = F.cross_entropy(torch.func.functional_call(model, {**weights, **buffers}, (x,)), y)
    grads = torch.autograd.grad(loss, list(weights.values()), create_graph=True, allow_unused=True)
    dot = sum((g * vector[n]).sum() for n, g in zip(weights, grads) if g is not None)
    exact = torch.autograd.grad(dot, model.arch_parameters())
    for a, e in zip(approx, exact):
        assert torch.allclose(a, e, rtol=1e-4, atol=1e-8)


def test_unrolled_step_runs_and_keeps_weights():
    model, batch = setup()
    opt = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9)
    weights = [p.detach().clone() for p in model.weight_parameters()]
    arch = Architect(model, unrolled=True)
    assert arch.step(*batch(), *batch(), eta=0.025, weight_optimizer=opt) is None
    assert all(torch.equal(w, p) for w, p in zip(weights, model.weight_parameters()))
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in model.arch_parameters())
