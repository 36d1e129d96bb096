"""Run directories: identity by config hash, atomic writes, resumable units, the run's life cycle.

# NOTE [one source of truth]
# ``parts/`` are a run's data: one parquet file per finished unit, written once, atomically.
# ``metrics.parquet`` is a cache of their concatenation (after a failure, plus the failed
# unit's rows so far) and records in its schema metadata (key ``telescope.parts``) the name
# and size of every part it was built from. A reader uses it only while that record matches
# ``parts/`` and the file reads back; otherwise it concatenates the parts itself, and the
# writer (RunDir.finish, RunDir.settle) rebuilds the file. A file written before this record
# existed counts as fresh when it is not older than the newest part.
# ``DONE`` (JSON) lists the files it vouches for with their sizes. A DONE whose files do not
# read back is not trusted: RunDir.settle rebuilds metrics.parquet from intact parts, or
# withdraws DONE so that the run is redone, skipping its intact units. (The status check
# compares sizes, parses summary.json and reads parquet footers only; data pages are read
# by the readers, by unit_done and by settle's rebuild, which raise or set aside what
# fails.) A part that does not
# read back (empty, truncated, corrupt) is set aside as ``<name>.parquet.corrupt-<time>``
# with a warning, and its unit is redone.
# Every file is written to a temporary file created with mode 0666 (so it follows the
# user's umask), flushed, fsynced, renamed into place, and the directory fsynced.

# NOTE [run status files]
# A run directory ends in exactly one of two states:
#   DONE    written last by RunDir.finish; the run is complete and is never redone
#           (while the files it vouches for read back: NOTE [one source of truth]).
#   FAILED  JSON {"error", "type", "traceback", "config", "attempt", "time"} written when
#           the experiment raised. The finished units in parts/ are kept, so a retry
#           (``telescope sweep ... --retry-failed`` or ``telescope run``) resumes.
# A directory with neither was interrupted (killed, power cut): it is simply rerun and
# resumes from its finished units. A new attempt removes FAILED before it starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import numpy as np
import pandas as pd

from telescope.errors import ConfigError, DataError, DivergenceError

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("step", "split", "name", "value")
FAILED = "FAILED"
PARTS_KEY = b"telescope.parts"


# ----------------------------------------------------------------------------- files


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` via a temporary file and a rename."""
    _write_atomic(Path(path), json.dumps(obj, indent=2, sort_keys=True, default=_jsonable).encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, "rb") as fh:
        return json.load(fh)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform / filesystem opens directories
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[Any]:
    """Yield a binary file whose content replaces ``path`` on success (NOTE [one source of truth])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    # mode 0666 with O_EXCL: the kernel applies the user's umask (mkstemp would force 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _write_atomic(path: Path, data: bytes) -> None:
    with _atomic_file(Path(path)) as fh:
        fh.write(data)


def _write_parquet_atomic(path: Path, frame: pd.DataFrame, parts: Mapping[str, int] | None = None) -> None:
    """``frame`` as parquet; ``parts`` (name -> size) is recorded in the schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if parts is not None:
        meta = dict(table.schema.metadata or {})
        meta[PARTS_KEY] = json.dumps(dict(parts), sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)
    with _atomic_file(Path(path)) as fh:
        pq.write_table(table, fh)


def _read_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (OSError, ValueError, pa.ArrowException)


def _read_parquet(path: Path) -> pd.DataFrame:
    """Read a parquet file; :class:`DataError` (naming the file) if it does not read back."""
    try:
        return pd.read_parquet(path)
    except _read_errors() as exc:
        raise DataError(f"{path} is unreadable ({type(exc).__name__}: {_first_line(exc)})") from None


def _parquet_ok(path: Path) -> bool:
    """Whether the parquet footer of ``path`` reads back (cheap: the data pages are not read)."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
        return True
    except _read_errors():
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def config_hash(experiment: str, config: Mapping[str, Any]) -> str:
    """Ten hex digits of sha256 over the experiment name and the resolved config."""
    blob = json.dumps({"experiment": experiment, "config": config}, sort_keys=True, default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             zip(METRIC_COLUMNS, ("int64", "string", "string", "float64"))})
    frame = pd.DataFrame(rows)
    frame["step"] = frame["step"].astype("int64")
    frame["split"] = frame["split"].astype("string")
    frame["name"] = frame["name"].astype("string")
    frame["value"] = frame["value"].astype("float64")
    tags = [c for c in frame.columns if c not in METRIC_COLUMNS]
    return frame[list(METRIC_COLUMNS) + tags]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else _frame([])


# ----------------------------------------------------------------------------- readers


def _part_files(run_dir: Path) -> list[Path]:
    parts_dir = run_dir / "parts"
    return sorted(parts_dir.glob("*.parquet")) if parts_dir.is_dir() else []


def _signature(parts: list[Path]) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in parts}


def _metrics_fresh(path: Path, parts: list[Path]) -> bool:
    """Whether ``metrics.parquet`` was built from exactly the current parts (NOTE [one source of truth])."""
    import pyarrow.parquet as pq

    if not path.exists():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except _read_errors():
        return False
    if PARTS_KEY in meta:
        try:
            return json.loads(meta[PARTS_KEY]) == _signature(parts)
        except ValueError:
            return False
    newest = max((p.stat().st_mtime_ns for p in parts), default=0)  # written before the record existed
    return path.stat().st_mtime_ns >= newest


def curve(frame: pd.DataFrame, split: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One logged curve of a long metrics frame: ``(steps, values)``, float64, sorted by step.

    ``frame`` holds the rows of one training run (filter the tag columns first); a metric that
    was not logged gives two empty arrays.
    """
    rows = frame[(frame["split"] == split) & (frame["name"] == name)].sort_values("step", kind="stable")
    return rows["step"].to_numpy(dtype=np.float64), rows["value"].to_numpy(dtype=np.float64)


def read_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The long-format metrics of a run directory (finished or interrupted).

    ``metrics.parquet`` while it is fresh and readable, else the concatenation of
    ``parts/`` (NOTE [one source of truth]). Raises :class:`DataError` naming the file
    when the data cannot be read back. Never writes.
    """
    run_dir = Path(run_dir)
    path = run_dir / "metrics.parquet"
    parts = _part_files(run_dir)
    problem = None
    if path.exists() and (not parts or _metrics_fresh(path, parts)):
        try:
            return _read_parquet(path)
        except DataError as exc:
            problem = str(exc)
            log.warning("read_metrics: %s; reading parts/ instead", problem)
    if not parts:
        if problem:
            raise DataError(f"read_metrics: {problem} and {run_dir} has no parts/ to rebuild it from; "
                            "run it again with --force")
        return _frame([])
    frames = []
    for part in parts:
        try:
            frames.append(_read_parquet(part))
        except DataError as exc:
            raise DataError(f"read_metrics: {exc}; rerun the same `telescope run` command to redo "
                            "that unit") from None
    return _concat(frames)


def run_status(run_dir: str | os.PathLike) -> str:
    """``"done"``, ``"failed"``, ``"incomplete"`` (started, neither marker) or ``"missing"``.

    ``"done"`` only while the files ``DONE`` vouches for read back (NOTE [run status files]).
    """
    run_dir = Path(run_dir)
    if (run_dir / "DONE").exists() and _done_problem(run_dir) is None:
        return "done"
    if (run_dir / FAILED).exists():
        return "failed"
    if (run_dir / "config.json").exists():
        return "incomplete"
    return "missing"


def _done_problem(run_dir: Path) -> str | None:
    """Why ``DONE`` of ``run_dir`` cannot be trusted, or ``None`` when it can (no data pages read)."""
    try:
        marker = read_json(run_dir / "DONE")
    except (OSError, ValueError):
        marker = None  # written before DONE listed its files: a timestamp
    files = marker.get("files") if isinstance(marker, dict) else None
    if isinstance(files, dict):
        for rel, size in files.items():
            path = run_dir / rel
            if not path.exists() or path.stat().st_size != size:
                return f"{rel} is missing or changed since DONE was written"
    try:
        read_json(run_dir / "summary.json")
    except (OSError, ValueError) as exc:
        return f"summary.json does not read back ({type(exc).__name__})"
    path = run_dir / "metrics.parquet"
    parts = _part_files(run_dir)
    if not (path.exists() and _parquet_ok(path) and (not parts or _metrics_fresh(path, parts))):
        return "metrics.parquet is missing, unreadable or older than parts/"
    return None


def record_failure(run_dir: Path, exc: BaseException, attempt: int = 1) -> None:
    """Write ``FAILED`` (error, traceback and config) into ``run_dir`` (NOTE [run status files])."""
    config = {}
    with contextlib.suppress(Exception):
        config = read_json(Path(run_dir) / "config.json")
    write_json_atomic(Path(run_dir) / FAILED, {
        "error": _first_line(exc),
        "type": type(exc).__name__,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "config": config,
        "attempt": attempt,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })


# ----------------------------------------------------------------------------- sinks


class UnitSink:
    """Collects the rows of one unit (one training run) and its tags."""

    def __init__(self, tags: Mapping[str, Any]):
        self.tags = dict(tags)
        self.rows: list[dict[str, Any]] = []

    def log(self, step: int, split: str, name: str, value: float) -> None:
        self.rows.append({"step": int(step), "split": split, "name": name,
                          "value": float(value), **self.tags})

    def log_dict(self, step: int, split: str, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.log(step, split, name, value)

    def frame(self) -> pd.DataFrame:
        return _frame(self.rows)


def _unit_label(key: str, tags: Mapping[str, Any]) -> str:
    if not tags:
        return key
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in tags.items())


def _name_the_unit(exc: DivergenceError, key: str, tags: Mapping[str, Any]) -> DivergenceError:
    """A divergence names the unit (setting, learning rate, seed) that diverged."""
    return DivergenceError(f"unit {_unit_label(key, tags)} diverged: {exc}")


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """Progress as plain lines through ``emit``: at most one every ``every`` seconds.

    For output that is not a terminal (a log file, a batch job), where a bar would print
    nothing readable. ``update`` costs one clock read.
    """

    def __init__(self, total: int, desc: str, emit: Callable[[str], None], every: float = 30.0):
        self.total, self.desc, self.emit, self.every = int(total), desc, emit, float(every)
        self.n = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
            self.emit(f"{self.desc}: {self.n}/{self.total}{pct}, {now - self.start:.0f} s")

    def close(self) -> None:
        pass


class MetricSink(Protocol):
    """Where experiments write. Implemented by :class:`RunDir` and :class:`MemorySink`.

    ``unit(key, **tags)`` is a context manager yielding a :class:`UnitSink`; a unit that
    finished in an earlier attempt is reported by ``unit_done(key)`` and should be
    skipped. ``metrics()`` returns every finished unit's rows.
    """

    def unit_done(self, key: str) -> bool: ...

    def unit(self, key: str, **tags: Any) -> contextlib.AbstractContextManager[UnitSink]: ...

    def metrics(self) -> pd.DataFrame: ...

    def progress(self, total: int, desc: str) -> Any: ...


class MemorySink:
    """A sink that keeps everything in memory (tests, notebooks)."""

    def __init__(self) -> None:
        self._units: dict[str, pd.DataFrame] = {}
        self.partial: pd.DataFrame | None = None

    def unit_done(self, key: str) -> bool:
        return key in self._units

    @contextlib.contextmanager
    def unit(self, key: str, **tags: Any) -> Iterator[UnitSink]:
        sink = UnitSink(tags)
        try:
            yield sink
        except DivergenceError as exc:
            self.partial = sink.frame()
            raise _name_the_unit(exc, key, tags) from exc
        except BaseException:
            self.partial = sink.frame()
            raise
        self._units[key] = sink.frame()

    def metrics(self) -> pd.DataFrame:
        return _concat(list(self._units.values()))

    def progress(self, total: int, desc: str) -> Any:
        return _NoProgress()


class RunDir:
    """One run directory ``<root>/<experiment>-<hash>``.

    Create with :meth:`open`. Files: ``config.json`` first, ``parts/<unit>.parquet`` per
    finished unit, ``metrics.parquet`` and ``summary.json`` at the end (and after a
    failure, with the rows so far), ``DONE`` last (NOTE [one source of truth]).
    ``emit``: where progress lines go when the output is not a terminal (the CLI passes
    its printer; the library itself never prints).
    """

    def __init__(self, path: Path, *, show_progress: bool = False,
                 emit: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.show_progress = show_progress
        self.emit = emit
        self._set_aside: list[Path] = []  # parts set aside by this object (their original paths)

    # -- lifecycle
    @classmethod
    def open(cls, root: str | os.PathLike, experiment: str, config: Mapping[str, Any],
             meta: Mapping[str, Any] | None = None, *, show_progress: bool = False,
             name: str | None = None, emit: Callable[[str], None] | None = None) -> "RunDir":
        """Open (or create) the run directory of ``config``; write ``config.json`` if new."""
        digest = config_hash(experiment, config)
        path = Path(root) / (name or f"{experiment}-{digest}")
        run = cls(path, show_progress=show_progress, emit=emit)
        path.mkdir(parents=True, exist_ok=True)
        cfg_path = path / "config.json"
        record = {"experiment": experiment, "hash": digest, "config": dict(config),
                  "meta": dict(meta or {})}
        if cfg_path.exists():
            try:
                old = read_json(cfg_path)
            except (OSError, ValueError) as exc:
                raise DataError(f"RunDir.open: {cfg_path} is unreadable ({type(exc).__name__}); "
                                "delete that run directory or choose another --out") from None
            if old.get("hash") != digest:
                raise ConfigError(
                    f"run directory {path} holds a different config (hash {old.get('hash')} != {digest}); "
                    "choose another --out or delete that directory")
        else:
            write_json_atomic(cfg_path, record)
        return run

    @property
    def done(self) -> bool:
        """``DONE`` is there and the files it vouches for read back (no data pages read)."""
        return (self.path / "DONE").exists() and _done_problem(self.path) is None

    def settle(self) -> bool:
        """Whether the run is finished, after repairing what its parts allow (NOTE [one source of truth]).

        A ``DONE`` run whose ``metrics.parquet`` is missing, stale or unreadable gets it
        rebuilt from intact parts; when that is not enough (a part or ``summary.json``
        does not read back), ``DONE`` is withdrawn with a warning and ``False`` returned,
        so the run is redone from its intact units.
        """
        if not (self.path / "DONE").exists():
            return False
        problem = _done_problem(self.path)
        if problem is None:
            return True
        log.warning("%s: DONE is not trusted: %s", self.path, problem)
        parts = _part_files(self.path)
        try:
            read_json(self.path / "summary.json")
            frames = [_read_parquet(p) for p in parts]
        except (OSError, ValueError, DataError) as exc:
            frames = None
            log.warning("%s: cannot rebuild from parts/ (%s); the run is redone from its intact units",
                        self.path, _first_line(exc))
        if frames is not None and parts:
            _write_parquet_atomic(self.path / "metrics.parquet", _concat(frames), _signature(parts))
            self._write_done()
            log.warning("%s: metrics.parquet rebuilt from parts/", self.path)
            return True
        (self.path / "DONE").unlink()
        return False

    @property
    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json")

    # -- units
    def _unit_path(self, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", key)
        return self.path / "parts" / f"{safe}.parquet"

    def _set_part_aside(self, path: Path, reason: str) -> None:
        target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}")
        os.replace(path, target)
        self._set_aside.append(path)
        log.warning("%s does not read back (%s); set aside as %s, its unit is redone", path, reason, target.name)

    def unit_done(self, key: str) -> bool:
        """Whether unit ``key`` finished earlier and its part reads back (else it is set aside)."""
        path = self._unit_path(key)
        if not path.exists():
            return False
        try:
            _read_parquet(path)
        except DataError as exc:
            self._set_part_aside(path, str(exc))
            return False
        return True

    @contextlib.contextmanager
    def unit(self, key: str, **tags: Any) -> Iterator[UnitSink]:
        sink = UnitSink(tags)
        start = time.monotonic()
        try:
            yield sink
        except BaseException as exc:
            # keep what was measured before the failure, readable but not counted as done
            self._write_metrics(extra=sink.frame())
            if isinstance(exc, DivergenceError):
                raise _name_the_unit(exc, key, tags) from exc
            raise
        _write_parquet_atomic(self._unit_path(key), sink.frame())
        if self.emit is not None:
            self.emit(f"finished unit {_unit_label(key, tags)} ({time.monotonic() - start:.1f} s)")

    def metrics(self) -> pd.DataFrame:
        """Every finished unit's rows; a part that does not read back is set aside."""
        frames = []
        for part in _part_files(self.path):
            try:
                frames.append(_read_parquet(part))
            except DataError as exc:
                self._set_part_aside(part, str(exc))
        return _concat(frames)

    def _write_metrics(self, extra: pd.DataFrame | None = None) -> None:
        frame = self.metrics()
        if extra is not None and len(extra):
            frame = pd.concat([frame, extra], ignore_index=True) if len(frame) else extra
        _write_parquet_atomic(self.path / "metrics.parquet", frame, _signature(_part_files(self.path)))

    def progress(self, total: int, desc: str) -> Any:
        if self.emit is not None:
            return LineProgress(total, desc, self.emit)
        if not self.show_progress:
            return _NoProgress()
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=None, dynamic_ncols=True)

    # -- the end
    def finish(self, summary: Mapping[str, Any]) -> None:
        """Write ``metrics.parquet``, ``summary.json`` and, last, ``DONE``."""
        self._write_metrics()
        lost = [p for p in self._set_aside if not p.exists()]  # set aside and not redone since
        if lost:
            raise DataError(f"RunDir.finish: {lost[0].name} in {self.path / 'parts'} did not read back and was "
                            "set aside; run the same command again to redo its unit")
        write_json_atomic(self.path / "summary.json", dict(summary))
        self._write_done()

    def _write_done(self) -> None:
        files = {rel: (self.path / rel).stat().st_size for rel in ("metrics.parquet", "summary.json")}
        files.update({f"parts/{p.name}": p.stat().st_size for p in _part_files(self.path)})
        write_json_atomic(self.path / "DONE", {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files})

    def reset(self) -> None:
        """Forget every stored result of this run but its config."""
        for name in ("metrics.parquet", "summary.json", "DONE"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        shutil.rmtree(self.path / "parts", ignore_errors=True)
