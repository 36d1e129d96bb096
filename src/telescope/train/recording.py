"""When to measure during training: log-spaced steps, and the callback that measures at them."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch


def log_steps(total: int, points: int) -> list[int]:
    """0 plus about ``points`` log-spaced steps in [1, total], always ending at ``total``."""
    grid = np.unique(np.round(np.logspace(0, np.log10(max(total, 1)), points)).astype(int))
    return sorted({0, *grid.tolist(), total})


class RecordAt:
    """A :func:`telescope.train.fit` callback that calls ``record(step, mean_loss)`` at ``steps``.

    ``mean_loss`` is the mean training-batch loss over the steps since the previous record
    (``None`` for the record at step 0, made by :meth:`start` before training). The losses
    are summed on their device in float64 and read once per record (NOTE [training without
    host syncs]); the mean equals the float64 mean of the per-step floats exactly (the same
    additions in the same order).
    """

    loss_on_device = True

    def __init__(self, steps: Iterable[int], record: Callable[[int, float | None], None]):
        self.steps = set(steps)
        self.record = record
        self._sum = None
        self._count = 0

    def start(self) -> None:
        if 0 in self.steps:
            self.record(0, None)

    def due(self, step: int) -> bool:
        return step in self.steps

    def __call__(self, step: int, loss) -> None:
        loss = torch.as_tensor(loss, dtype=torch.float64)
        self._sum = loss.clone() if self._sum is None else self._sum.add_(loss)
        self._count += 1
        if step in self.steps:
            mean = float(self._sum) / self._count
            self._sum, self._count = None, 0
            self.record(step, mean)
