"""Modules a local sweep worker needs, imported once in the forkserver (NOTE [warm workers]).

Importing torch, scikit-learn and the experiment modules costs a fresh process several
CPU seconds — longer than many ``tiny`` runs. The local backend starts its workers from a
forkserver that has imported this module, so every worker (and every replacement after a
worker dies) begins with them already loaded. A module that fails to import here is
skipped: the worker imports it again when a task needs it and reports the error there.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# torch._dynamo is imported by the first optimizer built (seconds); sklearn.datasets by the
# digits of every tiny preset.
BASE = ("torch", "torch._dynamo", "numpy", "sklearn.datasets", "telescope.store", "telescope.sweeps.worker", "telescope.sweeps.runner",
        "telescope.experiments")


def preload() -> list[str]:
    """Import the worker's modules and every registered experiment; the names that failed."""
    failed = []
    for name in BASE:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a broken optional module must not stop the forkserver
            failed.append(name)
    try:
        from telescope.experiments import STUDIES
    except Exception:  # noqa: BLE001
        return failed
    for path in (f"telescope.experiments.{module}" for module in STUDIES.values()):
        try:
            importlib.import_module(path)
        except Exception:  # noqa: BLE001
            failed.append(path)
    try:
        _warm_forward_ad()
    except Exception:  # noqa: BLE001
        failed.append("forward-mode AD")
    if failed:
        log.debug("sweep preload skipped %s", failed)
    return failed


def _warm_forward_ad() -> None:
    """The first dual tensor compiles torch's forward-AD decompositions (TorchScript, ~1 s)."""
    import torch
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        fwAD.make_dual(torch.zeros(1), torch.zeros(1))


preload()
