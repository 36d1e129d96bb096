"""Grokking control: standard initialization (α = 1), with and without an output sigmoid (paper Fig. 4 col. 3, Fig. 13).

The ``grokking-mnist`` study (same data, model, AdamW with warmup and λ = 0.1) at α = 1:
the paper reports that a generalizing solution is found in about 10² steps instead of
10⁵, train and test behave alike (no grokking), and effective parameters are much lower
than with a large initialization, lowest with the sigmoid (acceptance fact 13). The
quick preset matches ``grokking-mnist``'s quick problem size (NOTE [grokking quick
preset] in telescope.experiments.grokking_mnist) so the two can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from telescope.experiments import grokking_mnist
from telescope.experiments.base import RunContext, bounded


@dataclass(frozen=True)
class Config(grokking_mnist.Config):
    alphas: tuple[float, ...] = bounded((1.0,), gt=0, nonempty=True)
    outputs: tuple[str, ...] = bounded(("linear", "sigmoid"), choices=grokking_mnist.OUTPUTS, nonempty=True)
    steps: int = bounded(1000, ge=1)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(dataset="digits", n_train=60, n_test=100, n_probe=40, width=16, lr=3e-3, warmup=10,
                     batch_size=20, steps=60, seeds=1, log_points=8),
        "quick": dict(n_train=200, n_probe=100, width=100, lr=1e-4, weight_decay=1.0, batch_size=200, steps=1000, seeds=1,
                      log_points=25, smoother_dtype="float32", methods=("sketch",)),
        "paper": dict(),
    }


def run(cfg: Config, sink, ctx: RunContext = RunContext()) -> dict[str, Any]:
    return grokking_mnist.run(cfg, sink, ctx, name="grokking-control")
