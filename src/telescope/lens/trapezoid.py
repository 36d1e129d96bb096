"""The telescoping model's second-order companion: the trapezoid rule, a diagnostic of f̃'s error.

# NOTE [trapezoid rule]
# The telescoping model adds, each step, the first-order change at the start of the step,
# f̃_t = f̃_{t−1} + ∇f_{θ_{t−1}}(x)·Δθ_t (Euler's rule; the paper's model, NOTE [realised updates]).
# Its per-step error is the remainder ½ Δθ_tᵀ ∇²f Δθ_t + O(|Δθ|³). The trapezoid rule averages
# the gradients at both ends,
#     f̂_t = f̂_{t−1} + ½ (∇f_{θ_{t−1}}(x) + ∇f_{θ_t}(x))·Δθ_t,
# which cancels the second-order term: its per-step error is O(|Δθ|³), and it is exact for a model
# quadratic in its parameters (a two-layer linear network, a product of two weights), where Euler's
# rule is not. We keep it as a diagnostic, not as the lens's model: when |f − f̃| grows while
# |f − f̂| stays small, f̃'s error is the sum of the steps' second-order remainders (one sign when
# the optimizer oscillates across a sharp direction, as Adam does at its edge of stability, NOTE
# [adam edge of stability] in lens/stability.py), not a flaw of the first-order picture at each step.
# f̂ is still a sum of tangent-kernel terms (each step's kernel is the mean of the kernels at both
# ends), but the smoother (p⁰) follows Euler's f̃ only. Cost: one more JVP over the probes per step
# (the lens's step costs about twice as much) and one N × k buffer; ``Lens(..., second_order=True)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch


class TrapezoidTracker:
    """Follows f̂ (NOTE [trapezoid rule]) on every probe point of a lens; built by
    ``Lens(..., second_order=True)``. ``f_hat`` has the shape and dtype of ``lens.f_tilde``."""

    def __init__(self, lens: Any):
        self.f_hat = lens.f_tilde.clone()
        self._f_tilde_before = lens.f_tilde.clone()

    def after_step(self, lens: Any, params_before: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor],
                   batch: Any, optimizer: Any) -> None:
        with torch.no_grad():
            end = lens.jvp(lens.snapshot(), delta).to(self.f_hat.dtype)      # ∇f_{θ_t}·Δθ_t
            euler = lens.f_tilde - self._f_tilde_before                     # ∇f_{θ_{t−1}}·Δθ_t, just added to f̃
            self.f_hat.add_(euler.add_(end), alpha=0.5)
            self._f_tilde_before.copy_(lens.f_tilde)
