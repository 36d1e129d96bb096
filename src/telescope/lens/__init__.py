"""The telescoping lens: f̃_t(x) = f_0(x) + Σ_s ∇f_{θ_{s−1}}(x)·Δθ_s on any training loop.

:class:`Lens` records the telescoping model and the linearized-at-init baseline on named
probe sets; trackers such as the smoother plug into it (see :class:`Tracker`).
:class:`SmootherSpec` (passed as ``Lens(..., smoother=spec)``) tracks the network as a
smoother of the training labels, f̃(x) = s(x)·y + c(x), and its effective parameters.
"""

from telescope.lens.recorder import Lens, Tracker, check_batch_independent
from telescope.lens.smoother import (EMAMomentumSGD, SmootherSpec, SmootherTracker, smoother_metrics,
                                     smoother_of)
from telescope.lens.stability import adam_sharpness, adam_stability_threshold

__all__ = ["EMAMomentumSGD", "Lens", "SmootherSpec", "SmootherTracker", "Tracker", "adam_sharpness",
           "adam_stability_threshold", "check_batch_independent", "smoother_metrics", "smoother_of"]
