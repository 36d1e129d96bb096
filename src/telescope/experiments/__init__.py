"""The one registry of studies: ``telescope run NAME``, the plots and the report look names up here.

Each study is one line of ``STUDIES``: its name and the basename of its two modules,
``telescope.experiments.<module>`` (``Config`` and ``run``) and ``telescope.plots.<module>``
(``figures``, optional). Modules are imported only when used, so ``telescope list`` stays
fast and :mod:`telescope.plots` can read this table without importing torch. Add a study by
adding one line.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from telescope.errors import ConfigError

STUDIES: dict[str, str] = {
    "approximation": "approximation",
    "deep-grokking": "deep_grokking",
    "double-descent": "double_descent",
    "kernel-stages": "kernel_stages",
    "grokking-control": "grokking_control",
    "grokking-mnist": "grokking_mnist",
    "lmc": "lmc",
    "grokking-poly": "grokking_poly",
    "grokking-transformer": "grokking_transformer",
    "lazy-rich": "lazy_rich",
    "trees-vs-nets": "trees_vs_nets",
}
_MODULES: dict[str, str] = {name: f"telescope.experiments.{module}" for name, module in STUDIES.items()}


def plots_module(name: str) -> str | None:
    """The import path of study ``name``'s figures module, or ``None`` (unknown study, or no figures)."""
    if name not in STUDIES:
        return None
    path = f"telescope.plots.{STUDIES[name]}"
    return path if importlib.util.find_spec(path) is not None else None


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

    @property
    def headline(self) -> tuple[str, ...]:
        """``fnmatch`` patterns of the summary keys printed first after a run (module attribute
        ``HEADLINE``; summaries are stored with sorted keys, so order is declared, not inherited)."""
        return tuple(getattr(self.module, "HEADLINE", ()))

    @property
    def cpu_only(self) -> str | None:
        """Why the study refuses ``--device cuda`` (module attribute ``CPU_ONLY``), or None."""
        return getattr(self.module, "CPU_ONLY", None)

    def run(self, config, sink, ctx):
        return self.module.run(config, sink, ctx)


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name lists the valid ones."""
    if name not in _MODULES:
        raise ConfigError(f"unknown experiment '{name}'; choose one of: {', '.join(names())}")
    return Experiment(name, importlib.import_module(_MODULES[name]))
