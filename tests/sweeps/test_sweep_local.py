"""The local backend end to end: run, skip, rerun one, failures recorded, CLI exit codes."""

import importlib.util
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from telescope.errors import ConfigError
from telescope.store import read_json
from telescope.sweeps import SweepSpec, parse_grid, run_status, run_sweep


def test_parse_grid_and_spec_validation(tiny_spec):
    assert parse_grid(["width=16,32", "lr=0.1"]) == {"width": ["16", "32"], "lr": ["0.1"]}
    assert parse_grid(["settings=sgd,adamw;sgd"]) == {"settings": ["sgd,adamw", "sgd"]}
    for bad in (["width"], ["width="], ["width=1,1"], ["seed=1,2"], ["width=1", "width=2"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)
    with pytest.raises(ConfigError, match="unknown key 'widht'"):
        tiny_spec(grid=("widht=1,2",)).tasks()
    with pytest.raises(ConfigError, match="both in --grid and --set"):
        SweepSpec("approximation", "tiny", {"width": ["1"]}, sets={"width": "2"})
    with pytest.raises(ConfigError, match="same config"):
        tiny_spec(grid=("width=16,16.0",)).tasks()
    spec = tiny_spec(grid=("width=16,32", "depth=2,3"), seeds=3)
    tasks = spec.tasks()
    assert len(tasks) == 12 and len({t.name for t in tasks}) == 12
    assert [t.seed for t in tasks[:3]] == [0, 1, 2]
    assert spec.digest == tiny_spec(grid=("width=16,32", "depth=2,3"), seeds=3).digest != tiny_spec().digest


def test_local_sweep_layout_skip_and_rerun_one(local_sweep, tiny_spec):
    manifest = read_json(local_sweep / "sweep.json")
    names = [r["name"] for r in manifest["runs"]]
    assert len(names) == 4 and manifest["status"]["counts"] == {"done": 4}
    for r in manifest["runs"]:
        run = local_sweep / r["name"]
        config = read_json(run / "config.json")
        assert config["config"]["width"] == int(r["point"]["width"]) and config["config"]["seed"] == r["seed"]
        assert config["config"]["settings"] == ["sgd"] and config["meta"]["sweep"] == local_sweep.name
        assert (run / "DONE").exists() and not (run / "FAILED").exists()
    # different seeds and widths give different results
    finals = {n: read_json(local_sweep / n / "summary.json")["sgd/lr=0.05/telescope_abs_err"] for n in names}
    assert len(set(finals.values())) == 4

    before = {n: pd.read_parquet(local_sweep / n / "metrics.parquet") for n in names}
    again = run_sweep(tiny_spec(), local_sweep.parent, workers=2)
    assert again.path == local_sweep and sorted(again.skipped) == sorted(names) and not again.ran

    victim = names[2]
    (local_sweep / victim / "DONE").unlink()
    assert run_status(local_sweep / victim) == "incomplete"
    events = []
    third = run_sweep(tiny_spec(), local_sweep.parent, workers=2, on_event=lambda k, i: events.append((k, i["name"])))
    assert third.ran == [victim] and len(third.skipped) == 3 and third.ok
    assert [e for e in events if e[0] == "start"] == [("start", victim)]
    assert (local_sweep / victim / "DONE").exists()
    # the rerun reproduces the run exactly (same seeds, one thread per worker)
    pd.testing.assert_frame_equal(pd.read_parquet(local_sweep / victim / "metrics.parquet"), before[victim])


def telescope(*args):
    return subprocess.run([sys.executable, "-m", "telescope", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)


def test_failing_grid_point_is_recorded_and_retried_on_request(tmp_path):
    args = ["sweep", "approximation", "--preset", "tiny", "--grid", "sgd_lrs=100000,0.05", "--set", "settings=sgd",
            "--seeds", "1", "--workers", "1", "--out", str(tmp_path), "--name", "s"]
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    proc = telescope(*args, *(["--tensorboard"] if tensorboard else []))
    assert proc.returncode == 1, proc.stderr
    assert "1 ran, 0 skipped (finished earlier), 1 failed" in proc.stdout and "diverged" in proc.stdout
    assert proc.stdout.index("] FAILED") < proc.stdout.index("] done")  # the failure did not stop the sweep
    sweep = tmp_path / "s"
    status = read_json(sweep / "sweep.json")["status"]
    assert status["counts"] == {"done": 1, "failed": 1}
    failed = next(sweep / n for n, s in status["runs"].items() if s == "failed")
    record = json.loads((failed / "FAILED").read_text())
    assert record["type"] == "DivergenceError" and "Traceback" in record["traceback"]
    assert record["config"]["config"]["sgd_lrs"] == [100000.0]
    assert not (failed / "DONE").exists()
    if tensorboard:  # the finished run was exported, the failed one not
        done = next(n for n, s in status["runs"].items() if s == "done")
        assert sorted(p.name for p in (sweep / "tensorboard").iterdir()) == [done]

    # a rerun does not redo the failed run (still exits 1); --retry-failed does, and only it
    proc = telescope(*args)
    assert proc.returncode == 1 and "0 ran, 1 skipped (finished earlier), 1 failed" in proc.stdout
    proc = telescope(*args, "--retry-failed")
    assert proc.returncode == 1 and "0 ran, 1 skipped (finished earlier), 1 failed" in proc.stdout
    assert json.loads((failed / "FAILED").read_text())["type"] == "DivergenceError"


def test_bad_sweep_is_one_line_error(tmp_path):
    proc = telescope("sweep", "approximation", "--grid", "widht=1,2", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown key 'widht'" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing written before the spec is valid
    if importlib.util.find_spec("mlflow") is None:  # a missing extra names its install, before any run
        proc = telescope("sweep", "approximation", "--mlflow", "--grid", "width=16", "--out", str(tmp_path))
        assert proc.returncode == 2 and "pip install 'telescope[mlflow]'" in proc.stderr
        assert not any(tmp_path.iterdir())
