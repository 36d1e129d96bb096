"""Empirical tangent kernels and their statistics.

:func:`empirical_ntk` computes ``K(x, x')[c, d] = ⟨∂f_c(x)/∂θ, ∂f_d(x')/∂θ⟩`` for any
``nn.Module`` by one of several :class:`Implementation` s (a slow ``reference`` oracle,
per-example Jacobians, NTK–vector products, and the layer-wise ``structured`` form);
:func:`empirical_ntk_by_layer` splits it into per-layer parts that sum to the whole.
The statistics are plain functions on kernel tensors. Torch only.
"""

from telescope.kernels.ntk import Implementation, empirical_ntk, empirical_ntk_by_layer
from telescope.kernels.statistics import (
    centered_kernel_alignment,
    effective_rank,
    kernel_distance,
    kernel_target_alignment,
    kernel_weight_norms,
    relative_change,
    spectrum_effective_rank,
    top_eigenvalues,
)

__all__ = [
    "Implementation",
    "centered_kernel_alignment",
    "effective_rank",
    "empirical_ntk",
    "empirical_ntk_by_layer",
    "kernel_distance",
    "kernel_target_alignment",
    "kernel_weight_norms",
    "relative_change",
    "spectrum_effective_rank",
    "top_eigenvalues",
]
