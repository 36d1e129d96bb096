"""Grokking control: standard initialization (α = 1), with and without an output sigmoid (paper Fig. 4 col. 3, Fig. 13).

The ``grokking-mnist`` study (same data, model, AdamW with warmup and λ = 0.1) at α = 1:
the paper reports that a generalizing solution is found in about 10² steps instead of
10⁵, train and test behave alike (no grokking), and effective parameters are much lower
than with a large initialization, lowest with the sigmoid (acceptance fact 13). The
quick preset matches ``grokking-mnist``'s quick problem size (NOTE [grokking quick
preset] in telescope.experiments.grokking_mnist) so the two can be compared.

# NOTE [control reference]
# Every preset also trains ``reference_alpha`` (default 6, linear output) with the same settings
# and steps, so that the figure draws the large-initialization reference and the summary compares
# at matched steps (``--set reference_alpha=none`` drops it). Keys ``alpha=1/output=O/method=M/ref_*``
# (means over seeds): at ``match_step``, the first logged step where the control's seed-mean test error
# is below 10 % (the last step when it never is), the reference's test error and p_train/p_test there
# (``ref_test_error_at_match``, ``ref_p_train_at_match``, ``ref_p_test_at_match``) beside the control's
# own (``p_train_at_match``, ``p_test_at_match``), and the same at the last step (``ref_p_*_at_end``);
# ``speedup`` is the reference's ``step_generalize`` over the control's, or, when the reference does
# not reach 10 % within the run, ``speedup_at_least`` = last step / the control's ``step_generalize``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from telescope.experiments import grokking_mnist
from telescope.experiments.base import RunContext, bounded


@dataclass(frozen=True)
class Config(grokking_mnist.Config):
    alphas: tuple[float, ...] = bounded((1.0,), gt=0, nonempty=True)
    outputs: tuple[str, ...] = bounded(("linear", "sigmoid"), choices=grokking_mnist.OUTPUTS, nonempty=True)
    steps: int = bounded(1000, ge=1)
    reference_alpha: float | None = bounded(6.0, gt=0)   # NOTE [control reference]; None: no reference

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(dataset="digits", n_train=60, n_test=100, n_probe=40, width=16, lr=3e-3, warmup=10,
                     batch_size=20, steps=60, seeds=1, log_points=8),
        "quick": dict(n_train=200, n_probe=100, width=100, lr=1e-4, weight_decay=1.0, batch_size=200, steps=1000, seeds=1,
                      log_points=25, smoother_dtype="float32", methods=("sketch",)),
        "paper": dict(),
    }


def _mean_curve(frame: pd.DataFrame, alpha: float, output: str, method: str, split: str, name: str) -> pd.Series:
    """Seed-mean of one logged quantity per step for one setting."""
    part = frame[(frame["alpha"] == alpha) & (frame["output"] == output) & (frame["method"] == method)
                 & (frame["split"] == split) & (frame["name"] == name)]
    return part.groupby("step")["value"].mean().sort_index()


def compare_to_reference(frame: pd.DataFrame, summary: dict[str, Any], reference: float) -> dict[str, Any]:
    """The ``ref_*``, ``*_at_match`` and speed-up keys of NOTE [control reference] for every setting of
    ``frame`` other than (``reference``, linear); {} when the reference is not in ``frame``."""
    if "method" not in frame.columns:
        frame = frame.assign(method="exact")
    out: dict[str, Any] = {}
    settings = frame[["alpha", "output", "method"]].drop_duplicates().itertuples(index=False)
    for alpha, output, method in settings:
        if alpha == reference and output == "linear":
            continue
        ref = {(split, name): _mean_curve(frame, reference, "linear", method, split, name)
               for split in ("train", "test") for name in ("error", "smoother/p_eff")}
        if ref[("test", "error")].empty:
            return {}
        own = {(split, name): _mean_curve(frame, alpha, output, method, split, name)
               for split in ("train", "test") for name in ("error", "smoother/p_eff")}
        err = own[("test", "error")]
        below = err.index[err.to_numpy() < grokking_mnist.GENERALIZED]
        match, end = (int(below[0]) if len(below) else int(err.index[-1])), int(err.index[-1])
        prefix = f"alpha={alpha:g}/output={output}/method={method}"
        ref_prefix = f"alpha={reference:g}/output=linear/method={method}"

        def at(series: pd.Series, step: int) -> float | None:
            return float(series.loc[step]) if step in series.index and math.isfinite(series.loc[step]) else None

        vals: dict[str, Any] = {"match_step": match,
                                "ref_test_error_at_match": at(ref[("test", "error")], match),
                                "test_error_at_match": at(err, match)}
        for split in ("train", "test"):
            vals[f"p_{split}_at_match"] = at(own[(split, "smoother/p_eff")], match)
            vals[f"ref_p_{split}_at_match"] = at(ref[(split, "smoother/p_eff")], match)
            vals[f"ref_p_{split}_at_end"] = at(ref[(split, "smoother/p_eff")], end)
        mine, theirs = summary.get(f"{prefix}/step_generalize"), summary.get(f"{ref_prefix}/step_generalize")
        vals["speedup"] = theirs / mine if mine and theirs else None
        vals["speedup_at_least"] = end / mine if mine and not theirs else None
        out.update({f"{prefix}/{k}": v for k, v in vals.items()})
    return out


def run(cfg: Config, sink, ctx: RunContext = RunContext()) -> dict[str, Any]:
    extra = ((cfg.reference_alpha, "linear"),) if cfg.reference_alpha is not None else ()
    summary = grokking_mnist.run(cfg, sink, ctx, name="grokking-control", extra=extra)
    if cfg.reference_alpha is not None:
        summary.update(compare_to_reference(sink.metrics(), summary, float(cfg.reference_alpha)))
        summary["reference_alpha"] = float(cfg.reference_alpha)
    return summary
