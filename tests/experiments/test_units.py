"""A study's units K at a time (NOTE [units in parallel]): the same metrics as one at a time,
resume from finished parts, a failing unit leaves the others written and names itself."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from telescope.errors import ConfigError, DivergenceError
from telescope.experiments.base import RunContext
from telescope.experiments.units import CUDA_WORKERS, Unit, _portable, _RemoteTraceback, run_units, unit_workers
from telescope.store import MemorySink, read_metrics
from telescope.sweeps.runner import run_one


def sorted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    keys = sorted(c for c in frame.columns if c != "value")
    return frame[keys + ["value"]].sort_values(keys, kind="stable").reset_index(drop=True)


def run(tmp_path, name, workers, sets, **kwargs):
    lines: list[str] = []
    outcome = run_one(name, "tiny", None, sets, tmp_path / f"w{workers}", workers=workers, emit=lines.append,
                      **kwargs)
    return outcome.path, lines


@pytest.mark.parametrize("name,sets,units", [("grokking-mnist", {"seeds": "2"}, 2),
                                             ("approximation", {}, 2)])
def test_two_workers_give_the_metrics_and_summary_of_one(tmp_path, name, sets, units):
    one, _ = run(tmp_path, name, 1, sets)
    two, lines = run(tmp_path, name, 2, sets)
    assert one.name == two.name                        # workers is not part of the run's identity
    assert len(list((two / "parts").glob("*.parquet"))) == units
    assert sum(line.startswith("finished unit") for line in lines) == units
    a, b = sorted_frame(read_metrics(one)), sorted_frame(read_metrics(two))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (one / "summary.json").read_text() == (two / "summary.json").read_text()


def test_a_rerun_trains_only_the_units_without_a_part(tmp_path):
    path, _ = run(tmp_path, "grokking-mnist", 2, {"seeds": "3"})
    full = sorted_frame(read_metrics(path))
    parts = sorted((path / "parts").glob("*.parquet"))
    kept, *redo = parts
    stamp = os.stat(kept).st_mtime_ns
    for p in [*redo, path / "DONE"]:
        p.unlink()
    again, lines = run(tmp_path, "grokking-mnist", 2, {"seeds": "3"})
    assert again == path
    finished = [line for line in lines if line.startswith("finished unit")]
    assert kept.name.endswith("seed=0.parquet")
    assert len(finished) == 2 and not any("seed=0 " in line for line in finished), finished
    assert os.stat(kept).st_mtime_ns == stamp          # the finished unit was not trained again
    assert (path / "DONE").exists()
    pd.testing.assert_frame_equal(sorted_frame(read_metrics(path)), full, check_exact=True)


def test_a_diverging_unit_names_itself_and_the_finished_unit_stays(tmp_path):
    # α = 1e7 scales the output by α³: the float32 loss is infinite at step 1; α = 6 trains normally
    with pytest.raises(DivergenceError, match=r"unit alpha=1e\+07, output=linear.*diverged"):
        run(tmp_path, "grokking-mnist", 2, {"alphas": "6,1e7"})
    (run_dir,) = (tmp_path / "w2").iterdir()
    assert [p.name for p in (run_dir / "parts").glob("*.parquet")] == ["alpha=6_output=linear_method=exact_seed=0.parquet"]
    assert (run_dir / "FAILED").exists() and not (run_dir / "DONE").exists()
    rows = pd.read_parquet(run_dir / "metrics.parquet")
    assert set(rows["alpha"]) == {6.0, 1e7}            # the diverged unit's rows so far are kept, not as a part
    assert rows.loc[rows["alpha"] == 1e7, "step"].max() == 0


class RecordingSink(MemorySink):
    def __init__(self):
        super().__init__()
        self.started: list[str] = []

    def unit(self, key, **tags):
        self.started.append(key)
        return super().unit(key, **tags)


class Bar:
    def __init__(self):
        self.n = 0

    def update(self, n=1):
        self.n += n


# `dict` is a module-level function a worker can import: dict([], sink=…, progress=…) returns,
# dict("x", sink=…, progress=…) raises ValueError (a sequence element of length 1)
OK, BAD = ([],), ("x",)


def test_after_a_failure_nothing_new_starts_and_the_first_error_carries_the_worker_traceback():
    sink = RecordingSink()
    units = [Unit("bad1", {"k": 1}, BAD), Unit("bad2", {"k": 2}, BAD), Unit("ok3", {"k": 3}, OK)]
    with pytest.raises(ValueError, match="dictionary update sequence") as info:
        run_units(sink, units, dict, workers=2, progress=Bar(), steps_per_unit=5)
    assert sorted(sink.started) == ["bad1", "bad2"]    # both ran at once; ok3 never started
    assert not sink.unit_done("ok3") and sink.partial is not None
    assert isinstance(info.value.__cause__, _RemoteTraceback)
    assert "in the unit's worker process" in str(info.value.__cause__)


def test_workers_skip_done_units_and_advance_the_bar_by_every_units_steps():
    sink, bar = RecordingSink(), Bar()
    with sink.unit("u0", k=0):
        pass
    units = [Unit(f"u{i}", {"k": i}, OK, steps=10 + i) for i in range(4)]
    run_units(sink, units, dict, workers=3, progress=bar)
    assert sorted(sink.started) == ["u0", "u1", "u2", "u3"] and sink.started.count("u0") == 1
    assert all(sink.unit_done(f"u{i}") for i in range(4))
    assert bar.n == sum(10 + i for i in range(4))


def test_unpicklable_errors_come_back_as_runtime_errors_with_their_text():
    class Local(Exception):    # a local class cannot be pickled
        pass

    try:
        raise Local("the reason")
    except Local as exc:
        copy, text = _portable(exc)
    assert type(copy) is RuntimeError and "Local: the reason" in str(copy)
    assert "raise Local" in text                        # the worker's traceback travels as text
    kept, _ = _portable(DivergenceError("loss is nan"))
    assert type(kept) is DivergenceError and str(kept) == "loss is nan"


def test_worker_counts_are_checked_and_default_by_device():
    assert unit_workers(RunContext()) == 1
    assert unit_workers(RunContext(device="cuda")) == CUDA_WORKERS
    assert unit_workers(RunContext(device="cuda", workers=2)) == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="workers"):
            RunContext(workers=bad)
        with pytest.raises(ConfigError, match="run_units"):
            run_units(MemorySink(), [], dict, workers=bad)


def test_a_sweep_worker_never_starts_a_pool(monkeypatch, tmp_path):
    from telescope.sweeps import runner, worker

    seen = {}

    def fake_run_one(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    result = worker.execute_task({"experiment": "grokking-mnist", "preset": "tiny", "seed": 0, "sets": {},
                                  "sweep_dir": str(tmp_path), "name": "x", "device": "cuda", "attempt": 1})
    assert result["status"] == "failed" and seen["workers"] == 1


def test_sequential_units_match_the_hand_written_loop():
    sink, bar = MemorySink(), Bar()
    log = []

    def work(a, b=0, *, sink, progress):
        log.append((a, b))
        sink.log(0, "train", "loss", a + b)
        progress.update(3)

    run_units(sink, [Unit("x", {"t": "x"}, (1,), {"b": 2}), Unit("y", {"t": "y"}, (5,))], work, progress=bar,
              steps_per_unit=3)
    assert log == [(1, 2), (5, 0)] and bar.n == 6
    frame = sink.metrics()
    assert list(frame["t"]) == ["x", "y"] and np.array_equal(frame["value"].to_numpy(), [3.0, 5.0])


def test_a_work_function_that_cannot_reach_a_worker_is_a_config_error():
    sink = RecordingSink()
    with pytest.raises(ConfigError, match="module-level"):
        run_units(sink, [Unit("a", {}, OK), Unit("b", {}, OK)], lambda *a, **k: None, workers=2)
    assert sink.started == []                           # refused before any unit was opened


def _children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_keeps_the_finished_parts_and_stops_the_workers(tmp_path):
    """SIGINT to the driver while two workers train: KeyboardInterrupt, the finished part stays,
    no DONE, the workers end (a rerun resumes: test_a_rerun_trains_only_the_units_without_a_part)."""
    import signal
    import threading
    import time

    parts = tmp_path / "w2"

    def interrupt_after_first_part():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(parts.glob("*/parts/*.parquet")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_first_part, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "grokking-mnist", 2, {"seeds": "3", "steps": "800"})
    (run_dir,) = parts.iterdir()
    assert len(list((run_dir / "parts").glob("*.parquet"))) in (1, 2) and not (run_dir / "DONE").exists()
    servers = [pid for pid in _children(os.getpid())
               if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert servers                                       # the unit workers came from the forkserver
    deadline = time.monotonic() + 10
    while any(_children(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_children(pid) for pid in servers)   # every worker has ended
