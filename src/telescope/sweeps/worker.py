"""The task every backend runs: one sweep run in a worker process, never raising.

A task is a plain dict (picklable, JSON-able) so it crosses process and machine
boundaries unchanged:

    {"experiment", "preset", "seed", "sets", "sweep_dir", "name", "device", "data_dir",
     "attempt", "meta"}

:func:`execute_task` returns ``{"name", "status": "done"|"skipped"|"failed", "error",
"seconds", "pid", "files"}``; ``files`` (relative path -> bytes) is filled only when the
run was made away from the sweep directory (a Ray node without the shared filesystem),
for the driver to write with :func:`unpack_run`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from telescope.store.rundir import _write_atomic

log = logging.getLogger(__name__)

# NOTE [one thread per worker]
# Each worker runs torch with one intra-op and one inter-op thread: K workers on K cores
# then do not oversubscribe them, and every backend computes every run with the same
# thread count, so float results are bit-identical across backends for the same seeds.
THREADS_PER_WORKER = 1


def limit_threads(threads: int = THREADS_PER_WORKER) -> None:
    """Pin torch (and BLAS via the environment) to ``threads`` threads in this process."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel work
        torch.set_num_interop_threads(threads)


def execute_task(task: dict[str, Any], *, return_files: bool = False) -> dict[str, Any]:
    """Run one sweep task; failures are recorded in the run directory and returned, not raised."""
    from telescope.store import record_failure
    from telescope.sweeps.runner import run_one

    start = time.perf_counter()
    result: dict[str, Any] = {"name": task["name"], "status": "failed", "error": None, "seconds": 0.0,
                              "pid": os.getpid(), "files": None}
    tmp = tempfile.mkdtemp(prefix="telescope-run-") if return_files else None
    out = Path(tmp) if tmp else Path(task["sweep_dir"])
    try:
        outcome = run_one(task["experiment"], task["preset"], task["seed"], task["sets"], out,
                          task.get("device", "cpu"), task.get("data_dir"), meta=task.get("meta"),
                          attempt=int(task.get("attempt", 1)), workers=1)  # NOTE [units in parallel]: no pool in a pool
        if outcome.path.name != task["name"]:
            # the worker resolved a different config than the driver: versions differ
            raise RuntimeError(f"run directory {outcome.path.name} != expected {task['name']}: the worker's "
                               "telescope version resolves this config differently from the driver's")
        result["status"] = outcome.status
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a task reports every failure to the driver
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        run_dir = out / task["name"]
        if run_dir.exists() and not (run_dir / "FAILED").exists():
            record_failure(run_dir, exc, int(task.get("attempt", 1)))
    result["seconds"] = time.perf_counter() - start
    if tmp:
        try:
            run_dir = Path(tmp) / task["name"]
            result["files"] = pack_run(run_dir) if run_dir.exists() else {}
        finally:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return result


def pack_run(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory as ``{relative path: bytes}`` (temporary files left out)."""
    run_dir = Path(run_dir)
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def unpack_run(files: dict[str, bytes], run_dir: Path) -> None:
    """Write a packed run into ``run_dir`` atomically file by file; ``DONE`` / ``FAILED`` last."""
    run_dir = Path(run_dir)
    markers = ("DONE", "FAILED")
    for rel in sorted(files, key=lambda r: r in markers):
        target = (run_dir / rel).resolve()
        if run_dir.resolve() not in target.parents:
            raise ValueError(f"unpack_run: {rel!r} escapes the run directory {run_dir}")
        if rel == "config.json" and target.exists():
            continue  # identical by construction (same hash); keep the driver's copy
        _write_atomic(target, files[rel])


EXIT_ORPHANED = 3


def _die_with_driver(alive) -> None:
    """Block until the driver's end of ``alive`` closes, then end this process.

    NOTE [workers die with their driver] in :mod:`telescope.sweeps.backends`.
    """
    try:
        while True:
            alive.recv()  # the driver never sends: this returns only by end-of-file
    except (EOFError, OSError):
        pass
    os._exit(EXIT_ORPHANED)


def watch_driver(alive) -> None:
    """In a worker: end this process as soon as the driver is gone (``alive``: the reading end of its
    liveness pipe; None: no watch). NOTE [workers die with their driver] in :mod:`telescope.sweeps.backends`."""
    if alive is not None:
        threading.Thread(target=_die_with_driver, args=(alive,), name="telescope-watchdog", daemon=True).start()


def worker_main(conn, alive=None) -> None:
    """A local worker process: receive tasks on ``conn``, send results back, stop on ``None``.

    ``alive``: the reading end of the driver's liveness pipe; when it closes, the worker
    ends at once, mid-task or not (NOTE [workers die with their driver] in
    :mod:`telescope.sweeps.backends`).
    """
    watch_driver(alive)
    limit_threads()
    while True:
        try:
            task = conn.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if task is None:
            break
        try:
            conn.send(execute_task(task))
        except KeyboardInterrupt:
            break
    # NOTE [warm workers]: every result is sent and every file written atomically; skip the
    # interpreter teardown (seconds with torch loaded) that the driver would wait for.
    conn.close()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def ray_task(task: dict[str, Any], return_files: bool = False) -> dict[str, Any]:
    """The Ray task body (wrapped by ``ray.remote`` in :mod:`telescope.sweeps.backends`)."""
    limit_threads()
    if not return_files and not (Path(task["sweep_dir"]) / "sweep.json").exists():
        return_files = True  # no shared filesystem on this node: send the run back to the driver
    return execute_task(task, return_files=return_files)
