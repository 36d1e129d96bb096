"""Figures from stored results only (never torch, never a re-run).

Each study with figures has a module ``telescope.plots.<module>`` (the study's line in the
one registry, :data:`telescope.experiments.STUDIES`) with

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


@dataclass(frozen=True)
class Figure:
    filename: str
    caption: str
    title: str = ""


def module_for(experiment: str) -> ModuleType | None:
    """The figures module of ``experiment`` (see :func:`telescope.experiments.plots_module`), or ``None``."""
    from telescope.experiments import plots_module

    path = plots_module(experiment)
    return importlib.import_module(path) if path else None


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
