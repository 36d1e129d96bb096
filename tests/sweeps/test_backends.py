"""Ray gives the local backend's results; a killed worker's run is retried; packed runs round-trip."""

import hashlib
import os
import signal

import pandas as pd
import pytest

from telescope.store import read_json
from telescope.sweeps import run_sweep
from telescope.sweeps.worker import execute_task, unpack_run


def _same_results(a, b, names):
    for name in names:
        assert read_json(a / name / "summary.json") == read_json(b / name / "summary.json"), name
        pd.testing.assert_frame_equal(pd.read_parquet(a / name / "metrics.parquet"),
                                      pd.read_parquet(b / name / "metrics.parquet"), check_exact=True)


def test_ray_backend_matches_local(local_sweep, tmp_path, tiny_spec):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'telescope[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        events = []
        result = run_sweep(tiny_spec(), tmp_path, backend="ray", on_event=lambda k, i: events.append(k))
    finally:
        ray.shutdown()
    assert result.ok and len(result.ran) == 4 and events.count("done") == 4, result
    assert result.path.name == local_sweep.name
    names = [r["name"] for r in read_json(local_sweep / "sweep.json")["runs"]]
    assert sorted(p.name for p in result.path.iterdir() if p.is_dir()) == sorted(names)
    _same_results(local_sweep, result.path, names)


def test_run_made_elsewhere_is_returned_and_written_by_the_driver(local_sweep, tmp_path):
    """The Ray path for nodes without the shared filesystem: run in a temp dir, send files back."""
    entry = read_json(local_sweep / "sweep.json")["runs"][0]
    config = read_json(local_sweep / entry["name"] / "config.json")
    task = {"experiment": "approximation", "preset": "tiny", "seed": entry["seed"],
            "sets": {**config["meta"]["overrides"]}, "sweep_dir": str(tmp_path / "absent"),
            "name": entry["name"], "meta": {"sweep": local_sweep.name, "point": entry["point"]}}
    result = execute_task(task, return_files=True)
    assert result["status"] == "done" and not (tmp_path / "absent").exists()
    assert {"config.json", "DONE", "summary.json", "metrics.parquet"} <= set(result["files"])
    unpack_run(result["files"], tmp_path / entry["name"])
    _same_results(local_sweep, tmp_path, [entry["name"]])


def _digest(run_dir):
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_killed_worker_is_retried_and_finished_runs_are_untouched(tmp_path, tiny_spec):
    """Reliability drill: SIGKILL a worker mid-run; every run still finishes, nothing finished changes."""
    # width is the first axis, so the two workers start (16, 20 steps) and (16, 150 steps):
    # when the short run is done, the long one is still running, and its worker is killed.
    spec = tiny_spec(grid=("width=16,32", "steps=20,150"), seeds=1, sets={})
    started, killed, snapshot = {}, [], {}

    def on_event(kind, info):
        if kind == "start":
            started[info["name"]] = info["pid"]
        elif kind == "done" and not killed:
            running = [n for n in started if n != info["name"] and not (out / n / "DONE").exists()]
            assert running, "no run in flight to kill"
            victim = running[0]
            for n in started:
                if (out / n / "DONE").exists():
                    snapshot[n] = _digest(out / n)
            os.kill(started[victim], signal.SIGKILL)
            killed.append(victim)

    out = spec.default_dir(tmp_path)
    result = run_sweep(spec, tmp_path, workers=2, on_event=on_event)
    assert killed and result.ok, result
    assert result.retried == {killed[0]: 2}
    assert read_json(out / "sweep.json")["status"]["counts"] == {"done": 4}
    assert snapshot and all(_digest(out / n) == d for n, d in snapshot.items())
    frame = pd.read_parquet(out / killed[0] / "metrics.parquet")
    assert frame["step"].max() == 150 and set(frame["setting"]) == {"sgd", "adamw"}


def test_ray_backend_without_ray_says_how_to_install(monkeypatch, tmp_path, tiny_spec):
    import sys

    from telescope.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'telescope\[ray\]'"):
        run_sweep(tiny_spec(), tmp_path, backend="ray")
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="--backend dask: choose one of local, ray"):
        run_sweep(tiny_spec(), tmp_path, backend="dask")
