"""Tidy tables over a sweep's runs: one row per run, and mean ± s.e. over seeds per grid point.

``runs_table``   one row per run of ``sweep.json``: ``run, seed, status``, the grid keys (the
                 resolved config values, so numbers sort as numbers) and every scalar of
                 the run's ``summary.json``.
``sweep_table``  long and tidy: ``<grid keys>..., metric, mean, se, n`` over the finished
                 runs of each grid point; ``se`` = sample standard deviation / √n (NaN when
                 n = 1).

Both read stored files only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from telescope.store import read_json, run_status


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def grid_keys(manifest: dict[str, Any]) -> list[str]:
    return list(manifest["spec"]["grid"])


def _grid_value(config: dict[str, Any], key: str, fallback: str) -> Any:
    value = config.get(key, fallback)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value


def runs_table(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per run listed in ``sweep.json`` (see module docstring)."""

    sweep_dir = Path(sweep_dir)
    manifest = read_json(sweep_dir / "sweep.json")
    keys = grid_keys(manifest)
    rows = []
    for entry in manifest["runs"]:
        run_dir = sweep_dir / entry["name"]
        status = run_status(run_dir)
        config = read_json(run_dir / "config.json")["config"] if (run_dir / "config.json").exists() else {}
        row: dict[str, Any] = {"run": entry["name"], "seed": entry["seed"], "status": status}
        for key in keys:
            row[key] = _grid_value(config, key, entry["point"][key])
        if status == "done" and (run_dir / "summary.json").exists():
            for name, value in read_json(run_dir / "summary.json").items():
                if _scalar(value):
                    row[name] = float(value)
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values([*keys, "seed"], kind="stable").reset_index(drop=True) if len(frame) else frame


def sweep_table(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, standard error and count over seeds of every summary scalar, per grid point."""
    done = runs[runs["status"] == "done"] if len(runs) else runs
    metrics = [c for c in runs.columns if c not in ("run", "seed", "status", *keys)]
    if not len(done) or not metrics:
        return pd.DataFrame(columns=[*keys, "metric", "mean", "se", "n"])
    long = done.melt(id_vars=[*keys, "seed"], value_vars=metrics, var_name="metric").dropna(subset=["value"])
    by = [*keys, "metric"] if keys else ["metric"]
    g = long.groupby(by, sort=True)["value"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()
    out["se"] = out["std"] / np.sqrt(out["n"])
    out.loc[out["n"] < 2, "se"] = np.nan
    return out[[*by, "mean", "se", "n"]]


def write_tables(sweep_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``runs.csv`` and ``table.csv`` (tidy, mean ± s.e.) into the sweep directory."""
    sweep_dir = Path(sweep_dir)
    manifest = read_json(sweep_dir / "sweep.json")
    runs = runs_table(sweep_dir)
    table = sweep_table(runs, grid_keys(manifest))
    runs.to_csv(sweep_dir / "runs.csv", index=False)
    table.to_csv(sweep_dir / "table.csv", index=False)
    return runs, table
