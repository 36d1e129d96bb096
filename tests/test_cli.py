"""The command line end to end on the tiny preset, and its one-line errors."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def telescope(*args, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "telescope", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=600)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_list_names_every_experiment():
    proc = telescope("list")
    assert proc.returncode == 0
    assert any(line.startswith("approximation") for line in proc.stdout.splitlines())
    (dd,) = [line for line in proc.stdout.splitlines() if line.startswith("double-descent")]
    assert "[presets: tiny, quick, quick-all, paper, fig3, fig9, fig10, quick-1d, full]" in dd


def test_tiny_run_end_to_end_then_skip_and_report(tmp_path):
    proc = telescope("run", "approximation", "--preset", "tiny", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = list(tmp_path.iterdir())
    for name in ("config.json", "metrics.parquet", "summary.json", "DONE"):
        assert (run_dir / name).exists(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["experiment"] == "approximation" and config["meta"]["preset"] == "tiny"
    frame = pd.read_parquet(run_dir / "metrics.parquet")
    assert {"telescope/abs_err", "linearized/abs_err", "error", "telescope/error",
            "linearized/error"} <= set(frame[frame["split"] == "test"]["name"])
    assert (run_dir / "DONE").stat().st_mtime >= (run_dir / "summary.json").stat().st_mtime
    # stdout is a pipe here: progress comes as plain lines, one per finished unit; then the headline
    lines = proc.stdout.splitlines()
    assert [l for l in lines if l.startswith("finished unit")] == [
        l for l in lines if re.match(r"finished unit setting=(sgd, lr=0.05|adamw, lr=0.001), seed=0 \(\d", l)]
    assert sum(l.startswith("finished unit") for l in lines) == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    head = lines[lines.index(f"results ({run_dir / 'summary.json'}):") + 1:]
    key = "adamw/lr=0.001/ratio_linearized_to_telescope"      # the study's HEADLINE: fact 1's ratio first
    assert head[0] == f"  {key} = {summary[key]:.6g}"
    assert len(head) == 10 and head[8] == "  ... 5 more in summary.json"
    # a corrupt metrics.parquet: the report reads parts/, a rerun rebuilds the file without training
    good = pd.read_parquet(run_dir / "metrics.parquet")
    (run_dir / "metrics.parquet").write_bytes(b"\0" * 100)
    again = telescope("run", "approximation", "--preset", "tiny", "--out", str(tmp_path))
    assert again.returncode == 0 and "already done" in again.stdout and "finished unit" not in again.stdout
    assert "results (" in again.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "metrics.parquet"), good)
    (run_dir / "metrics.parquet").write_bytes(b"")
    rep = telescope("report", str(run_dir))
    assert rep.returncode == 0, rep.stderr
    assert (run_dir / "report.html").exists() and (run_dir / "figures" / "approximation_error.png").exists()


def test_unknown_experiment_lists_choices():
    assert_one_line_error(telescope("run", "nope", "--preset", "tiny"), "unknown experiment 'nope'", "approximation")


def test_unknown_set_key_lists_valid_keys(tmp_path):
    proc = telescope("run", "approximation", "--preset", "tiny", "--set", "widht=3", "--out", str(tmp_path))
    assert_one_line_error(proc, "unknown key 'widht'", "width")
    assert_one_line_error(telescope("run", "approximation", "--preset", "tiny", "--set", "width=wide",
                                    "--out", str(tmp_path)), "expects int")
    assert_one_line_error(telescope("run", "approximation", "--preset", "huge"), "unknown preset")


def test_missing_data_is_one_line(tmp_path):
    proc = telescope("run", "approximation", "--preset", "tiny", "--set", "dataset=mnist", "--out",
                     str(tmp_path / "runs"), "--data-dir", str(tmp_path / "empty"))
    assert_one_line_error(proc, "MNIST files not found", "telescope data download mnist")


def test_divergence_stops_with_message_and_keeps_metrics(tmp_path):
    proc = telescope("run", "approximation", "--preset", "tiny", "--set", "sgd_lrs=100000",
                     "--set", "settings=sgd", "--out", str(tmp_path))
    assert_one_line_error(proc, "unit setting=sgd, lr=100000, seed=0 diverged")
    (run_dir,) = list(tmp_path.iterdir())
    assert not (run_dir / "DONE").exists()
    frame = pd.read_parquet(run_dir / "metrics.parquet")
    assert len(frame) > 0 and (frame["step"] == 0).any()


def test_interrupted_run_resumes_without_redoing_finished_units(tmp_path, monkeypatch):
    from telescope.cli.main import execute
    from telescope.experiments import approximation

    calls = []
    original = approximation.run_unit

    def flaky(cfg, data, setting, lr, seed, sink, device, progress=None):
        calls.append(setting)
        if setting == "adamw" and calls.count("adamw") == 1:
            raise KeyboardInterrupt  # the user presses Ctrl-C during the second unit
        return original(cfg, data, setting, lr, seed, sink, device, progress)

    monkeypatch.setattr(approximation, "run_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        execute("approximation", "tiny", None, {}, tmp_path, "cpu", None, quiet=True)
    (run_dir,) = list(tmp_path.iterdir())
    (finished,) = list((run_dir / "parts").glob("*.parquet"))
    stamp = finished.stat().st_mtime_ns
    assert not (run_dir / "DONE").exists()
    execute("approximation", "tiny", None, {}, tmp_path, "cpu", None, quiet=True)
    assert calls == ["sgd", "adamw", "adamw"]  # sgd was not trained again
    assert finished.stat().st_mtime_ns == stamp and (run_dir / "DONE").exists()


def test_report_of_a_resumed_then_killed_run_shows_every_finished_unit(tmp_path, monkeypatch):
    """Ctrl-C in the second unit (metrics.parquet written), rerun killed before it finishes, report."""
    from telescope.cli.main import execute
    from telescope.experiments import approximation
    from telescope.report import build_report
    from telescope.store import RunDir, read_metrics

    original, calls = approximation.run_unit, []

    def flaky(cfg, data, setting, lr, seed, sink, device, progress=None):
        calls.append(setting)
        if setting == "adamw" and calls.count("adamw") == 1:
            raise KeyboardInterrupt
        return original(cfg, data, setting, lr, seed, sink, device, progress)

    class Killed(BaseException):
        """SIGKILL: nothing after the last finished unit is written."""

    def killed(self, summary):
        raise Killed

    monkeypatch.setattr(approximation, "run_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        execute("approximation", "tiny", None, {}, tmp_path, "cpu", None, quiet=True)
    (run_dir,) = list(tmp_path.iterdir())
    assert set(pd.read_parquet(run_dir / "metrics.parquet")["setting"]) == {"sgd"}  # written at the Ctrl-C
    monkeypatch.setattr(RunDir, "finish", killed)
    with pytest.raises(Killed):
        execute("approximation", "tiny", None, {}, tmp_path, "cpu", None, quiet=True)
    frame = read_metrics(run_dir)
    assert set(frame["setting"]) == {"sgd", "adamw"} and frame["step"].max() == 60  # adamw finished now
    parts = pd.concat([pd.read_parquet(p) for p in sorted((run_dir / "parts").glob("*.parquet"))],
                      ignore_index=True)
    pd.testing.assert_frame_equal(frame, parts)
    assert build_report(run_dir).exists()


def test_demo_fallback_without_mnist_fits_the_digits_data():
    from telescope.cli.main import DEMO_WITHOUT_MNIST
    from telescope.data import binary_task
    from telescope.experiments import approximation
    from telescope.experiments.base import resolve_config

    cfg = resolve_config("approximation", approximation.Config, "demo", overrides=DEMO_WITHOUT_MNIST)
    split = binary_task(cfg.dataset, tuple(cfg.classes), n_train=cfg.n_train, n_test=cfg.n_test)
    assert split.x_train.shape == (250, 64) and split.x_test.shape == (100, 64)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_and_make_test_set_their_threads_explicitly():
    root = Path(__file__).resolve().parents[1]
    dry = subprocess.run(["make", "-n", "-C", str(root), "demo", "test", "STAMP=Makefile"], capture_output=True,
                         text=True, check=True).stdout
    demo = next(line for line in dry.splitlines() if "telescope demo" in line)
    test = next(line for line in dry.splitlines() if "pytest" in line)
    assert re.search(r"OMP_NUM_THREADS=[1-9]\d* ", demo) and "OMP_NUM_THREADS=1 " in test, dry
