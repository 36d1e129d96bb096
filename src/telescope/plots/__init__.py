"""Figures from stored results only (never torch, never a re-run).

Each study with figures has a module ``telescope.plots.<module>`` (its name listed in
``_MODULES``) with

    figures(metrics: pandas.DataFrame, config: dict, summary: dict, out_dir: Path)
        -> list[Figure]

where ``metrics`` is the run's long-format table, ``config`` the resolved config dict and
each :class:`Figure` names a PNG written under ``out_dir`` and a caption that says what
the paper reports and what this run shows.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

_MODULES: dict[str, str] = {
    "approximation": "telescope.plots.approximation",
    "deep-grokking": "telescope.plots.deep_grokking",
    "double-descent": "telescope.plots.double_descent",
    "kernel-stages": "telescope.plots.kernel_stages",
    "grokking-control": "telescope.plots.grokking_control",
    "grokking-mnist": "telescope.plots.grokking_mnist",
    "lmc": "telescope.plots.lmc",
    "grokking-poly": "telescope.plots.grokking_poly",
    "lazy-rich": "telescope.plots.lazy_rich",
    "trees-vs-nets": "telescope.plots.trees_vs_nets",
}


@dataclass(frozen=True)
class Figure:
    filename: str
    caption: str
    title: str = ""


def module_for(experiment: str) -> ModuleType | None:
    if experiment not in _MODULES:
        return None
    return importlib.import_module(_MODULES[experiment])


def setup_matplotlib():
    """matplotlib with the non-interactive Agg backend and the house style."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
        "font.size": 9,
    })
    return plt


def save(fig, out_dir: Path, filename: str) -> str:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / filename, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return filename
