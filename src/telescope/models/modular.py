"""The quadratic MLP on modular addition (Kumar, Bordelon, Gershman, Pehlevan §3, Fig. 2).

a + b ≡ c (mod p); the input is concat(one-hot a, one-hot b) ∈ R^{2p}, the target the
one-hot of c ∈ R^p. Two bias-free layers with a quadratic activation:

    f(x) = s² · W₂ (W₁ x)² / (D · N),   D = 2p, N = hidden width, W₁, W₂ ~ N(0, 1),

and the authors train it with full-batch GD on MSE / s² at learning rate lr₀ / s² (their
code multiplies the output by the scale s twice). The scale s is the laziness knob of
this model: a larger s moves the network less for the same change of output.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from telescope.errors import ConfigError, ShapeError


class ModularQuadraticMLP(nn.Module):
    """(n, 2p) → (n, p): f(x) = s² W₂ (W₁x)² / (2p · N), no biases, weights N(0, 1).

    ``generator``/``dtype`` are for the initial weights.
    """

    def __init__(self, p: int, width: int = 100, *, scale: float = 1.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        if p < 2 or width < 1:
            raise ConfigError(f"ModularQuadraticMLP(p={p}, width={width}): need p ≥ 2 and width ≥ 1")
        if not scale > 0:
            raise ConfigError(f"ModularQuadraticMLP(scale={scale}): the scale must be positive")
        self.p, self.width, self.scale = int(p), int(width), float(scale)
        self.w1 = nn.Parameter(torch.randn(width, 2 * p, generator=generator, dtype=dtype))
        self.w2 = nn.Parameter(torch.randn(p, width, generator=generator, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != 2 * self.p:
            raise ShapeError(f"ModularQuadraticMLP: x has shape {tuple(x.shape)}; expected (n, {2 * self.p})")
        h = x @ self.w1.T
        return (h * h) @ self.w2.T * (self.scale ** 2 / (2 * self.p * self.width))


def modular_addition(p: int, train_fraction: float, *, generator: torch.Generator,
                     dtype: torch.dtype = torch.float32):
    """All p² pairs (a, b) as one-hot pairs with one-hot (a + b) mod p targets, randomly split.

    Returns (x_train (n, 2p), y_train (n, p), x_test, y_test) with n = ⌊train_fraction·p²⌋.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"modular_addition(train_fraction={train_fraction}): choose a value in (0, 1)")
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    eye = torch.eye(p, dtype=dtype)
    x = torch.cat([eye[a], eye[b]], dim=1)
    y = eye[(a + b) % p]
    order = torch.randperm(p * p, generator=generator)
    n = int(train_fraction * p * p)
    tr, te = order[:n], order[n:]
    return x[tr], y[tr], x[te], y[te]
