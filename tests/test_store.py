import json

import pandas as pd
import pytest

from telescope.errors import ConfigError
from telescope.store import MemorySink, RunDir, config_hash, read_metrics


def test_config_hash_is_stable_and_order_free():
    assert config_hash("x", {"a": 1, "b": [1, 2]}) == config_hash("x", {"b": [1, 2], "a": 1})
    assert config_hash("x", {"a": 1}) != config_hash("x", {"a": 2})
    assert config_hash("x", {"a": 1}) != config_hash("y", {"a": 1})


def test_units_resume_and_failed_unit_keeps_rows(tmp_path):
    run = RunDir.open(tmp_path, "exp", {"a": 1})
    assert (run.path / "config.json").exists() and not run.done
    with run.unit("u1", lr=0.1) as u:
        u.log(0, "test", "mse", 1.0)
        u.log_dict(1, "test", {"mse": 0.5, "error": 0.25})
    with pytest.raises(RuntimeError):
        with run.unit("u2", lr=0.2) as u:
            u.log(0, "test", "mse", 2.0)
            raise RuntimeError("boom")
    assert run.unit_done("u1") and not run.unit_done("u2")
    partial = read_metrics(run.path)  # metrics.parquet written after the failure
    assert set(partial["lr"]) == {0.1, 0.2} and len(partial) == 4
    # a rerun of the same config reopens the same directory and finds u1 finished
    again = RunDir.open(tmp_path, "exp", {"a": 1})
    assert again.path == run.path and again.unit_done("u1")
    with again.unit("u2", lr=0.2) as u:
        u.log(0, "test", "mse", 2.0)
    again.finish({"ok": True})
    frame = pd.read_parquet(run.path / "metrics.parquet")
    assert list(frame.columns[:4]) == ["step", "split", "name", "value"]
    assert str(frame["step"].dtype) == "int64" and str(frame["value"].dtype) == "float64"
    assert len(frame) == 4 and run.done
    assert json.loads((run.path / "summary.json").read_text()) == {"ok": True}
    assert not list(run.path.glob("**/*.tmp"))


def test_a_directory_with_another_config_is_not_overwritten(tmp_path):
    RunDir.open(tmp_path, "exp", {"a": 1}, name="same")
    with pytest.raises(ConfigError, match="different config"):
        RunDir.open(tmp_path, "exp", {"a": 2}, name="same")


def test_memory_sink():
    sink = MemorySink()
    with sink.unit("k", seed=3) as u:
        u.log(2, "train", "loss", 0.5)
    assert sink.unit_done("k")
    frame = sink.metrics()
    assert frame.iloc[0].to_dict() == {"step": 2, "split": "train", "name": "loss", "value": 0.5, "seed": 3}
