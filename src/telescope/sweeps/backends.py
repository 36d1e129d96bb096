"""Where sweep tasks run: a local process pool, or Ray tasks (local instance or cluster).

Both backends take the same task dicts (see :mod:`telescope.sweeps.worker`), call
``on_event(kind, info)`` as tasks start and end, and return one result dict per task.
Both run :func:`~telescope.sweeps.worker.execute_task` with one torch thread, so results
are identical for the same seeds whichever backend ran them.

# NOTE [worker death]
# A task is retried when its worker process dies under it (killed, out of memory): the
# local pool sees the process's sentinel fire while the task is assigned to it, starts a
# replacement worker and queues the task again with ``attempt + 1``; Ray does the same
# through ``max_retries``. The retry resumes from the run's finished units (the store
# writes every file atomically, so a kill never leaves a damaged file, and other runs'
# directories are never touched). After ``max_attempts`` deaths the run is recorded
# FAILED. An exception inside the experiment is not retried: it is a result.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from telescope.errors import ConfigError

log = logging.getLogger(__name__)

EventFn = Callable[[str, dict[str, Any]], None]
BACKENDS = ("local", "ray")


# NOTE [warm workers]
# Local workers are started from a forkserver that has imported torch, the store and every
# experiment module once (telescope.sweeps.preload): a fresh spawned interpreter spends
# several CPU seconds on those imports, as long as dozens of `tiny` runs, and two workers
# importing at once on two cores double that wall time. The forkserver itself is a clean
# single-threaded process started with one BLAS/OpenMP thread (NOTE [one thread per
# worker]), so forking from it is safe; it lives as long as the driver, so later sweeps and
# replacement workers start in milliseconds. Platforms without forkserver use spawn.
# A worker that has sent its last result leaves with os._exit (worker_main): every file it
# wrote is already fsynced and renamed, and interpreter teardown of torch takes seconds.
PRELOAD = "telescope.sweeps.preload"


def worker_context(method: str | None = None):
    """The multiprocessing context local workers start from (forkserver with preload, else spawn)."""
    if method is None:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload([PRELOAD])
    return ctx


def default_workers() -> int:
    """The CPU cores this process may use (``os.sched_getaffinity``), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def _died(task: dict[str, Any], exitcode: int | None) -> dict[str, Any]:
    how = f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
    return {"name": task["name"], "status": "failed", "pid": None, "seconds": 0.0, "files": None,
            "error": f"worker process died ({how}) on each of {task['attempt']} attempts"}


# NOTE [workers die with their driver]
# A local worker must not outlive the driver that gave it its task: an orphan keeps
# computing, and a rerun of the sweep then races it (it finishes runs the new driver is
# about to start, and the summary miscounts). Each worker gets the reading end of a pipe
# whose only writing end the driver holds (``alive``); a watchdog thread in the worker
# blocks on it and ends the process (os._exit) when it reads end-of-file, which the kernel
# delivers as soon as the driver is gone, however it died (SIGKILL included). This works for
# forkserver and spawn alike, where a parent-death signal (prctl) would watch the
# forkserver instead of the driver. Files are written atomically (NOTE [one source of
# truth]), so a worker ended mid-unit leaves no damaged file: the rerun redoes that unit.
class WorkerProcess:
    """One local worker: a daemon process running ``target(conn, alive)`` (default: the sweep's
    :func:`~telescope.sweeps.worker.worker_main`) with one thread (NOTE [one thread per worker]), a
    duplex pipe ``conn`` to it and the liveness pipe of NOTE [workers die with their driver].
    ``task`` is the driver's record of what it is doing (None: idle)."""

    def __init__(self, ctx, target: Callable[..., None] | None = None) -> None:
        from telescope.sweeps.worker import worker_main

        self.conn, child = ctx.Pipe()
        alive_r, self.alive = ctx.Pipe(duplex=False)  # NOTE [workers die with their driver]
        self.process = ctx.Process(target=target or worker_main, args=(child, alive_r), daemon=True)
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # NOTE [one thread per worker]
        try:
            self.process.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        child.close()
        alive_r.close()
        self.task: Any = None

    def stop(self, *, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
        self.process.join(timeout=10)
        if self.process.is_alive():  # pragma: no cover - a wedged worker
            self.process.kill()
            self.process.join()
        self.conn.close()
        self.alive.close()


def run_local(tasks: list[dict[str, Any]], *, workers: int, on_event: EventFn,
              max_attempts: int = 3) -> list[dict[str, Any]]:
    """Run ``tasks`` on ``workers`` spawned processes; see NOTE [worker death] for retries."""
    if workers < 1:
        raise ConfigError(f"telescope sweep --workers {workers}: need at least 1 worker")
    ctx = worker_context()
    queue = deque(tasks)
    results: list[dict[str, Any]] = []
    pool: list[WorkerProcess] = []
    try:
        for _ in range(min(workers, len(queue))):
            pool.append(WorkerProcess(ctx))
        while queue or any(w.task is not None for w in pool):
            for w in list(pool):
                if w.task is None and queue:
                    task = queue.popleft()
                    try:
                        w.conn.send(task)
                    except (OSError, ValueError):  # died while idle: replace it, the task never started
                        queue.appendleft(task)
                        w.stop(kill=True)
                        pool[pool.index(w)] = WorkerProcess(ctx)
                        continue
                    w.task = task
                    on_event("start", {**task, "pid": w.process.pid})
            busy = [w for w in pool if w.task is not None]
            if not busy:
                continue  # a replacement worker is idle: dispatch to it first
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in busy:
                if w.conn not in ready and w.process.sentinel not in ready:
                    continue
                result = None
                if w.conn in ready:
                    try:
                        result = w.conn.recv()
                    except (EOFError, OSError):
                        result = None
                if result is not None:
                    results.append(result)
                    on_event(result["status"], {**w.task, **result})
                    w.task = None
                    continue
                # the worker died with the task assigned to it
                w.process.join(timeout=10)
                task, exitcode = w.task, w.process.exitcode
                w.task = None
                w.stop(kill=True)
                pool.remove(w)
                if task["attempt"] < max_attempts:
                    retry = {**task, "attempt": task["attempt"] + 1}
                    on_event("retry", {**retry, "error": f"worker {w.process.pid} died (exit code {exitcode})"})
                    queue.appendleft(retry)
                else:
                    result = _died(task, exitcode)
                    _record_death(task, result["error"])
                    results.append(result)
                    on_event("failed", {**task, **result})
                if queue:
                    pool.append(WorkerProcess(ctx))
    finally:
        for w in pool:
            w.stop(kill=w.task is not None)
    return results


def _record_death(task: dict[str, Any], message: str) -> None:
    from telescope.store import record_failure

    run_dir = Path(task["sweep_dir"]) / task["name"]
    if run_dir.exists():
        record_failure(run_dir, RuntimeError(message), task["attempt"])


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "telescope sweep --backend ray: Ray is not installed; install the extra with "
            "`pip install 'telescope[ray]'` (or `pip install 'ray[default]'`), or use --backend local") from None
    return ray


def run_ray(tasks: list[dict[str, Any]], *, workers: int | None, on_event: EventFn, address: str | None = None,
            cpus_per_run: float = 1.0, gpus_per_run: float = 0.0, max_attempts: int = 3,
            return_files: bool = False) -> list[dict[str, Any]]:
    """Run ``tasks`` as Ray tasks declaring ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs each.

    Uses the Ray instance already initialised in this process if there is one; otherwise
    connects to ``address`` (an existing cluster, e.g. ``ray://head:10001`` or ``auto``) or
    starts a local instance with ``workers`` CPUs, and shuts down what it started.
    Results written on a node without the sweep directory come back to the driver
    (``return_files``, automatic when the node lacks the path) and are written here.
    """
    ray = import_ray()
    from telescope.sweeps.worker import ray_task, unpack_run

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers or default_workers(), **kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run,
                            max_retries=max(0, max_attempts - 1))(ray_task)
        pending = {}
        for task in tasks:
            pending[remote.remote(task, return_files)] = task
            on_event("submit", task)
        results = []
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # a crashed worker after its retries, or a lost node
                result = {**_died({**task, "attempt": max_attempts}, None),
                          "error": f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"}
                _record_death(task, result["error"])
            files = result.pop("files", None)
            if files:
                unpack_run(files, Path(task["sweep_dir"]) / task["name"])
            results.append(result)
            on_event(result["status"], {**task, **result})
        return results
    finally:
        if started:
            ray.shutdown()
