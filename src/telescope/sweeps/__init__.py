"""Sweeps: grids × seeds of one experiment, run on a local process pool or on Ray.

    from telescope.sweeps import SweepSpec, parse_grid, run_sweep
    spec = SweepSpec("approximation", "tiny", parse_grid(["width=16,32"]), seeds=2)
    result = run_sweep(spec, out="runs", workers=2)      # SweepResult(path, ran, skipped, failed)

Every run is an ordinary run directory named by the hash of its config
(:mod:`telescope.store`), so a sweep's runs are skipped when finished, resumed when
interrupted, and read by the same report code as single runs. :func:`run_one` is the
non-printing core of ``telescope run``.
"""

from telescope.sweeps.backends import BACKENDS, default_workers
from telescope.store import run_status
from telescope.sweeps.runner import RunFailed, RunOutcome, run_one
from telescope.sweeps.spec import SweepSpec, Task, parse_grid
from telescope.sweeps.sweep import SweepResult, read_sweep, run_sweep

__all__ = [
    "BACKENDS",
    "RunFailed",
    "RunOutcome",
    "SweepResult",
    "SweepSpec",
    "Task",
    "default_workers",
    "parse_grid",
    "read_sweep",
    "run_one",
    "run_status",
    "run_sweep",
]
