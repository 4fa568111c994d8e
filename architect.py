"""The architecture step: Adam on the alphas, first order (default) or DARTS' unrolled second
order, with the FP-DARTS regulariser that pushes the mixing weight of pruned ops towards 0."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

import utils
from model_search import Supernet
from plumbing import distributed

REG_TYPES = ("norm", "gini")


def pruned_op_regularizer(betas: Tensor, masks: tuple[Tensor, ...], reg_type: str) -> Tensor:
    """R(beta, mask) summed over all cell types, with t = beta * (1 - mask) (the pruned ops' mass):
    `norm` = ||t||^2, `gini` = sum t (1 - t)."""
    t = betas * (~torch.stack(masks)).to(betas.dtype)  # (cell types, edges, n_ops)
    return (t * t).sum() if reg_type == "norm" else (t * (1 - t)).sum()


class Architect:
    """Updates `model`'s alphas on validation batches (Adam, lr 3e-4, betas (0.5, 0.999))."""

    def __init__(self, model: Supernet, *, lr: float = 3e-4, weight_decay: float = 1e-3,
                 reg_type: str = "norm", reg_alpha: float = 0.1, unrolled: bool = False,
                 network_momentum: float = 0.9, network_weight_decay: float = 3e-4, amp: bool = False):
        self.model, self.amp = model, amp  # amp: the validation forward passes under bf16 autocast
        self.reg_type, self.reg_alpha = reg_type, reg_alpha
        self.unrolled = unrolled
        self.network_momentum, self.network_weight_decay = network_momentum, network_weight_decay
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=lr, betas=(0.5, 0.999),
                                          weight_decay=weight_decay)

    def val_loss(self, x: Tensor, y: Tensor, params: dict | None = None,
                 buffers: dict | None = None) -> Tensor:
        """Search loss: cross-entropy on a validation batch plus the pruned-op regulariser."""
        model = self.model
        with utils.autocast(x.device, self.amp):
            logits = model(x) if params is None else functional_call(model, {**params, **buffers}, (x,))
        loss = F.cross_entropy(logits, y)
        if not self.reg_alpha:  # NAS-Bench-201 (the authors' PruneNAS): no regulariser at all
            return loss
        return loss + self.reg_alpha * pruned_op_regularizer(model.betas(), model.masks(), self.reg_type)

    def step(self, x_val: Tensor, y_val: Tensor, x_train: Tensor | None = None,
             y_train: Tensor | None = None, eta: float = 0.0,
             weight_optimizer: torch.optim.Optimizer | None = None,
             beta_grad: bool = False, accept: Callable[[], bool] | None = None) -> tuple[Tensor, Tensor] | None:
        """One Adam step on the alphas; the unrolled variant also needs the training batch,
        the current weight learning rate `eta` and the weight optimizer (for its momentum).

        `beta_grad` (first order): the same step with the mixing weights as a leaf of its graph;
        it returns (β, ∂CE/∂β) of the batch, at no extra backward pass (saliency from the
        architecture steps). Otherwise it returns None. `accept()`, called with the gradient in
        place, may refuse the step (a non-finite gradient under --nan_policy skip): then nothing
        changes and None is returned."""
        self.optimizer.zero_grad(set_to_none=True)
        found = None
        if self.unrolled:
            self._unrolled_backward(x_val, y_val, x_train, y_train, eta, weight_optimizer)
        elif beta_grad:
            found = self._leaf_backward(x_val, y_val)
        else:
            # Only the alphas need gradients: skipping the weights' saves part of the backward.
            self.val_loss(x_val, y_val).backward(inputs=self.model.arch_parameters())
        # Under torchrun every process holds the same alphas: step on the mean gradient.
        distributed.average_gradients(self.model.arch_parameters())
        if accept is not None and not accept():
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        return found

    def _leaf_backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The first-order backward through a β leaf: ∂CE/∂β by one backward to the leaf, then the
        alphas' gradient through the softmax (and the regulariser), as `val_loss` would give;
        returns (β, ∂CE/∂β)."""
        model = self.model
        betas = model.betas()  # (cell types, edges, n_ops), a function of the alphas
        leaf = betas.detach().requires_grad_(True)
        with utils.autocast(x.device, self.amp):
            ce = F.cross_entropy(model(x, betas=leaf), y)
        (grad,) = torch.autograd.grad(ce, leaf)
        if self.reg_alpha:
            reg = self.reg_alpha * pruned_op_regularizer(betas, model.masks(), self.reg_type)
            torch.autograd.backward([betas, reg], [grad, torch.ones_like(reg)], inputs=model.arch_parameters())
        else:
            betas.backward(grad, inputs=model.arch_parameters())
        return leaf.detach(), grad

    # ---------------------------------------------------------- second order (DARTS, unrolled)

    def _weights(self) -> dict[str, Tensor]:
        arch = {id(p) for p in self.model.arch_parameters()}
        return {n: p for n, p in self.model.named_parameters() if id(p) not in arch}

    def _train_grads(self, params: dict, buffers: dict, x: Tensor, y: Tensor,
                     wrt: list[Tensor]) -> list[Tensor]:
        """Gradients of the training loss at `params` w.r.t. `wrt` (zeros for unused tensors)."""
        loss = F.cross_entropy(functional_call(self.model, {**params, **buffers}, (x,)), y)
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        return [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads)]

    def hessian_vector_product(self, vector: dict, buffers: dict, x: Tensor, y: Tensor,
                               r: float = 1e-2) -> list[Tensor]:
        """d^2 L_train / (d alpha d w) . vector, by central finite differences (DARTS eq. 8)."""
        weights = self._weights()
        norm = torch.cat([v.reshape(-1) for v in vector.values()]).norm()
        eps = r / norm.clamp_min(1e-12)
        alphas = self.model.arch_parameters()
        plus = {n: w + eps * vector[n] for n, w in weights.items()}
        minus = {n: w - eps * vector[n] for n, w in weights.items()}
        g_plus = self._train_grads(plus, buffers, x, y, alphas)
        g_minus = self._train_grads(minus, buffers, x, y, alphas)
        return [(gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus)]

    def _unrolled_backward(self, x_val, y_val, x_train, y_train, eta, weight_optimizer) -> None:
        """alpha.grad = dL_val(w', alpha)/dalpha - eta * Hessian-vector term, with
        w' = w - eta * (momentum * buffer + dL_train/dw + wd * w), one virtual SGD step."""
        if x_train is None or weight_optimizer is None:
            raise ValueError("the unrolled architecture step needs the training batch and optimizer")
        # BN running statistics of the virtual passes go to copies and are thrown away.
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        weights = self._weights()
        grads = self._train_grads(weights, buffers, x_train, y_train, list(weights.values()))
        unrolled = {}
        for (n, w), g in zip(weights.items(), grads):
            state = weight_optimizer.state.get(w, {})
            momentum = state.get("momentum_buffer")
            step = g + self.network_weight_decay * w.detach()
            if momentum is not None:
                step = step + self.network_momentum * momentum
            unrolled[n] = (w.detach() - eta * step).requires_grad_(True)
        loss = self.val_loss(x_val, y_val, unrolled, buffers)
        alphas = self.model.arch_parameters()
        grads = torch.autograd.grad(loss, alphas + list(unrolled.values()), allow_unused=True)
        d_alpha = grads[: len(alphas)]
        d_w = {n: torch.zeros_like(w) if g is None else g
               for (n, w), g in zip(unrolled.items(), grads[len(alphas):])}
        implicit = self.hessian_vector_product(d_w, buffers, x_train, y_train)
        with torch.no_grad():
            for a, g, h in zip(alphas, d_alpha, implicit):
                a.grad = g - eta * h
