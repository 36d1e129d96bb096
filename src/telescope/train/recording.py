"""When to measure during training: log-spaced steps, and the callback that measures at them."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np


def log_steps(total: int, points: int) -> list[int]:
    """0 plus about ``points`` log-spaced steps in [1, total], always ending at ``total``."""
    grid = np.unique(np.round(np.logspace(0, np.log10(max(total, 1)), points)).astype(int))
    return sorted({0, *grid.tolist(), total})


class RecordAt:
    """A :func:`telescope.train.fit` callback that calls ``record(step, mean_loss)`` at ``steps``.

    ``mean_loss`` is the mean training-batch loss over the steps since the previous record
    (``None`` for the record at step 0, made by :meth:`start` before training).
    """

    def __init__(self, steps: Iterable[int], record: Callable[[int, float | None], None]):
        self.steps = set(steps)
        self.record = record
        self._losses: list[float] = []

    def start(self) -> None:
        if 0 in self.steps:
            self.record(0, None)

    def __call__(self, step: int, loss: float) -> None:
        self._losses.append(loss)
        if step in self.steps:
            mean = sum(self._losses) / len(self._losses)
            self._losses.clear()
            self.record(step, mean)
