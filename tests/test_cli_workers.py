"""``telescope run --workers K`` (NOTE [units in parallel]): checked at the door, described in the help."""

import inspect
import subprocess
import sys

import pytest
from click.testing import CliRunner

from telescope import experiments
from telescope.cli.main import PARALLEL_STUDIES, cli


@pytest.mark.parametrize("value", ["0", "-2"])
def test_fewer_than_one_worker_is_one_line_and_leaves_no_run(tmp_path, value):
    proc = subprocess.run([sys.executable, "-m", "telescope", "run", "grokking-mnist", "--preset", "tiny",
                           "--workers", value, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"--workers {value}" in err and "at least 1" in err, err
    assert not any(tmp_path.iterdir())


def test_help_names_the_studies_that_run_units_in_parallel():
    out = CliRunner().invoke(cli, ["run", "--help"], terminal_width=400).output
    assert "--workers K" in out
    for name in PARALLEL_STUDIES:
        assert name in out
    # the list is the studies whose run() goes through run_units, no more, no fewer
    using = {name for name in experiments.names()
             if "run_units(" in inspect.getsource(experiments.get(name).module.run)
             or name == "grokking-control"}      # grokking-control runs grokking-mnist's run()
    assert using == set(PARALLEL_STUDIES)
