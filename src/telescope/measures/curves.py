"""Reading logged curves: when a condition first holds, and a curve's value at a logged step.

Every study's summary asks the same questions of its curves (the first step with train error 0,
with test loss below a level, from which p_test stays below p_train); they are answered here once.
Shapes: ``steps`` (T,) increasing logged steps; ``values`` and ``mask`` (T,) aligned with them.
A step that does not exist is NaN (a summary writes it as null), never an exception.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["first_step", "stays_from", "value_at"]


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
