"""Reading logged curves: when a condition first holds, a curve's value at a logged step, and
whether a curve over a sweep axis (test error against width) has a peak.

Every study's summary asks the same questions of its curves (the first step with train error 0,
with test loss below a level, from which p_test stays below p_train); they are answered here once.
Shapes: ``steps`` (T,) increasing logged steps; ``values`` and ``mask`` (T,) aligned with them.
A step that does not exist is NaN (a summary writes it as null), never an exception.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PEAK_REL", "PEAK_Z", "find_peak", "first_step", "stays_from", "value_at"]


def first_step(steps: np.ndarray, mask: np.ndarray) -> float:
    """The first logged step where ``mask`` holds; NaN if it never does."""
    hit = np.flatnonzero(np.asarray(mask, dtype=bool))
    return float(steps[hit[0]]) if hit.size else float("nan")


def stays_from(steps: np.ndarray, mask: np.ndarray) -> float:
    """The first logged step from which ``mask`` holds at every later logged step; NaN if it
    does not hold at the last one (e.g. the step after which p_test stays below p_train)."""
    mask = np.asarray(mask, dtype=bool)
    return first_step(steps, np.flip(np.logical_and.accumulate(np.flip(mask))))


def value_at(steps: np.ndarray, values: np.ndarray, step: float) -> float:
    """``values`` at the logged step ``step`` (NaN for a NaN step, e.g. one that never came)."""
    if not math.isfinite(step):
        return float("nan")
    hit = np.flatnonzero(np.asarray(steps) == step)
    if not hit.size:
        raise ValueError(f"value_at(step={step}): not a logged step (logged: {steps[:3]} … {steps[-1:]})")
    return float(values[hit[0]])


# NOTE [double-descent peak criterion]
# A test-MSE curve over widths "has a peak" when some interior width k has both a rise
# into it, m[k] − min(m[:k]), and a fall after it, m[k] − min(m[k+1:]), larger than
#     max(PEAK_REL · m[k], PEAK_Z · √(se[k]² + se[j]²))
# (j the width of the minimum on that side; se = standard error over seeds, 0 with one
# seed); among such widths the one with the largest min(rise, fall) is reported. With
# one seed the seed-to-seed spread is unknown, so the relative part carries the test.
# Why 15%: in the runs recorded in docs/double-descent.md (n = 200, one seed) the curve
# the paper says has no double descent (clean MNIST 3/5, Fig. 9 right) has bumps of at
# most 9% of their value (0.064 → 0.069 → 0.050; 0.050 → 0.055 → 0.043), while the
# curves with label noise rise and fall by 28–61% (noisy MNIST 51%/38%, MNIST-1D
# 61%/28%); 15% sits between and needs a bump of one sixth of the curve's height. With
# several seeds the rise and fall must also exceed 2 combined standard errors. The
# criterion can say "no peak": a monotone curve has no interior width with a rise.
PEAK_REL = 0.15
PEAK_Z = 2.0


def find_peak(widths, test_mse, se=None, *, rel: float = PEAK_REL, z: float = PEAK_Z) -> dict[str, float]:
    """The double-descent peak of a test-MSE curve, or "no peak" (NOTE [double-descent peak criterion]).

    ``widths``, ``test_mse``, ``se``: 1-D, one entry per width (any order; ``se`` the
    standard errors over seeds, None or zeros for one seed). Returns ``peak`` (1.0 or 0.0),
    ``peak_width`` (NaN without a peak), and ``rise``/``fall`` relative to the peak value:
    those of the reported peak, or without one those of the interior width with the largest
    min(rise, fall) (NaN for fewer than three widths), so a caption can say how close it came.
    """
    order = np.argsort(np.asarray(widths))
    w = np.asarray(widths, dtype=float)[order]
    m = np.asarray(test_mse, dtype=float)[order]
    s = np.zeros_like(m) if se is None else np.nan_to_num(np.asarray(se, dtype=float)[order])
    best = {"peak": 0.0, "peak_width": float("nan"), "rise": float("nan"), "fall": float("nan")}
    score_best, found_best = -np.inf, False
    for k in range(1, len(m) - 1):
        i, j = int(np.argmin(m[:k])), k + 1 + int(np.argmin(m[k + 1:]))
        rise, fall = m[k] - m[i], m[k] - m[j]
        need_rise = max(rel * m[k], z * float(np.hypot(s[k], s[i])))
        need_fall = max(rel * m[k], z * float(np.hypot(s[k], s[j])))
        found = rise > need_rise and fall > need_fall
        score = min(rise, fall) / m[k] if m[k] > 0 else -np.inf
        if (found, score) > (found_best, score_best):
            found_best, score_best = found, score
            best = {"peak": float(found), "peak_width": float(w[k]) if found else float("nan"),
                    "rise": float(rise / m[k]) if m[k] > 0 else float("nan"),
                    "fall": float(fall / m[k]) if m[k] > 0 else float("nan")}
    return best
