"""The run store under faults (issue 17): one source of truth, untrusted DONE, damaged files, modes."""

import json
import logging
import os
import stat

import pandas as pd
import pytest

from telescope.errors import DataError, DivergenceError
from telescope.store import MemorySink, RunDir, read_metrics, run_status


def _unit(run, key, value, **tags):
    with run.unit(key, **tags) as u:
        u.log(0, "test", "mse", value)
        u.log(1, "test", "mse", value / 2)


def test_resumed_run_reads_its_newer_parts_not_the_stale_metrics_file(tmp_path):
    """Interrupt (metrics.parquet written with the partial unit), resume, kill before finish, read."""
    run = RunDir.open(tmp_path, "exp", {"a": 1})
    _unit(run, "w1", 1.0, width=1)
    with pytest.raises(KeyboardInterrupt):
        with run.unit("w2", width=2) as u:
            u.log(0, "test", "mse", 9.0)
            raise KeyboardInterrupt
    assert set(read_metrics(run.path)["width"]) == {1, 2}  # the interrupted unit's rows so far
    again = RunDir.open(tmp_path, "exp", {"a": 1})
    for width in (2, 3, 4):
        _unit(again, f"w{width}", float(width), width=width)
    # killed here: no finish, metrics.parquet is the one from the interruption
    frame = read_metrics(run.path)
    assert sorted(set(frame["width"])) == [1, 2, 3, 4] and len(frame) == 8
    assert 9.0 not in set(frame["value"])  # the interrupted attempt's rows are gone with it
    assert run_status(run.path) == "incomplete"


def test_a_metrics_file_without_record_older_than_a_part_is_stale(tmp_path):
    run = RunDir.open(tmp_path, "exp", {"a": 1})
    _unit(run, "u1", 1.0, width=1)
    pd.read_parquet(run.path / "parts" / "u1.parquet").to_parquet(run.path / "metrics.parquet", index=False)
    os.utime(run.path / "metrics.parquet", ns=(10**9, 10**9))  # written long before the next part
    _unit(run, "u2", 2.0, width=2)
    assert sorted(set(read_metrics(run.path)["width"])) == [1, 2]


def _finished(tmp_path):
    run = RunDir.open(tmp_path, "exp", {"a": 1})
    _unit(run, "u1", 1.0, seed=0)
    _unit(run, "u2", 2.0, seed=1)
    run.finish({"x": 1.5})
    assert run.done and run_status(run.path) == "done"
    return run, read_metrics(run.path)


def test_done_run_with_corrupt_metrics_is_read_from_parts_and_rebuilt(tmp_path, caplog):
    run, before = _finished(tmp_path)
    (run.path / "metrics.parquet").write_bytes(b"not parquet at all")
    assert not run.done and run_status(run.path) == "incomplete"  # DONE is not trusted blindly
    pd.testing.assert_frame_equal(read_metrics(run.path), before)  # readers fall back to parts/
    with caplog.at_level(logging.WARNING, logger="telescope.store.rundir"):
        assert run.settle()  # repaired without redoing anything
    assert "rebuilt from parts" in caplog.text
    assert run.done and run_status(run.path) == "done"
    pd.testing.assert_frame_equal(pd.read_parquet(run.path / "metrics.parquet"), before)


@pytest.mark.parametrize("damage", [b"", b"PAR1garbage"])
def test_damaged_part_is_set_aside_and_its_unit_redone(tmp_path, caplog, damage):
    run, before = _finished(tmp_path)
    (run.path / "parts" / "u2.parquet").write_bytes(damage)
    assert run_status(run.path) != "done"
    with pytest.raises(DataError, match="u2.parquet is unreadable"):
        read_metrics(run.path)
    again = RunDir.open(tmp_path, "exp", {"a": 1})
    assert not again.settle() and not (run.path / "DONE").exists()  # DONE withdrawn: redo what is missing
    with caplog.at_level(logging.WARNING, logger="telescope.store.rundir"):
        assert again.unit_done("u1") and not again.unit_done("u2")
    assert "set aside" in caplog.text
    (aside,) = (run.path / "parts").glob("u2.parquet.corrupt-*")
    assert aside.read_bytes() == damage
    _unit(again, "u2", 2.0, seed=1)
    again.finish({"x": 1.5})
    assert again.done
    pd.testing.assert_frame_equal(read_metrics(run.path), before)


def test_done_is_not_trusted_when_the_summary_does_not_read_back(tmp_path):
    run, _ = _finished(tmp_path)
    (run.path / "summary.json").write_text('{"x": 1.')
    assert run_status(run.path) == "incomplete"
    assert not run.settle() and not (run.path / "DONE").exists()
    assert run.unit_done("u1") and run.unit_done("u2")  # the parts stay: the rerun only re-summarises


def test_done_lists_the_files_it_vouches_for(tmp_path):
    run, _ = _finished(tmp_path)
    files = json.loads((run.path / "DONE").read_text())["files"]
    assert set(files) == {"metrics.parquet", "summary.json", "parts/u1.parquet", "parts/u2.parquet"}
    assert all(files[rel] == (run.path / rel).stat().st_size for rel in files)


def test_every_file_is_fsynced_before_its_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        with_name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else str(fd)
        events.append(("fsync", os.path.basename(with_name)))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(str(src))))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _finished(tmp_path)
    renamed = [name for kind, name in events if kind == "replace"]
    assert any(".metrics.parquet." in n for n in renamed) and any(".u1.parquet." in n for n in renamed)
    for name in renamed:
        assert ("fsync", name) in events[:events.index(("replace", name))], name


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run, _ = _finished(tmp_path)
    finally:
        os.umask(old)
    files = [p for p in run.path.rglob("*") if p.is_file()]
    assert {"config.json", "metrics.parquet", "summary.json", "DONE", "u1.parquet"} <= {p.name for p in files}
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o644}, modes


def test_a_divergence_names_its_unit(tmp_path):
    for sink in (MemorySink(), RunDir.open(tmp_path, "exp", {"a": 1})):
        with pytest.raises(DivergenceError, match=r"^unit setting=sgd, lr=0.05, seed=3 diverged: loss is nan"):
            with sink.unit("sgd/lr=0.05/seed=3", setting="sgd", lr=0.05, seed=3):
                raise DivergenceError("loss is nan at step 4")


def test_a_run_finished_before_done_listed_its_files_is_still_done(tmp_path):
    """Runs finished by earlier versions (DONE a timestamp, no parts record) are not redone."""
    run = RunDir.open(tmp_path, "exp", {"a": 1})
    _unit(run, "u1", 1.0, seed=0)
    pd.read_parquet(run.path / "parts" / "u1.parquet").to_parquet(run.path / "metrics.parquet", index=False)
    (run.path / "summary.json").write_text('{"x": 1}')
    (run.path / "DONE").write_text("2026-12-01T10:00:00\n")
    assert run.done and run.settle() and run_status(run.path) == "done"
    assert (run.path / "DONE").read_text() == "2026-12-01T10:00:00\n"  # trusted as it is: not rewritten


def test_line_progress_prints_at_most_one_line_per_interval(monkeypatch):
    from telescope.store import LineProgress

    now = [0.0]
    monkeypatch.setattr("telescope.store.rundir.time.monotonic", lambda: now[0])
    lines = []
    bar = LineProgress(100, "study", lines.append, every=30)
    for _ in range(100):
        now[0] += 1.0
        bar.update()
    assert lines == ["study: 30/100 (30 %), 30 s", "study: 60/100 (60 %), 60 s", "study: 90/100 (90 %), 90 s"]


def test_finish_refuses_done_while_a_set_aside_part_is_not_redone(tmp_path):
    run = RunDir.open(tmp_path, "exp", {"a": 1})
    _unit(run, "u1", 1.0, seed=0)
    _unit(run, "u2", 2.0, seed=1)
    (run.path / "parts" / "u2.parquet").write_bytes(b"")
    assert set(run.metrics()["seed"]) == {0}  # what a study would summarise: u2 is set aside here
    with pytest.raises(DataError, match="u2.parquet .* set aside; run the same command again"):
        run.finish({"x": 1.0})
    assert not (run.path / "DONE").exists()
    assert not RunDir.open(tmp_path, "exp", {"a": 1}).unit_done("u2")  # the rerun redoes u2
