"""Models used by the studies, and the registry that names them.

``build(name, **kwargs)`` returns an ``nn.Module``; an unknown name lists the valid ones.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from telescope.errors import ConfigError
from telescope.models.mlp import MLP, scale_init
from telescope.models.modular import ModularQuadraticMLP
from telescope.models.poly import CommitteeMachine

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "committee": CommitteeMachine,
    "modular_quadratic": ModularQuadraticMLP,
}


def register(name: str, factory: Callable[..., nn.Module]) -> None:
    _REGISTRY[name] = factory


def build(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


__all__ = ["MLP", "CommitteeMachine", "ModularQuadraticMLP", "scale_init", "build", "register"]
