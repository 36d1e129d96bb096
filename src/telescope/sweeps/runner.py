"""One run, without printing: resolve the config, open its run directory, run, store.

:func:`run_one` is the core of ``telescope run`` and of every sweep task, on every
backend: the same function, so a run's results do not depend on how it was launched.

The run's life cycle (DONE, FAILED, :func:`~telescope.store.run_status`) is the store's:
NOTE [run status files] in :mod:`telescope.store.rundir`.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from telescope.errors import TelescopeError
from telescope.store import FAILED, RunDir, record_failure, run_status  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


class RunFailed(TelescopeError):
    """A run raised an unexpected error; its traceback is in the run directory."""


@dataclass(frozen=True)
class RunOutcome:
    """What :func:`run_one` did: ``status`` is ``"done"`` (ran now) or ``"skipped"``."""

    path: Path
    status: str
    seconds: float = 0.0


def resolve(experiment: str, preset: str, seed: int | None, sets: Mapping[str, Any]):
    """``(experiment object, config)`` for a preset, a seed and ``key=value`` overrides."""
    from telescope import experiments
    from telescope.experiments.base import resolve_config

    exp = experiments.get(experiment)
    return exp, resolve_config(experiment, exp.config_cls, preset, seed=seed, overrides=dict(sets))


def run_meta(preset: str, device: str, data_dir: str | None, sets: Mapping[str, Any],
             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``meta`` block of ``config.json`` (not part of the run's identity)."""
    import torch

    from telescope import __version__

    return {"preset": preset, "device": device, "data_dir": str(data_dir) if data_dir else None,
            "telescope": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "overrides": {k: str(v) for k, v in sets.items()}, **dict(extra or {})}


def open_run(experiment: str, preset: str, seed: int | None, sets: Mapping[str, Any], out: str | Path,
             device: str = "cpu", data_dir: str | None = None, *, meta: Mapping[str, Any] | None = None,
             show_progress: bool = False, emit: Callable[[str], None] | None = None):
    """Resolve the config and open (or create) its run directory: ``(experiment, config, RunDir)``."""
    from telescope.errors import ConfigError
    from telescope.experiments.base import config_to_dict

    exp, config = resolve(experiment, preset, seed, sets)
    if device != "cpu" and exp.cpu_only:
        raise ConfigError(f"--device {device}: {experiment} runs on the CPU only ({exp.cpu_only}); use --device cpu")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    run = RunDir.open(out, experiment, config_to_dict(config), run_meta(preset, device, data_dir, sets, meta),
                      show_progress=show_progress, emit=emit)
    return exp, config, run


def run_one(experiment: str, preset: str, seed: int | None, sets: Mapping[str, Any], out: str | Path,
            device: str = "cpu", data_dir: str | None = None, *, force: bool = False,
            show_progress: bool = False, meta: Mapping[str, Any] | None = None,
            attempt: int = 1, emit: Callable[[str], None] | None = None,
            workers: int | None = None) -> RunOutcome:
    """Run one experiment into ``out/<experiment>-<config hash>``, or skip it if already ``DONE``.

    Raises :class:`~telescope.errors.ConfigError` for a bad config (nothing written but
    possibly ``config.json``), the experiment's own :class:`TelescopeError` (e.g.
    ``DivergenceError``) or :class:`RunFailed` for an unexpected error; in both failure
    cases ``FAILED`` is written first (see NOTE [run status files]) and, for unexpected
    errors, ``error.log`` holds the traceback. ``KeyboardInterrupt`` leaves the directory
    as interrupted (no ``FAILED``): a rerun resumes it. A ``DONE`` run whose files do not
    read back is repaired from its parts or redone (``RunDir.settle``). ``emit`` receives
    progress lines (pass it when the output is not a terminal). ``workers``: processes that run
    the study's units at once (``RunContext.workers``; None: the device's default, NOTE [units in
    parallel] in :mod:`telescope.experiments.units`); not part of the run's identity.
    """
    from telescope.experiments.base import RunContext

    ctx = RunContext(device=device, data_dir=Path(data_dir) if data_dir else None, workers=workers)
    exp, config, run = open_run(experiment, preset, seed, sets, out, device, data_dir, meta=meta,
                                show_progress=show_progress, emit=emit)
    if not force and run.settle():
        return RunOutcome(run.path, "skipped")
    if force:
        run.reset()
    with contextlib.suppress(FileNotFoundError):
        (run.path / FAILED).unlink()
    start = time.perf_counter()
    try:
        summary = exp.run(config, run, ctx)
    except KeyboardInterrupt:
        raise
    except TelescopeError as exc:
        record_failure(run.path, exc, attempt)
        raise
    except Exception as exc:
        record_failure(run.path, exc, attempt)
        (run.path / "error.log").write_text(traceback.format_exc())
        raise RunFailed(f"{experiment} failed unexpectedly ({type(exc).__name__}: {exc}); the traceback is in "
                        f"{run.path / 'error.log'}; finished parts are kept") from None
    run.finish(summary)
    return RunOutcome(run.path, "done", time.perf_counter() - start)
