"""Run directories and long-format metrics (CONTRACT.md, "Run directory").

A run directory holds ``config.json`` (written before the first step),
``metrics.parquet`` (long rows: ``step, split, name, value`` plus the run's tag
columns), ``summary.json`` and ``DONE`` (written last), or ``FAILED``. Experiments write
through a :class:`MetricSink`; they never touch files themselves.

Runs are made of *units* (one training run each: a setting, a learning rate, a
seed). Each finished unit is stored atomically in ``parts/``, the run's one source of
truth (NOTE [one source of truth] in :mod:`telescope.store.rundir`); a rerun of an
interrupted run skips the finished units and redoes only the rest, so nothing
finished is lost and a rerun resumes. The life cycle of a run (DONE, FAILED,
:func:`run_status`) lives here too (NOTE [run status files]).
"""

from telescope.store.rundir import (
    FAILED,
    LineProgress,
    MemorySink,
    MetricSink,
    RunDir,
    config_hash,
    curve,
    read_json,
    read_metrics,
    record_failure,
    run_status,
    write_json_atomic,
)

__all__ = [
    "FAILED",
    "LineProgress",
    "MemorySink",
    "MetricSink",
    "RunDir",
    "config_hash",
    "curve",
    "read_json",
    "read_metrics",
    "record_failure",
    "run_status",
    "write_json_atomic",
]
