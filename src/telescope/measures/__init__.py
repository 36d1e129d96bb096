"""Measures computed on a network (beside :mod:`telescope.kernels`, which measures its tangent kernel).

- :mod:`~telescope.measures.features`: each linear layer's pre-activations, the numerical and
  effective rank of their covariance, and ridge probes on them (Deep Grokking).
- :mod:`~telescope.measures.weights`: weight norms.
- :mod:`~telescope.measures.predictions`: ``mse`` and ``error`` of outputs against targets.
- :mod:`~telescope.measures.curves`: when a logged curve first meets a condition, and its
  value at a logged step (every study's summary).
- :mod:`~telescope.measures.averaging`: weight interpolation, BatchNorm re-estimation, per-layer
  gradient change and the first-order prediction of an averaged model (linear mode connectivity).

Torch only (and :mod:`telescope.kernels` for spectra); studies in ``experiments/`` call these.
"""

from telescope.measures.averaging import (first_order_prediction, gradient_change_by_kind, gradient_change_by_layer,
                                          has_batchnorm, interpolate, interpolation_barrier, layer_groups,
                                          layer_kinds, recompute_batchnorm, true_class_gradients)
from telescope.measures.curves import PEAK_REL, PEAK_Z, find_peak, first_step, stays_from, value_at
from telescope.measures.features import (as_float64, covariance_spectrum, dead_units, feature_covariance,
                                         feature_effective_rank, layer_features, numerical_rank, probe_accuracy,
                                         tunnel_length)
from telescope.measures.predictions import binary_error, binary_metrics
from telescope.measures.weights import weight_norm

__all__ = ["PEAK_REL", "PEAK_Z", "as_float64", "binary_error", "binary_metrics", "covariance_spectrum", "dead_units", "feature_covariance",
           "feature_effective_rank", "find_peak", "first_order_prediction", "first_step", "gradient_change_by_kind",
           "gradient_change_by_layer", "has_batchnorm", "interpolate", "interpolation_barrier", "layer_features",
           "layer_groups", "layer_kinds", "numerical_rank", "probe_accuracy", "recompute_batchnorm", "stays_from",
           "true_class_gradients", "tunnel_length", "value_at", "weight_norm"]
