"""Tracking sinks: copy a finished run's long-format metrics to TensorBoard or MLflow.

The run directory stays the source of truth; a tracking sink is an export of it, made
in the driver when a run finishes (``telescope sweep --tensorboard / --mlflow``), or
at any time later with ``sink.export_run(run_dir)``. Both are optional extras and say
how to install themselves when missing.

Naming (metric names as in CONTRACT.md): a row ``(step, split, name, value)`` becomes the
scalar ``<split>/<name>`` at ``step``. A run's units (one training run each, told apart by
the tag columns, e.g. ``setting``, ``lr``, ``seed``) become one TensorBoard run each
(subfolder ``<run>/<tag>=<value>,...``) or one nested MLflow run each under the run's own.

# NOTE [export is idempotent]
# Exporting a run twice does not duplicate its curves: TensorBoard's folder for the run is
# replaced, and MLflow skips a run whose ``telescope.run`` tag is already in the experiment.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Protocol

import pandas as pd

from telescope.errors import MissingExtraError
from telescope.store.rundir import METRIC_COLUMNS, read_json, read_metrics

log = logging.getLogger(__name__)


class TrackingSink(Protocol):
    def has_run(self, run_name: str) -> bool: ...

    def export_run(self, run_dir: Path, run_name: str | None = None,
                   tags: Mapping[str, Any] | None = None) -> Any: ...


def _require(module: str, extra: str, flag: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{flag} needs the optional package '{extra}', which is not installed: "
            f"pip install 'telescope[{extra}]'") from None


def _units(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Split a run's rows by its tag columns: ``[(label, rows), ...]``; label '' without tags."""
    tags = [c for c in frame.columns if c not in METRIC_COLUMNS]
    if not tags:
        return [("", frame)]
    out = []
    for values, rows in frame.groupby(tags, dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        label = ",".join(f"{k}={_fmt(v)}" for k, v in zip(tags, values))
        out.append((label, rows))
    return out


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class TensorBoardSink:
    """Event files under ``log_dir/<run name>/<unit tags>/`` (``tensorboard --logdir log_dir``)."""

    def __init__(self, log_dir: str | Path):
        _require("tensorboard", "tensorboard", "--tensorboard")
        self.log_dir = Path(log_dir)

    def has_run(self, run_name: str) -> bool:
        return (self.log_dir / run_name).is_dir()

    def export_run(self, run_dir: Path, run_name: str | None = None,
                   tags: Mapping[str, Any] | None = None) -> Path:
        """Write the run's scalars; returns the run's folder under ``log_dir``."""
        from torch.utils.tensorboard import SummaryWriter

        run_dir = Path(run_dir)
        target = self.log_dir / (run_name or run_dir.name)
        shutil.rmtree(target, ignore_errors=True)  # NOTE [export is idempotent]
        frame = read_metrics(run_dir)
        for label, rows in _units(frame):
            writer = SummaryWriter(log_dir=str(target / label) if label else str(target))
            try:
                rows = rows.sort_values("step", kind="stable")
                for step, split, name, value in rows[list(METRIC_COLUMNS)].itertuples(index=False):
                    writer.add_scalar(f"{split}/{name}", float(value), int(step))
            finally:
                writer.close()
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            writer = SummaryWriter(log_dir=str(target / "summary"))
            try:
                for key, value in read_json(summary_path).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        writer.add_scalar(f"summary/{key}", float(value), 0)
            finally:
                writer.close()
        return target


_MLFLOW_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")


def _mlflow_key(key: str) -> str:
    return _MLFLOW_BAD.sub("_", key)


class MLflowSink:
    """One MLflow run per run directory (params = config, metrics = summary), one nested run per unit.

    ``tracking_uri``: a local folder (file store, e.g. ``<sweep>/mlruns``) or
    ``sqlite:///path/mlflow.db``. ``experiment``: the MLflow experiment's name.
    """

    BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch

    def __init__(self, tracking_uri: str | Path, experiment: str = "telescope"):
        _require("mlflow", "mlflow", "--mlflow")
        uri = str(tracking_uri)
        if "://" not in uri and not uri.startswith(("file:", "sqlite:")):
            uri = Path(uri).resolve().as_uri()
        if uri.startswith("file:"):
            # NOTE [mlflow file store]: MLflow 3 refuses its folder store unless opted in; a
            # user who passes a folder has opted in (sqlite:///x.db needs mlflow's SQL extras).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.tracking_uri = uri
        self.experiment = experiment

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def _experiment_id(self, client) -> str:
        exp = client.get_experiment_by_name(self.experiment)
        return exp.experiment_id if exp is not None else client.create_experiment(self.experiment)

    def _find(self, client, exp_id: str, name: str):
        return client.search_runs([exp_id], filter_string=f"tags.`telescope.run` = '{name}'")

    def has_run(self, run_name: str) -> bool:
        client = self._client()
        return bool(self._find(client, self._experiment_id(client), run_name))

    def export_run(self, run_dir: Path, run_name: str | None = None,
                   tags: Mapping[str, Any] | None = None) -> str:
        """Log the run; returns the MLflow run id (the existing one if already exported)."""
        from mlflow.entities import Metric, Param

        run_dir = Path(run_dir)
        name = run_name or run_dir.name
        client = self._client()
        exp_id = self._experiment_id(client)
        found = self._find(client, exp_id, name)
        if found:  # NOTE [export is idempotent]
            return found[0].info.run_id
        record = read_json(run_dir / "config.json")
        now = int(time.time() * 1000)
        parent = client.create_run(exp_id, run_name=name, tags={
            "telescope.run": name, "telescope.experiment": record.get("experiment", "?"),
            **{f"telescope.tag.{k}": str(v) for k, v in (tags or {}).items()}})
        params = [Param(_mlflow_key(k), str(v)[:500]) for k, v in record.get("config", {}).items()]
        summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
        metrics = [Metric(_mlflow_key(f"summary/{k}"), float(v), now, 0) for k, v in summary.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        self._log(client, parent.info.run_id, metrics, params)
        for label, rows in _units(read_metrics(run_dir)):
            child = client.create_run(exp_id, run_name=label or "metrics",
                                      tags={"mlflow.parentRunId": parent.info.run_id, "telescope.unit": label})
            unit_metrics = [Metric(_mlflow_key(f"{split}/{metric}"), float(value), now, int(step))
                            for step, split, metric, value in rows[list(METRIC_COLUMNS)].itertuples(index=False)]
            unit_params = [Param(_mlflow_key(p.split("=", 1)[0]), p.split("=", 1)[1])
                           for p in label.split(",") if "=" in p]
            self._log(client, child.info.run_id, unit_metrics, unit_params)
            client.set_terminated(child.info.run_id)
        client.set_terminated(parent.info.run_id, "FINISHED" if (run_dir / "DONE").exists() else "FAILED")
        return parent.info.run_id

    def _log(self, client, run_id: str, metrics: list, params: list) -> None:
        for i in range(0, max(len(params), 1), 90):
            chunk = params[i:i + 90]
            if chunk:
                client.log_batch(run_id, params=chunk)
        for i in range(0, len(metrics), self.BATCH):
            client.log_batch(run_id, metrics=metrics[i:i + self.BATCH])
