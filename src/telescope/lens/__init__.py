"""The telescoping lens: f̃_t(x) = f_0(x) + Σ_s ∇f_{θ_{s−1}}(x)·Δθ_s on any training loop.

:class:`Lens` records the telescoping model and the linearized-at-init baseline on named
probe sets; trackers such as the smoother plug into it (see :class:`Tracker`).
:class:`SmootherSpec` (passed as ``Lens(..., smoother=spec)``) tracks the network as a
smoother of the training labels, f̃(x) = s(x)·y + c(x), and its effective parameters; its
choices are the enums :class:`SmootherMethod`, :class:`SmootherPath` and :class:`JacobianMethod`.
:class:`KernelWeightRecorder` measures the network's kernel weight norms ‖k_t(x)‖₂ against each
batch (the paper's trees-vs-nets comparison). :class:`ClosedFormSmoother` is the same smoother
for full-batch GD on a model with a closed-form tangent kernel.
"""

from telescope.lens.closed_form import ClosedFormSmoother
from telescope.lens.kernel_weights import KernelWeightRecorder, adam_phi, batch_kernel_rows, batch_kernel_weight_norms
from telescope.lens.products import JacobianMethod
from telescope.lens.recorder import Lens, Tracker, check_batch_independent
from telescope.lens.smoother import Method as SmootherMethod
from telescope.lens.smoother import Path as SmootherPath
from telescope.lens.smoother import (SmootherSpec, SmootherTracker, last_valid_step, self_check_valid, smoother_metrics,
                                     smoother_of)
from telescope.lens.stability import NEAR_EDGE, adam_sharpness, adam_stability_threshold, step_near_edge

__all__ = ["NEAR_EDGE", "ClosedFormSmoother", "JacobianMethod", "KernelWeightRecorder", "Lens", "SmootherMethod",
           "SmootherPath", "SmootherSpec", "SmootherTracker", "Tracker", "adam_phi", "adam_sharpness",
           "adam_stability_threshold", "batch_kernel_rows", "batch_kernel_weight_norms", "check_batch_independent",
           "last_valid_step", "self_check_valid", "smoother_metrics", "smoother_of", "step_near_edge"]


def __getattr__(name: str):
    # EMAMomentumSGD moved to telescope.train.optim (issue 16): the math core imports no optimizer
    # module, so the old name resolves lazily
    if name == "EMAMomentumSGD":
        from telescope.train.optim import EMAMomentumSGD

        return EMAMomentumSGD
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
