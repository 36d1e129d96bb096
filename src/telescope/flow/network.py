"""The neural side of the bridge: a wide two-layer ReLU net and its exact initial tangent kernel.

f(x) = α m^{-1/2} Σ_j a_j relu(⟨w_j, x⟩/√d)   (NTK parametrisation), w_j ~ N(0, I_d), a_j ~ N(0, 1).

The output scale α is Chizat–Bach's laziness knob: the tangent kernel is α² K, so gradient
descent with step η/α² moves the function exactly as the step η moves the α = 1 net to first
order, while the relative change of the weights (and of the kernel) shrinks like 1/α.

# NOTE [symmetric initialisation]
The kernel flow starts from f_0 = 0 (NOTE [flow convention]). The network is initialised
antisymmetrically: neurons come in pairs (w, a) and (w, −a), so f_0 ≡ 0 exactly while the
initial tangent kernel keeps the law of an ordinary width-m initialisation. As m → ∞ the
tangent kernel tends to the ``ntk_relu`` profile of :mod:`telescope.flow.inner_product`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from telescope.errors import ConfigError, ShapeError


class TwoLayerReLU(torch.nn.Module):
    """Two-layer ReLU net in NTK parametrisation with a symmetric (f_0 = 0) initialisation.

    Parameters: ``w`` (m, d) and ``a`` (m,). ``forward(x)`` maps (b, d) → (b,).
    """

    def __init__(self, d: int, width: int, *, scale: float = 1.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64):
        super().__init__()
        if width < 2 or width % 2:
            raise ConfigError(f"TwoLayerReLU(width={width}): the symmetric initialisation needs an even "
                              "width >= 2")
        if not scale > 0:
            raise ConfigError(f"TwoLayerReLU(scale={scale}): the output scale must be > 0")
        if d < 1:
            raise ConfigError(f"TwoLayerReLU(d={d}): need d >= 1")
        half = width // 2
        w = torch.randn(half, d, generator=generator, dtype=dtype)
        a = torch.randn(half, generator=generator, dtype=dtype)
        self.d, self.width, self.scale = d, width, float(scale)
        self.w = torch.nn.Parameter(torch.cat([w, w]))
        self.a = torch.nn.Parameter(torch.cat([a, -a]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ShapeError(f"TwoLayerReLU.forward: x must be (b, {self.d}), got {tuple(x.shape)}")
        z = x @ self.w.T / math.sqrt(self.d)
        return torch.relu(z) @ self.a * (self.scale / math.sqrt(self.width))

    @torch.no_grad()
    def tangent_kernel(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
        """⟨∇_θ f(x1), ∇_θ f(x2)⟩ at the current parameters, in closed form: ``(n1, n2)`` float64.

        = (α²/m)[relu(Z1) relu(Z2)ᵀ + (1{Z1>0} diag(a²) 1{Z2>0}ᵀ) ∘ (X1 X2ᵀ / d)], Z = X Wᵀ/√d.
        Cost O(n1 n2 (m + d)) time, O((n1 + n2) m + n1 n2) memory.
        """
        x2 = x1 if x2 is None else x2
        w = self.w.detach().to("cpu", torch.float64)
        a2 = self.a.detach().to("cpu", torch.float64) ** 2
        t1 = torch.as_tensor(x1, dtype=torch.float64)
        t2 = torch.as_tensor(x2, dtype=torch.float64)
        if t1.ndim != 2 or t2.ndim != 2 or t1.shape[1] != self.d or t2.shape[1] != self.d:
            raise ShapeError(f"TwoLayerReLU.tangent_kernel: inputs must be (n, {self.d}); got "
                             f"{tuple(t1.shape)} and {tuple(t2.shape)}")
        z1 = t1 @ w.T / math.sqrt(self.d)
        z2 = t2 @ w.T / math.sqrt(self.d)
        rf = torch.relu(z1) @ torch.relu(z2).T
        gate = ((z1 > 0).to(torch.float64) * a2) @ (z2 > 0).to(torch.float64).T
        return ((rf + gate * (t1 @ t2.T / self.d)) * (self.scale ** 2 / self.width)).numpy()
