"""Figures of a sweep, drawn from its tidy table (mean ± s.e. over seeds per grid point).

A study's plots module may define

    sweep_figures(table: DataFrame, manifest: dict, out_dir: Path) -> list[Figure]

to draw its own (e.g. double descent: test error against width). Otherwise
:func:`summary_vs_grid` draws every summary value against the first grid axis, one line
per combination of the other axes, with error bars of one standard error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

MAX_PANELS = 12


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def summary_vs_grid(table: pd.DataFrame, manifest: dict[str, Any], out_dir: Path) -> list[Figure]:
    """One panel per summary value (at most ``MAX_PANELS``) against the first grid axis."""
    keys = list(manifest["spec"]["grid"])
    if not len(table) or not keys:
        return []
    plt = setup_matplotlib()
    x_key = keys[0]
    others = keys[1:]
    metrics = [m for m in table["metric"].drop_duplicates() if table.loc[table["metric"] == m, "mean"].nunique() > 1]
    metrics = metrics or list(table["metric"].drop_duplicates())
    shown = metrics[:MAX_PANELS]
    cols = min(4, len(shown))
    rows = int(np.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.5 * rows), squeeze=False)
    numeric_x = _numeric(table[x_key])
    categories = list(dict.fromkeys(table[x_key].sort_values().tolist()))
    for ax, metric in zip(axes.flat, shown):
        sub = table[table["metric"] == metric]
        groups = sub.groupby(others, sort=True) if others else [((), sub)]
        for label, part in groups:
            part = part.sort_values(x_key)
            x = part[x_key].to_numpy(float) if numeric_x else [categories.index(v) for v in part[x_key]]
            err = part["se"].fillna(0.0).to_numpy()
            name = ", ".join(f"{k}={v}" for k, v in zip(others, label if isinstance(label, tuple) else (label,)))
            ax.errorbar(x, part["mean"], yerr=err, marker="o", ms=3, capsize=2, label=name or None)
        if numeric_x and sub[x_key].min() > 0 and sub[x_key].max() / sub[x_key].min() >= 10:
            ax.set_xscale("log")
        if not numeric_x:
            ax.set_xticks(range(len(categories)), [str(c) for c in categories], rotation=30, fontsize=7)
        ax.set_title(metric if len(metric) < 40 else "…" + metric[-38:], fontsize=8)
        ax.set_xlabel(x_key)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    if others:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), bbox_to_anchor=(0.5, 1.04),
                   fontsize=7)
    fig.tight_layout()
    n = table["n"].max()
    omitted = f" {len(metrics) - len(shown)} more values are in table.csv." if len(metrics) > len(shown) else ""
    caption = (f"Every summary value of the study that varies over the sweep, against {x_key} "
               f"({'one line per ' + ', '.join(others) if others else 'one line'}); points are the mean over "
               f"up to {int(n)} seed(s) per grid point, bars one standard error (none with one seed). "
               f"The study's own figures per grid point follow, with what the paper reports.{omitted}")
    return [Figure(save(fig, out_dir, "sweep_summary.png"), caption, f"Summary values against {x_key}")]


def sweep_figures(experiment: str, table: pd.DataFrame, manifest: dict[str, Any], out_dir: Path) -> list[Figure]:
    """The study's ``sweep_figures`` if its plots module has one, else :func:`summary_vs_grid`."""
    from telescope import plots

    module = plots.module_for(experiment)
    hook = getattr(module, "sweep_figures", None) if module is not None else None
    if hook is not None:
        return hook(table, manifest, Path(out_dir))
    return summary_vs_grid(table, manifest, Path(out_dir))
