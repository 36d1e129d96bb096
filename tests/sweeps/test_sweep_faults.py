"""A sweep under faults: its workers die with a killed driver, a second driver is refused, a bad manifest is one line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from telescope.errors import BusyError
from telescope.sweeps.lock import sweep_lock

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

# two runs of several minutes each: they are still training when the driver is killed
LONG = ["sweep", "approximation", "--preset", "tiny", "--grid", "width=16,32", "--set", "steps=400000",
        "--set", "settings=sgd", "--workers", "2", "--name", "long"]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_workers_die_with_a_killed_driver_and_a_second_driver_is_refused(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "telescope", *LONG, "--out", str(tmp_path)]
    log = tmp_path / "driver.log"
    with open(log, "wb") as fh:
        driver = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    sweep = tmp_path / "long"
    started: set[int] = set()
    try:
        assert _wait_for(lambda: len(list(sweep.glob("approximation-*/config.json"))) == 2, 120), \
            log.read_text()
        assert _wait_for(lambda: b"pid" in (sweep / "sweep.lock").read_bytes(), 10)

        # a second driver on the same sweep directory says who holds it, and runs nothing
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        err = second.stderr.strip()
        assert second.returncode == 2 and len(err.splitlines()) == 1, err
        assert f"is being run by pid {driver.pid} on host " in err
        with pytest.raises(BusyError, match=f"pid {driver.pid}"):
            with sweep_lock(sweep):
                pass

        started = _descendants(driver.pid)
        assert len(started) >= 3, started  # the forkserver (or a resource tracker) and two workers
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        t0 = time.monotonic()
        assert _wait_for(lambda: not any(_alive(p) for p in started), 10), \
            [(p, Path(f"/proc/{p}/cmdline").read_bytes()[:80]) for p in started if _alive(p)]
        assert time.monotonic() - t0 < 10
        with sweep_lock(sweep):  # the kernel dropped the dead driver's lock
            pass
    finally:
        for pid in [driver.pid, *started]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        driver.wait(timeout=10)


def test_an_unreadable_manifest_is_one_line(tmp_path, tiny_spec):
    from telescope.errors import DataError
    from telescope.sweeps import run_sweep

    spec = tiny_spec(grid=("width=16",), seeds=1)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text('{"spec": ')
    with pytest.raises(DataError, match=r"sweep.json is unreadable .*delete it and rerun"):
        run_sweep(spec, tmp_path, sweep_dir=tmp_path / "s", workers=1)
