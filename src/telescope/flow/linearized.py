"""Gradient descent on a network linearized at initialisation, in closed form (torch).

The linearized-at-init baseline f_lin of the lazy-to-rich study: full-batch GD with step η on
the mean squared error mean_i (f(x_i) − y_i)² of f_lin(x) = f₀(x) + ∇f₀(x)·(θ − θ₀). It is
:class:`telescope.flow.EmpiricalFlow`'s discrete GD under another convention (NOTE [flow
convention] uses (1/2n)Σ(y − f)² from f₀ = 0): here the loss is twice that, the start is the
network's own f₀, the arithmetic stays in torch on the model's device and dtype, and the step
may go up to the stability edge 2 (not only the monotone regime), with t = ∞ as ridgeless
kernel regression.
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)


class LinearizedGD:
    """Full-batch GD on mean((f − y)²) of a model linearized at init, in closed form.

    With the initial tangent kernel K = V diag(λ) Vᵀ on the training inputs, step size
    η and c = 2η/n, the train residual after t steps is r_t = (I − cK)^t r₀ and the
    prediction at any x is f_t(x) = f₀(x) − k(x)ᵀ V diag(g_t(λ)) Vᵀ r₀ with
    g_t(λ) = (1 − (1 − cλ)^t)/λ (→ c·t as λ → 0). t = ∞ gives ridgeless kernel
    regression (g = 1/λ on the numerical range of K, 0 off it).
    Cost: one eigendecomposition O(n³) at construction, then O(n² + m·n) per time.
    Shapes: k_train (n, n), k_test (m, n), f0_* and y (n,) / (m,).
    """

    def __init__(self, k_train: torch.Tensor, k_test: torch.Tensor, y: torch.Tensor,
                 f0_train: torch.Tensor, f0_test: torch.Tensor, lr: float):
        lam, v = torch.linalg.eigh(k_train)
        self.lam, self.v = lam, v
        self.c = 2.0 * lr / k_train.shape[0]
        self.r0 = v.T @ (f0_train - y)          # residual in the eigenbasis
        self.kv = k_test @ v                    # (m, n)
        self.f0_test, self.y = f0_test, y
        self.range_mask = lam > lam.abs().max() * k_train.shape[0] * torch.finfo(lam.dtype).eps
        if bool((self.c * lam.max()) >= 2.0):
            log.warning("LinearizedGD: step size η=%g is beyond the stability edge 2/(c·λ_max)", lr)

    def _g(self, t: float) -> torch.Tensor:
        if math.isinf(t):
            return torch.where(self.range_mask, 1.0 / self.lam, torch.zeros_like(self.lam))
        x = self.c * self.lam
        safe = x.abs() > 1e-300
        with torch.no_grad():
            one_minus_q = torch.where(x < 1.0, -torch.expm1(t * torch.log1p(-x.clamp(max=1 - 1e-16))),
                                      1.0 - torch.pow(1.0 - x, t))
            lam_safe = torch.where(safe, self.lam, torch.ones_like(self.lam))
            return torch.where(safe, one_minus_q / lam_safe, torch.full_like(self.lam, self.c * t))

    def train_residual(self, t: float) -> torch.Tensor:
        """f_t − y on the training inputs, (n,)."""
        if math.isinf(t):
            return self.v @ torch.where(self.range_mask, torch.zeros_like(self.r0), self.r0)
        return self.v @ (torch.pow(1.0 - self.c * self.lam, t) * self.r0)

    def test_prediction(self, t: float) -> torch.Tensor:
        """f_t on the test inputs, (m,)."""
        return self.f0_test - self.kv @ (self._g(t) * self.r0)
