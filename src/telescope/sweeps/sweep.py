"""Run a sweep: grid × seeds into one sweep directory, skipping what is finished.

Layout (NOTE [sweep directory])::

    <sweep dir>/sweep.json                 the manifest: spec, every run (name, grid point,
                                           seed) and the status after the last invocation
    <sweep dir>/<experiment>-<hash>/       one ordinary run directory per (point, seed):
                                           config.json, parts/, metrics.parquet,
                                           summary.json, DONE | FAILED
    <sweep dir>/tensorboard/, mlruns/      tracking exports (--tensorboard, --mlflow)
    <sweep dir>/sweep.lock                 held by the running driver (NOTE [sweep lock])

A run with ``DONE`` is skipped; a run with ``FAILED`` is skipped (and still counted as
failed) unless ``retry_failed``; any other run (never started, or interrupted) is run
and resumes from its finished units.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from telescope.errors import ConfigError, DataError
from telescope.store import read_json, write_json_atomic
from telescope.sweeps.backends import BACKENDS, default_workers, run_local, run_ray
from telescope.sweeps.lock import sweep_lock
from telescope.store import FAILED, run_status
from telescope.sweeps.spec import SweepSpec

log = logging.getLogger(__name__)

MANIFEST = "sweep.json"


@dataclass
class SweepResult:
    """What one invocation did. ``failed`` maps run name -> one-line error."""

    path: Path
    total: int
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def open_sweep(spec: SweepSpec, sweep_dir: Path, tasks: Sequence[Any] | None = None) -> dict[str, Any]:
    """Create ``sweep.json`` or check that the one there describes the same sweep."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / MANIFEST
    if path.exists():
        try:
            old = read_json(path)
        except ValueError as exc:
            raise DataError(f"telescope sweep: {path} is unreadable ({exc}); delete it and rerun the same "
                            "command: a new one is written and the finished runs there are skipped") from None
        if old.get("spec") != spec.manifest():
            raise ConfigError(
                f"telescope sweep: {sweep_dir} holds a different sweep (its sweep.json has {old.get('spec')}); "
                "choose another --out or delete that directory")
        return old
    sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"spec": spec.manifest(), "digest": spec.digest,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": [t.as_dict() for t in (tasks if tasks is not None else spec.tasks())]}
    write_json_atomic(path, manifest)
    return manifest


def run_sweep(spec: SweepSpec, out: str | Path = "runs", *, sweep_dir: str | Path | None = None,
              backend: str = "local", workers: int | None = None, address: str | None = None,
              device: str = "cpu", data_dir: str | None = None, retry_failed: bool = False,
              trackers: Sequence[Any] = (), on_event: Callable[[str, dict[str, Any]], None] | None = None,
              max_attempts: int = 3, cpus_per_run: float = 1.0, gpus_per_run: float | None = None,
              return_files: bool = False) -> SweepResult:
    """Run every (grid point, seed) of ``spec`` not yet finished; never raises for a failing run.

    ``sweep_dir`` defaults to ``out/sweep-<experiment>-<spec hash>``. ``workers`` defaults to
    the cores available (local) or Ray's resources. ``trackers`` are objects with
    ``has_run(name)`` and ``export_run(run_dir, run_name, tags)`` (:mod:`telescope.store.sinks`),
    called in the driver for each run finished now and each earlier one they lack. ``on_event(kind, info)`` reports ``start``/``submit``,
    ``done``, ``skipped``, ``failed`` and ``retry``. Raises :class:`ConfigError` for a bad
    spec or backend before anything runs.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"telescope sweep --backend {backend}: choose one of {', '.join(BACKENDS)}")
    if max_attempts < 1:
        raise ConfigError(f"run_sweep: max_attempts={max_attempts}; need at least 1")
    if workers is not None and workers < 1:
        raise ConfigError(f"run_sweep: workers={workers}; need at least 1 (None: every core available)")
    if backend == "ray":
        from telescope.sweeps.backends import import_ray

        import_ray()  # a missing extra is reported before anything is written
    start = time.perf_counter()
    notify = on_event or (lambda kind, info: None)
    tasks = spec.tasks()  # resolves and validates every config before anything runs
    sweep_dir = Path(sweep_dir) if sweep_dir else spec.default_dir(out)
    if device.startswith("cuda"):
        import torch

        if backend == "local" and not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    with sweep_lock(sweep_dir):  # NOTE [sweep lock]
        return _run_locked(spec, tasks, sweep_dir, start, notify, backend=backend, workers=workers,
                           address=address, device=device, data_dir=data_dir, retry_failed=retry_failed,
                           trackers=trackers, max_attempts=max_attempts, cpus_per_run=cpus_per_run,
                           gpus_per_run=gpus_per_run, return_files=return_files)


def _run_locked(spec: SweepSpec, tasks, sweep_dir: Path, start: float, notify, *, backend, workers, address,
                device, data_dir, retry_failed, trackers, max_attempts, cpus_per_run, gpus_per_run,
                return_files) -> SweepResult:
    open_sweep(spec, sweep_dir, tasks)
    result = SweepResult(sweep_dir, len(tasks))
    pending = []
    meta_base = {"sweep": sweep_dir.name}
    for task in tasks:
        status = run_status(sweep_dir / task.name)
        if status == "done":
            result.skipped.append(task.name)
            notify("skipped", {**task.as_dict(), "status": "skipped"})
            continue
        if status == "failed" and not retry_failed:
            error = _failed_error(sweep_dir / task.name)
            result.failed[task.name] = error
            notify("failed", {**task.as_dict(), "status": "failed", "error": error, "earlier": True})
            continue
        pending.append({"experiment": spec.experiment, "preset": spec.preset, "seed": task.seed,
                        "sets": task.sets, "sweep_dir": str(sweep_dir), "name": task.name, "device": device,
                        "data_dir": str(data_dir) if data_dir else None, "attempt": 1,
                        "meta": {**meta_base, "point": task.point}})

    def track(kind: str, info: dict[str, Any]) -> None:
        if kind == "retry":
            result.retried[info["name"]] = info["attempt"]
        notify(kind, info)

    if pending:
        if backend == "local":
            results = run_local(pending, workers=min(workers or default_workers(), len(pending)),
                                on_event=track, max_attempts=max_attempts)
        else:
            gpus = gpus_per_run if gpus_per_run is not None else (1.0 if device.startswith("cuda") else 0.0)
            results = run_ray(pending, workers=workers, on_event=track, address=address,
                              cpus_per_run=cpus_per_run, gpus_per_run=gpus, max_attempts=max_attempts,
                              return_files=return_files)
        for res in results:
            if res["status"] == "failed":
                result.failed[res["name"]] = res.get("error") or "failed"
            else:
                result.ran.append(res["name"])
    if trackers:
        # runs finished now are exported; runs finished earlier only if a tracker lacks them
        fresh = set(result.ran)
        for task in tasks:
            if task.name not in fresh and task.name not in result.skipped:
                continue
            for tracker in trackers:
                if task.name in fresh or not tracker.has_run(task.name):
                    tracker.export_run(sweep_dir / task.name, task.name, {**task.point, "seed": task.seed})
    result.seconds = time.perf_counter() - start
    _write_status(sweep_dir, tasks, backend, result)
    return result


def _failed_error(run_dir: Path) -> str:
    try:
        return str(read_json(run_dir / FAILED).get("error", "failed"))
    except (OSError, ValueError):
        return "failed"


def _write_status(sweep_dir: Path, tasks, backend: str, result: SweepResult) -> None:
    manifest = read_json(sweep_dir / MANIFEST)
    statuses = {t.name: run_status(sweep_dir / t.name) for t in tasks}
    manifest["status"] = {
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "backend": backend,
        "counts": {s: sum(1 for v in statuses.values() if v == s) for s in sorted(set(statuses.values()))},
        "runs": statuses,
        "last_invocation": {"ran": len(result.ran), "skipped": len(result.skipped), "failed": len(result.failed),
                            "retried": dict(result.retried), "seconds": round(result.seconds, 3)},
    }
    write_json_atomic(sweep_dir / MANIFEST, manifest)


def read_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """The manifest of a sweep directory (:class:`~telescope.errors.DataError` if there is none)."""
    path = Path(sweep_dir) / MANIFEST
    if not path.exists():
        raise DataError(f"read_sweep: {sweep_dir} is not a sweep directory (no {MANIFEST})")
    return read_json(path)
