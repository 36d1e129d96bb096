"""How well a network's outputs match the targets: the contract's ``mse`` and ``error``."""

from __future__ import annotations

import torch


def binary_error(f: torch.Tensor, y: torch.Tensor) -> float:
    """Misclassification rate of scalar outputs ``f`` (n,) against 0/1 targets ``y`` (n,);
    the predicted class is 1 where f > 0.5 (the midpoint of the squared-loss targets)."""
    return float(((f > 0.5).double() != y.double()).double().mean())


def binary_metrics(f: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """``{"mse": mean (f − y)², "error": binary_error(f, y)}`` in float64; f, y (n,)."""
    f = f.double()
    return {"mse": float(((f - y.double()) ** 2).mean()), "error": binary_error(f, y)}
