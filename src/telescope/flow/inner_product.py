"""Inner-product kernels H(x, x') = h(⟨x, x'⟩/d) on the sphere of radius √d.

Three profiles h, each a function of t = ⟨x, x'⟩/d ∈ [−1, 1]:

* ``exp``: h(t) = e^t; every Taylor coefficient h^{(k)}(0)/k! = 1/k! is positive, so every
  degree is learnable and the oracle error decays to 0.
* ``rf_relu``: the random-feature kernel of a two-layer ReLU net whose first layer is frozen,
  f(x) = m^{-1/2} Σ_j a_j relu(⟨w_j, x⟩/√d), w_j ~ N(0, I_d):
  h(t) = E[relu(u) relu(u')] = (√(1−t²) + (π − arccos t) t) / (2π) for standard normals of
  correlation t. Taylor coefficients 1/(2π), 1/4, 1/(4π), 0, ... (odd degrees ≥ 3 vanish).
* ``ntk_relu``: the neural tangent kernel of the same net with both layers trained and
  a_j ~ N(0, 1): h(t) = h_rf(t) + t (π − arccos t)/(2π); h(1) = 1; Taylor coefficients
  1/(2π), 1/2, 3/(4π), 0, ...

Gram matrices cost O(n1 n2 d) time and O(n1 n2) memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from telescope.errors import ConfigError, ShapeError


def _rf_relu(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, -1.0, 1.0)
    return (np.sqrt(1.0 - t * t) + (np.pi - np.arccos(t)) * t) / (2.0 * np.pi)


def _ntk_relu(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, -1.0, 1.0)
    return _rf_relu(t) + t * (np.pi - np.arccos(t)) / (2.0 * np.pi)


@dataclass(frozen=True)
class InnerProductKernel:
    """A named profile h; ``kernel(X1, X2)`` is the Gram matrix h(X1 X2ᵀ / d), shape ``(n1, n2)``."""

    name: str
    h: Callable[[np.ndarray], np.ndarray]

    def __call__(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
        x2 = x1 if x2 is None else x2
        if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
            raise ShapeError(f"InnerProductKernel('{self.name}'): inputs must be (n1, d) and (n2, d) "
                             f"with the same d; got {x1.shape} and {x2.shape}")
        d = x1.shape[1]
        return np.asarray(self.h(x1 @ x2.T / d), dtype=np.float64)


INNER_PRODUCT_KERNELS: dict[str, InnerProductKernel] = {
    "exp": InnerProductKernel("exp", np.exp),
    "rf_relu": InnerProductKernel("rf_relu", _rf_relu),
    "ntk_relu": InnerProductKernel("ntk_relu", _ntk_relu),
}


def inner_product_kernel(name: str) -> InnerProductKernel:
    """The kernel called ``name``; an unknown name lists the valid ones."""
    if name not in INNER_PRODUCT_KERNELS:
        raise ConfigError(f"inner_product_kernel('{name}'): unknown kernel; choose one of: "
                          f"{', '.join(sorted(INNER_PRODUCT_KERNELS))}")
    return INNER_PRODUCT_KERNELS[name]
