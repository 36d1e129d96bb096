"""Run directories: identity by config hash, atomic writes, resumable units."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

import pandas as pd

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("step", "split", "name", "value")


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


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_parquet_atomic(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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


def read_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The long-format metrics of a run directory (finished or interrupted)."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.parquet"
    if path.exists():
        return pd.read_parquet(path)
    parts = sorted((run_dir / "parts").glob("*.parquet")) if (run_dir / "parts").exists() else []
    if not parts:
        return _frame([])
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


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


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

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
        except BaseException:
            self.partial = sink.frame()
            raise
        self._units[key] = sink.frame()

    def metrics(self) -> pd.DataFrame:
        frames = [f for f in self._units.values() if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else _frame([])

    def progress(self, total: int, desc: str) -> Any:
        return _NoProgress()


class RunDir:
    """One run directory ``<root>/<experiment>-<hash>``.

    Create with :meth:`open`. ``done`` tells whether a finished run is already there.
    Files: ``config.json`` first, ``parts/<unit>.parquet`` per finished unit,
    ``metrics.parquet`` and ``summary.json`` at the end (and after a failure, with the
    rows so far), ``DONE`` last.
    """

    def __init__(self, path: Path, *, show_progress: bool = False):
        self.path = Path(path)
        self.show_progress = show_progress

    # -- lifecycle
    @classmethod
    def open(cls, root: str | os.PathLike, experiment: str, config: Mapping[str, Any],
             meta: Mapping[str, Any] | None = None, *, show_progress: bool = False,
             name: str | None = None) -> "RunDir":
        """Open (or create) the run directory of ``config``; write ``config.json`` if new."""
        digest = config_hash(experiment, config)
        path = Path(root) / (name or f"{experiment}-{digest}")
        run = cls(path, show_progress=show_progress)
        path.mkdir(parents=True, exist_ok=True)
        cfg_path = path / "config.json"
        record = {"experiment": experiment, "hash": digest, "config": dict(config),
                  "meta": dict(meta or {})}
        if cfg_path.exists():
            old = read_json(cfg_path)
            if old.get("hash") != digest:
                from telescope.errors import ConfigError

                raise ConfigError(
                    f"run directory {path} holds a different config (hash {old.get('hash')} != {digest}); "
                    "choose another --out or delete that directory")
        else:
            write_json_atomic(cfg_path, record)
        return run

    @property
    def done(self) -> bool:
        return (self.path / "DONE").exists()

    @property
    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json")

    # -- units
    def _unit_path(self, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", key)
        return self.path / "parts" / f"{safe}.parquet"

    def unit_done(self, key: str) -> bool:
        return self._unit_path(key).exists()

    @contextlib.contextmanager
    def unit(self, key: str, **tags: Any) -> Iterator[UnitSink]:
        sink = UnitSink(tags)
        try:
            yield sink
        except BaseException:
            # keep what was measured before the failure, readable but not counted as done
            self._write_metrics(extra=sink.frame())
            raise
        _write_parquet_atomic(self._unit_path(key), sink.frame())

    def metrics(self) -> pd.DataFrame:
        parts_dir = self.path / "parts"
        parts = sorted(parts_dir.glob("*.parquet")) if parts_dir.exists() else []
        frames = [pd.read_parquet(p) for p in parts]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else _frame([])

    def _write_metrics(self, extra: pd.DataFrame | None = None) -> None:
        frame = self.metrics()
        if extra is not None and len(extra):
            frame = pd.concat([frame, extra], ignore_index=True) if len(frame) else extra
        _write_parquet_atomic(self.path / "metrics.parquet", frame)

    def progress(self, total: int, desc: str) -> Any:
        if not self.show_progress:
            return _NoProgress()
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=None, dynamic_ncols=True)

    # -- the end
    def finish(self, summary: Mapping[str, Any]) -> None:
        """Write ``metrics.parquet``, ``summary.json`` and, last, ``DONE``."""
        self._write_metrics()
        write_json_atomic(self.path / "summary.json", dict(summary))
        _write_atomic(self.path / "DONE", time.strftime("%Y-%m-%dT%H:%M:%S\n").encode())

    def reset(self) -> None:
        """Forget every stored result of this run but its config."""
        for name in ("metrics.parquet", "summary.json", "DONE"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        shutil.rmtree(self.path / "parts", ignore_errors=True)
