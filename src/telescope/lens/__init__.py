"""The telescoping lens: f̃_t(x) = f_0(x) + Σ_s ∇f_{θ_{s−1}}(x)·Δθ_s on any training loop.

:class:`Lens` records the telescoping model and the linearized-at-init baseline on named
probe sets; trackers such as the smoother plug into it (see :class:`Tracker`).
"""

from telescope.lens.recorder import Lens, Tracker, check_batch_independent

__all__ = ["Lens", "Tracker", "check_batch_independent"]
