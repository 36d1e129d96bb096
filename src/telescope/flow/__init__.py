"""Closed-form gradient flow on kernel least squares: the oracle world and the empirical world.

The math core of the three-stages study (Ghosh, Mei & Yu, ICLR 2022), on inputs uniform on
the sphere of radius √d with inner-product kernels h(⟨x, x'⟩/d):

* :mod:`~telescope.flow.sphere`: sampling, harmonic dimensions B(d, k), Funk–Hecke
  eigenvalues λ_{d,k}, product-of-coordinates targets with exact harmonic energies;
* :mod:`~telescope.flow.inner_product`: the profiles ``exp``, ``rf_relu``, ``ntk_relu``;
* :mod:`~telescope.flow.dynamics`: the oracle curve, :class:`EmpiricalFlow` (one
  eigendecomposition, then any time) and the discrete-GD reference;
* :mod:`~telescope.flow.linearized`: :class:`LinearizedGD`, GD on a network linearized at
  init from its own f₀ (the lazy-to-rich study's baseline), in torch;
* :mod:`~telescope.flow.stages`: stage detection and the theory's boundaries;
* :mod:`~telescope.flow.network`: a wide two-layer ReLU net and its initial tangent kernel
  (the neural bridge).

Imports torch, numpy, scipy and the standard library only. Conventions: NOTE [flow convention]
in :mod:`telescope.flow.dynamics`.
"""

from telescope.flow.dynamics import (
    EmpiricalFlow,
    gd_reference,
    log_time_grid,
    oracle_learned_fraction,
    oracle_mse,
)
from telescope.flow.linearized import LinearizedGD
from telescope.flow.network import TwoLayerReLU
from telescope.flow.inner_product import INNER_PRODUCT_KERNELS, InnerProductKernel, inner_product_kernel
from telescope.flow.sphere import (
    ProductTarget,
    funk_hecke_eigenvalues,
    harmonic_dim,
    harmonic_energy_factor,
    sample_sphere,
)
from telescope.flow.stages import StageReport, StageWindow, detect_stages, predicted_boundaries

__all__ = [
    "EmpiricalFlow",
    "INNER_PRODUCT_KERNELS",
    "InnerProductKernel",
    "LinearizedGD",
    "ProductTarget",
    "StageReport",
    "StageWindow",
    "TwoLayerReLU",
    "detect_stages",
    "funk_hecke_eigenvalues",
    "gd_reference",
    "harmonic_dim",
    "harmonic_energy_factor",
    "inner_product_kernel",
    "log_time_grid",
    "oracle_learned_fraction",
    "oracle_mse",
    "predicted_boundaries",
    "sample_sphere",
]
