"""The registry of studies: ``telescope run NAME`` looks names up here.

Each entry maps a name to the module that holds its ``Config`` and ``run``; modules are
imported only when used, so ``telescope list`` stays fast. Add a study by adding one
line to ``_MODULES``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from telescope.errors import ConfigError

_MODULES: dict[str, str] = {
    "approximation": "telescope.experiments.approximation",
    "deep-grokking": "telescope.experiments.deep_grokking",
    "double-descent": "telescope.experiments.double_descent",
    "kernel-stages": "telescope.experiments.kernel_stages",
    "grokking-control": "telescope.experiments.grokking_control",
    "grokking-mnist": "telescope.experiments.grokking_mnist",
    "lmc": "telescope.experiments.lmc",
    "grokking-poly": "telescope.experiments.grokking_poly",
    "lazy-rich": "telescope.experiments.lazy_rich",
    "trees-vs-nets": "telescope.experiments.trees_vs_nets",
}


@dataclass(frozen=True)
class Experiment:
    name: str
    module: ModuleType

    @property
    def description(self) -> str:
        doc = (self.module.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""

    @property
    def config_cls(self) -> type:
        return self.module.Config

    def run(self, config, sink, ctx):
        return self.module.run(config, sink, ctx)


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name lists the valid ones."""
    if name not in _MODULES:
        raise ConfigError(f"unknown experiment '{name}'; choose one of: {', '.join(names())}")
    return Experiment(name, importlib.import_module(_MODULES[name]))
