"""Tracking sinks read back: TensorBoard's event reader and MLflow's client see the stored scalars."""

import pandas as pd
import pytest

from telescope.errors import MissingExtraError
from telescope.store import read_json
from telescope.store.sinks import MLflowSink, TensorBoardSink


def test_tensorboard_event_files_read_back(local_sweep, tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard is an optional extra: pip install 'telescope[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    name = read_json(local_sweep / "sweep.json")["runs"][1]["name"]
    sink = TensorBoardSink(tmp_path / "tb")
    target = sink.export_run(local_sweep / name)
    sink.export_run(local_sweep / name)  # idempotent: no duplicated events
    frame = pd.read_parquet(local_sweep / name / "metrics.parquet")
    (unit_dir,) = [p for p in target.iterdir() if p.name != "summary"]
    assert unit_dir.name == "setting=sgd,lr=0.05,seed=1"
    acc = EventAccumulator(str(unit_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags == {f"{s}/{n}" for s, n in frame[["split", "name"]].drop_duplicates().itertuples(index=False)}
    rows = frame[(frame["split"] == "test") & (frame["name"] == "telescope/abs_err")].sort_values("step")
    events = acc.Scalars("test/telescope/abs_err")
    assert [e.step for e in events] == rows["step"].tolist()
    assert [e.value for e in events] == pytest.approx(rows["value"].tolist(), rel=1e-6)  # stored as float32
    summary = EventAccumulator(str(target / "summary"))
    summary.Reload()
    assert summary.Scalars("summary/sgd/lr=0.05/final_test_error")[0].value == pytest.approx(
        read_json(local_sweep / name / "summary.json")["sgd/lr=0.05/final_test_error"])


def test_mlflow_export_reads_back(local_sweep, tmp_path):
    pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install 'telescope[mlflow]'")
    from mlflow.tracking import MlflowClient

    name = read_json(local_sweep / "sweep.json")["runs"][0]["name"]
    sink = MLflowSink(tmp_path / "mlruns", experiment="sweep-test")
    run_id = sink.export_run(local_sweep / name, tags={"width": 16})
    assert sink.export_run(local_sweep / name) == run_id  # idempotent
    client = MlflowClient(tracking_uri=sink.tracking_uri)
    parent = client.get_run(run_id)
    assert parent.data.params["width"] == "16" and parent.data.tags["telescope.tag.width"] == "16"
    (child,) = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    history = client.get_metric_history(child.info.run_id, "test/telescope/abs_err")
    frame = pd.read_parquet(local_sweep / name / "metrics.parquet")
    rows = frame[(frame["split"] == "test") & (frame["name"] == "telescope/abs_err")].sort_values("step")
    assert sorted((m.step, m.value) for m in history) == list(zip(rows["step"], rows["value"]))


def test_missing_extra_names_the_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in ("tensorboard", "mlflow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr("importlib.import_module", lambda name: fake_import(name))
    with pytest.raises(MissingExtraError, match=r"pip install 'telescope\[tensorboard\]'"):
        TensorBoardSink("tb")
    with pytest.raises(MissingExtraError, match=r"pip install 'telescope\[mlflow\]'"):
        MLflowSink("mlruns")
