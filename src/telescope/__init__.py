"""telescope: the telescoping lens on neural-network training.

A trained network is its initial function plus the sum of every step's first-order
change, f_T(x) ≈ f_0(x) + Σ_t ∇f_{t−1}(x)·Δθ_t. This package records that model on any
PyTorch training loop (:class:`Lens`), computes empirical tangent kernels
(:func:`empirical_ntk`) and reproduces the studies built on them (``telescope list``).
"""

from telescope import trees
from telescope.errors import TelescopeError
from telescope.kernels import empirical_ntk, empirical_ntk_by_layer
from telescope.lens import Lens, SmootherSpec

__version__ = "0.1.0"

__all__ = ["Lens", "SmootherSpec", "TelescopeError", "__version__", "empirical_ntk", "empirical_ntk_by_layer", "trees"]
