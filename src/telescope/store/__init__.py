"""Run directories and long-format metrics (CONTRACT.md, "Run directory").

A run directory holds ``config.json`` (written before the first step),
``metrics.parquet`` (long rows: ``step, split, name, value`` plus the run's tag
columns), ``summary.json`` and ``DONE`` (written last). Experiments write through a
:class:`MetricSink`; they never touch files themselves.

Runs are made of *units* (one training run each: a setting, a learning rate, a
seed). Each finished unit is stored atomically in ``parts/``; a rerun of an
interrupted run skips the finished units and redoes only the rest, so nothing
finished is lost and a rerun resumes.
"""

from telescope.store.rundir import (
    MetricSink,
    MemorySink,
    RunDir,
    config_hash,
    read_metrics,
    read_json,
    write_json_atomic,
)

__all__ = [
    "MetricSink",
    "MemorySink",
    "RunDir",
    "config_hash",
    "read_metrics",
    "read_json",
    "write_json_atomic",
]
