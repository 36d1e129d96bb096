"""Running a study's units: one after the other in this process, or several at once in worker processes.

A unit is one training run of a study (one setting, learning rate, seed ...): a key that names
its part in the run directory, the tags of its metric rows, and the arguments of the study's
module-level unit function. :func:`run_units` is the loop every migrated study used to write
by hand: skip the units already done, run the others through ``sink.unit(key, **tags)``,
advance the progress bar.

# NOTE [units in parallel]
# ``workers > 1`` runs that many units at once, each in its own worker process, instead of a
# vmapped ensemble in one process: the lens and the smoother stay per member, unchanged, and no
# study's unit function is rewritten (it runs as it does sequentially, into a UnitSink).
# The workers come from the sweeps' machinery (telescope.sweeps.backends, imported lazily since
# sweeps sit above experiments in the layering: the forkserver that has
# imported torch and the studies, NOTE [warm workers]; one torch thread each, NOTE [one thread per
# worker]; they die with their driver, NOTE [workers die with their driver]). The forkserver never
# touches CUDA, so a worker may create its own CUDA context. A unit's arguments (config, data) go
# to the worker pickled as bytes (no shared memory), its rows come back the same way, and the
# driver writes them through ``sink.unit(key, **tags)``, entered when the unit starts and left
# when its rows arrive: parts/, resume, the set-aside logic, metrics.parquet and the "finished
# unit" lines are those of a sequential run. Rows are the same whatever the number of workers
# (each unit seeds itself; the workers compute with one thread, as the sequential run does under
# OMP_NUM_THREADS=1); only their order in a MemorySink follows the finishing order.
# A failing unit: the running ones finish and are written, nothing new starts, then the first
# error is raised as the sequential loop raises it (a DivergenceError names the unit; its rows so
# far go to metrics.parquet). Ctrl-C or a dead worker: finished parts stay, a rerun resumes.
# Why it pays on a GPU: a unit of the size of the studies here is launch-bound (the host issues
# many small kernels; the device idles between them), and several processes' CUDA contexts
# time-share one device, filling those gaps. The cost: each worker holds its own copy of the
# data and its own CUDA context (~0.5 GB of device memory) and one CPU core.
# Defaults: 1 on the CPU (each unit already uses the cores it is given, and the results must not
# depend on a thread count); CUDA_WORKERS = 4 on CUDA, a guess that could not be measured where
# this was written: 4 contexts cost ~2 GB of device memory and 4 CPU cores, little on a
# data-centre GPU and its host, and 4 divides the 12 units of the grokking-mnist paper preset
# into 3 even waves.
# `benchmarks/gpu.py` (section "runs per GPU") prints the throughput at K = 1, 2, 4, 8;
# change CUDA_WORKERS when it shows a better K. Inside a sweep worker a run never starts its
# own pool (telescope.sweeps.worker forces workers=1): the sweep already fills the machine, and
# its workers are daemon processes, which may not have children.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Mapping

from telescope.errors import ConfigError

log = logging.getLogger(__name__)

CUDA_WORKERS = 4  # NOTE [units in parallel]: the default on CUDA
PROGRESS_EVERY = 0.5  # seconds between a worker's progress messages


@dataclass(frozen=True)
class Unit:
    """One unit of a study: ``work(*args, **kwargs, sink=<UnitSink>, progress=<bar>)`` (NOTE [units in parallel]).

    ``key`` names its part (``sink.unit_done(key)``), ``tags`` the columns of its rows,
    ``steps`` what it adds to the progress bar (None: ``run_units``' ``steps_per_unit``).
    ``args`` and ``kwargs`` must pickle (a frozen config, tensors on the CPU, plain values).
    """

    key: str
    tags: Mapping[str, Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    steps: int | None = None


def unit_workers(ctx) -> int:
    """How many units ``ctx`` (a :class:`~telescope.experiments.base.RunContext`) runs at once:
    ``ctx.workers``, or by default 1 on the CPU and :data:`CUDA_WORKERS` on CUDA (NOTE [units in parallel])."""
    if ctx.workers is not None:
        return int(ctx.workers)
    return CUDA_WORKERS if str(ctx.device).startswith("cuda") else 1


def run_units(sink, units: Iterable[Unit], work: Callable[..., Any], *, workers: int = 1, progress=None,
              steps_per_unit: int = 1) -> None:
    """Run every unit of ``units`` not already done, ``workers`` at a time (NOTE [units in parallel]).

    ``sink``: the run's :class:`~telescope.store.MetricSink`; ``work``: the study's module-level
    unit function, called as ``work(*unit.args, **unit.kwargs, sink=unit_sink, progress=bar)``;
    ``progress``: the run's bar (``sink.progress(...)``), advanced by each unit's steps (a done
    unit at once; with workers, as the worker reports, at most every ``PROGRESS_EVERY`` seconds).
    With ``workers == 1`` this is exactly the sequential loop. Raises the first unit's error
    after the units already running have finished and been written.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"run_units(workers={workers!r}): give a whole number of worker processes ≥ 1")
    bar = progress if progress is not None else _Silent()

    def steps_of(unit: Unit) -> int:
        return int(unit.steps if unit.steps is not None else steps_per_unit)

    pending = []
    for unit in units:
        if sink.unit_done(unit.key):
            bar.update(steps_of(unit))
        else:
            pending.append(unit)
    daemon = multiprocessing.current_process().daemon
    if workers > 1 and len(pending) > 1 and daemon:    # e.g. a sweep's worker: it may not start processes
        log.warning("run_units: this is a daemon process, which may not start workers; "
                    "running %d units one by one", len(pending))
    if workers == 1 or len(pending) <= 1 or daemon:
        for unit in pending:
            log.info("training unit %s", unit.key)
            with sink.unit(unit.key, **unit.tags) as unit_sink:
                work(*unit.args, **unit.kwargs, sink=unit_sink, progress=progress)
        return
    _Pool(sink, work, bar, steps_of).run(pending, min(workers, len(pending)))


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


# ----------------------------------------------------------------------------- the driver


class _RemoteTraceback(Exception):
    """The traceback of an error raised in a unit worker (chained as the error's cause)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\n(in the unit's worker process)\n{self.text}"


@dataclass
class _Running:
    unit: Unit
    context: Any            # the open ``sink.unit(key, **tags)`` context manager
    unit_sink: Any
    advanced: int = 0       # steps already added to the bar


class _Pool:
    """The driver side of NOTE [units in parallel]: dispatch units, collect rows, write them."""

    def __init__(self, sink, work, bar, steps_of) -> None:
        self.sink, self.work, self.bar, self.steps_of = sink, work, bar, steps_of

    def run(self, pending: list[Unit], workers: int) -> None:
        from telescope.sweeps.backends import WorkerProcess, worker_context

        queue = deque(pending)
        failures: list[tuple[_Running, BaseException]] = []
        ctx = worker_context()
        pool = [WorkerProcess(ctx, target=unit_worker_main) for _ in range(workers)]
        try:
            while True:
                for w in pool:
                    if w.task is None and queue and not failures:
                        self._start(w, queue.popleft())
                busy = [w for w in pool if w.task is not None]
                if not busy:
                    break
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for w in busy:
                    if w.conn in ready or w.process.sentinel in ready:
                        failure = self._receive(w)
                        if failure is not None:
                            failures.append(failure)
                        if w.task is None and not w.process.is_alive():    # died: no replacement
                            w.stop(kill=True)
                            pool.remove(w)
        except BaseException as exc:  # Ctrl-C, or an error of the driver itself: close what is open
            for running, _ in failures:
                self._close(running, exc)
            for w in pool:
                if w.task is not None:
                    self._close(w.task, exc)
                w.stop(kill=True)
            pool = []
            raise
        finally:
            for w in pool:
                w.stop(kill=w.task is not None)
        if failures:
            (first, error), *others = failures
            for running, exc in others:
                log.warning("unit %s failed too: %s", running.unit.key, exc)
                self._close(running, exc)
            raised = self._close(first, error)
            raise raised

    def _start(self, w, unit: Unit) -> None:
        try:
            payload = pickle.dumps((self.work, unit), protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise ConfigError(f"run_units: unit {unit.key} cannot be sent to a worker process "
                              f"({type(exc).__name__}: {exc}); its work function must be a module-level "
                              "function and its arguments must pickle (NOTE [units in parallel])") from exc
        log.info("training unit %s in worker process %s", unit.key, w.process.pid)
        context = self.sink.unit(unit.key, **unit.tags)
        w.task = _Running(unit, context, context.__enter__())
        w.conn.send_bytes(payload)

    def _receive(self, w) -> tuple[_Running, BaseException] | None:
        """Handle one message (or the death) of busy worker ``w``; a failure is returned, not raised."""
        running: _Running = w.task
        message = None
        if w.conn.poll():
            try:
                message = pickle.loads(w.conn.recv_bytes())
            except (EOFError, OSError):
                message = None
        if message is None:
            w.process.join(timeout=10)
            code = w.process.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            w.task = None
            return running, RuntimeError(f"the worker process of unit {running.unit.key} died ({how}); "
                                         "its finished units are kept, run the same command again to resume")
        kind = message[0]
        if kind == "progress":
            self.bar.update(message[1])
            running.advanced += message[1]
            return None
        _, rows, error = message
        running.unit_sink.rows.extend(rows)
        w.task = None
        if kind == "done":
            running.context.__exit__(None, None, None)
            self.bar.update(max(0, self.steps_of(running.unit) - running.advanced))
            return None
        return running, _arrived(error)

    @staticmethod
    def _close(running: _Running, exc: BaseException) -> BaseException:
        """Leave the unit's ``sink.unit`` context with ``exc`` (the sink keeps the rows so far and may
        rename the error, e.g. a DivergenceError naming the unit); the error to raise."""
        try:
            running.context.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException as raised:  # noqa: BLE001 - the sink's version of the error
            return raised
        return exc


# ----------------------------------------------------------------------------- the worker


class _PipeProgress:
    """A unit worker's progress bar: counts steps, sends them to the driver at most every ``PROGRESS_EVERY`` s."""

    def __init__(self, conn) -> None:
        self.conn, self.n, self.last = conn, 0, time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.flush()
            self.last = now

    def flush(self) -> None:
        if self.n:
            self.conn.send_bytes(pickle.dumps(("progress", self.n)))
            self.n = 0

    def close(self) -> None:
        pass


def _portable(exc: BaseException) -> tuple[BaseException, str]:
    """``(exc if it survives pickling, else a RuntimeError with its type and message; the worker's
    traceback as text)``: what a worker sends back (pickling drops an exception's traceback and cause)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any exception type may fail to pickle
        copy = RuntimeError(f"{type(exc).__name__}: {exc}")
    return copy, text


def _arrived(error: tuple[BaseException, str]) -> BaseException:
    """The driver's copy of a worker's error, the worker's traceback chained as its cause."""
    exc, text = error
    exc.__cause__ = _RemoteTraceback(text)
    return exc


def unit_worker_main(conn, alive=None) -> None:
    """A unit worker process: receive ``(work, unit)``, run it into a UnitSink, send back
    ``("done" | "failed", rows, error)``; stop on end-of-file (NOTE [units in parallel])."""
    import os

    from telescope.store.rundir import UnitSink
    from telescope.sweeps.worker import limit_threads, watch_driver

    watch_driver(alive)
    limit_threads()
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError, KeyboardInterrupt):
            break
        try:
            message = pickle.loads(payload)
        except KeyboardInterrupt:
            break
        if message is None:
            break
        work, unit = message
        unit_sink = UnitSink(unit.tags)
        progress = _PipeProgress(conn)
        try:
            work(*unit.args, **unit.kwargs, sink=unit_sink, progress=progress)
            reply = ("done", unit_sink.rows, None)
        except KeyboardInterrupt:
            break
        except BaseException as exc:  # noqa: BLE001 - every failure is a result for the driver
            reply = ("failed", unit_sink.rows, _portable(exc))
        try:
            progress.flush()
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, KeyboardInterrupt):
            break
    # NOTE [warm workers]: nothing is left to write; skip the interpreter's teardown of torch
    conn.close()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(0)
