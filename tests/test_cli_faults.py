"""The command line under bad input and faults (issue 17): one line, a non-zero exit, nothing left behind."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from telescope.experiments import approximation
from telescope.experiments.base import describe


def telescope(*args, read_only=None, env=None):
    """``python -m telescope ARGS``; with ``read_only``, that folder is read-only for it (see the fixture)."""
    cmd = [sys.executable, "-m", "telescope", *args]
    if read_only is not None and os.geteuid() == 0:  # root writes anywhere: a read-only bind mount
        cmd = [*RO_MOUNT, str(read_only), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


# a private mount namespace in which the folder "$0" is bind-mounted read-only, then the command
RO_MOUNT = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"']


def one_line(proc, *fragments, code=2):
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("key,value", [("width", "0"), ("batch_size", "0"), ("n_train", "0"),
                                       ("sgd_lrs", "-0.1"), ("width", "-3"), ("settings", "newton")])
def test_out_of_range_set_is_one_line_and_leaves_no_run(tmp_path, key, value):
    proc = telescope("run", "approximation", "--preset", "tiny", "--set", f"{key}={value}", "--out", str(tmp_path))
    one_line(proc, f"{key}=", "not accepted", f"--set {key}=")
    assert not any(tmp_path.iterdir())  # no run directory, let alone a FAILED one


def test_zero_workers_is_refused(tmp_path):
    proc = telescope("sweep", "approximation", "--grid", "width=16", "--workers", "0", "--out", str(tmp_path))
    one_line(proc, "--workers 0", "at least 1")
    assert not any(tmp_path.iterdir())


def test_run_help_lists_every_key_with_type_default_and_presets():
    proc = telescope("run", "approximation", "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.split("Config keys of approximation", 1)[1]
    keys = [row["key"] for row in describe(approximation.Config)]
    listed = re.findall(r"^  (\w+) ", text, flags=re.M)
    assert listed == keys
    width = " ".join(text.split("\n  width", 1)[1].split("\n  depth", 1)[0].split())
    assert width == "int (≥ 1); default 200; tiny: 32"
    assert "steps int (≥ 1); default 5000; tiny: 60; quick: 2000" in " ".join(text.split())
    # options before the study name do not hide it; an unknown study says so in the help
    assert "Config keys of lmc" in telescope("run", "--preset", "tiny", "lmc", "--help").stdout
    assert "unknown experiment 'nope'" in telescope("run", "nope", "--help").stdout


@pytest.fixture
def read_only(tmp_path):
    """``(folder, make_read_only, make_writable)``: mode 0555, or for root a read-only bind mount per command."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if shutil.which("unshare") is None or subprocess.run([*RO_MOUNT, str(ro), "true"]).returncode:
            pytest.skip("running as root without a way to mount a folder read-only")
        yield ro, lambda *paths: None, lambda *paths: None
        return
    yield ro, lambda *paths: [os.chmod(p, 0o555) for p in paths], lambda *paths: [os.chmod(p, 0o755) for p in paths]
    os.chmod(ro, 0o755)


def test_read_only_out_is_one_line_for_run_sweep_and_report(read_only):
    from telescope.store import RunDir

    ro, lock, unlock = read_only
    lock(ro)
    for args in (("run", "approximation", "--preset", "tiny", "--out", str(ro / "runs")),
                 ("sweep", "approximation", "--grid", "width=16", "--set", "settings=sgd", "--out", str(ro))):
        err = one_line(telescope(*args, read_only=ro), str(ro), "choose a folder you can write to")
        assert re.search("Permission denied|Read-only file system", err), err
    unlock(ro)
    run = RunDir.open(ro, "exp", {"a": 1})  # a finished run the user may read but not write
    with run.unit("u", seed=0) as u:
        u.log(0, "test", "mse", 1.0)
    run.finish({"x": 1.0})
    lock(run.path, ro)
    for args in (("report", str(run.path)), ("report", "--all", str(ro))):
        one_line(telescope(*args, read_only=ro), "choose a folder you can write to")
    unlock(run.path, ro)


def test_unexpected_error_is_one_line_naming_its_traceback_log(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import telescope.report
    from telescope.cli.main import cli
    from telescope.store import RunDir

    run = RunDir.open(tmp_path, "exp", {"a": 1})

    def broken(directory):
        return {}["no such key"]

    monkeypatch.setattr(telescope.report, "build_report", broken)
    result = CliRunner().invoke(cli, ["report", str(run.path)])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("telescope: error: unexpected KeyError: 'no such key' (the traceback is in ")
    log = Path(line.rsplit(" ", 1)[1].rstrip(")"))
    assert log.parent == run.path and "Traceback" in log.read_text() and "def broken" not in line


def test_report_all_reports_an_unreadable_run_in_one_line_and_goes_on(tmp_path):
    from telescope.store import RunDir

    for a in (1, 2):
        run = RunDir.open(tmp_path, "exp", {"a": a})
        with run.unit("u", seed=0) as u:
            u.log(0, "test", "mse", float(a))
        run.finish({"x": float(a)})
    bad = run.path
    (bad / "parts" / "u.parquet").write_bytes(b"")
    (bad / "metrics.parquet").write_bytes(b"garbage")
    proc = telescope("report", "--all", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "unreadable" in line]
    assert len(warnings) == 1 and bad.name in warnings[0] and "Traceback" not in proc.stderr
    page = (tmp_path / "report.html").read_text()
    assert "1 unreadable" in page and "unreadable — " + bad.name in page
    single = telescope("report", str(bad))
    one_line(single, "u.parquet is unreadable")


def test_sweep_help_lists_the_keys_too():
    proc = telescope("sweep", "lmc", "--help")
    assert proc.returncode == 0 and "Config keys of lmc" in proc.stdout and "spawn_steps" in proc.stdout


def test_no_import_circle_in_the_cli():
    import ast

    import telescope.cli

    folder = Path(telescope.cli.__file__).parent
    edges = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        edges[f"telescope.cli.{path.stem}"] = {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("telescope.cli")}
    assert "telescope.cli.main" not in set().union(*(v for k, v in edges.items() if k != "telescope.cli.__init__"))
    assert edges["telescope.cli.sweep"] <= {"telescope.cli.errors", "telescope.cli.study_help"}


def test_a_cpu_only_study_refuses_cuda_in_one_line_instead_of_running_on_the_cpu(tmp_path):
    proc = telescope("run", "lazy-rich", "--preset", "tiny", "--device", "cuda", "--out", str(tmp_path))
    one_line(proc, "--device cuda", "lazy-rich runs on the CPU only", "use --device cpu")
    assert not any(tmp_path.iterdir())
