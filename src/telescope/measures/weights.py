"""The size of a network's weights."""

from __future__ import annotations

import math
from typing import Iterable

import torch


def weight_norm(parameters: Iterable[torch.Tensor]) -> float:
    """L2 norm of all ``parameters`` together, √(Σ_p Σ p²), each tensor summed in float64.

    Pass ``model.parameters()`` for the contract's ``weight_norm``, or one layer's
    parameters for that layer's norm. 0.0 for no parameters.
    """
    return math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in parameters))
