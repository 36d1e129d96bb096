"""Approximation quality of the telescoping model vs the linearization at init (paper Fig. 2, 7, 8).

MNIST 3-vs-5 (n = 1000, 8×8), a 64-200-200-1 ReLU MLP trained with squared loss and batch
200 under five settings (SGD, AdamW, SGD + momentum, SGD + weight decay, SGD with an
output sigmoid) and a small grid of learning rates each. On the test inputs, at
log-spaced steps, it logs |f − f̃| (``telescope/abs_err``), |f − f_lin|
(``linearized/abs_err``) and the misclassification rates of f, f̃ and f_lin
(threshold 0.5). Digest: shared/papers/telescoping-lens.md §2.

# NOTE [approximation learning rates]
# The paper does not state its learning rates (digest §2.1). We use SGD-family
# γ ∈ {0.003, 0.01, 0.03} and AdamW γ ∈ {3e-5, 1e-4, 3e-4}: each grid spans the
# "negligible error" to "visible error" range on this task (at SGD γ = 0.1 the
# telescoping error exceeds the linearized one, as the digest's own check found at
# large γ), and the AdamW grid is 100× smaller, about what AdamW needs for the same
# approximation error here.
#
# NOTE [approximation fixed gamma T]
# Fact 4 of the digest (§9, an [X] check, not a paper claim): at a fixed product γ·t the
# telescoping error scales about ∝ γ while the linearized one stays flat. Every unit also
# records at its "matched step" t_γ = round(γ_min · steps / γ) (γ_min the smallest γ of its
# setting), so all γ of a setting are compared at the same γ·t = γ_min · steps (SGD quick:
# t = 2000, 600, 200 for γ = 0.003, 0.01, 0.03). This adds at most one logged step per unit
# (a setting with one γ adds none: its matched step is ``steps``). The summary fits the
# log-log slope of the telescoping error against γ at those steps (1 = ∝ γ) and gives the
# spread (max/min) of the linearized error.
#
# NOTE [approximation demo preset]
# ``make demo`` runs the ``demo`` preset: all five settings, the smallest γ of each, one
# seed, quick's 2,000 steps: 5 units, 10,000 steps against quick's 60,000, and each unit is
# quick's seed-0 unit of that γ step for step. About 2 minutes on the shared 2-core machine
# (measured: docs/approximation.md). It still shows fact 1: the f_lin error is orders of
# magnitude above the telescoping one in every setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from telescope.data import binary_task
from telescope.experiments.base import RunContext, bounded
from telescope.experiments.units import Unit, run_units, unit_workers
from telescope.lens import Lens
from telescope.measures import binary_error, binary_metrics
from telescope.models import MLP
from telescope.train import fit, log_steps, make_optimizer, squared_loss

SETTINGS = ("sgd", "adamw", "momentum", "weight_decay", "sigmoid")


@dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    classes: tuple[int, ...] = bounded((3, 5), ge=0, le=9, nonempty=True)
    n_train: int = bounded(1000, ge=1)
    n_test: int = bounded(1000, ge=1)
    image_size: int = bounded(8, ge=1)
    width: int = bounded(200, ge=1)
    depth: int = bounded(3, ge=1)
    batch_size: int = bounded(200, ge=1)
    steps: int = bounded(5000, ge=1)
    seeds: int = bounded(4, ge=1)
    seed: int = bounded(0, ge=0)
    settings: tuple[str, ...] = bounded(SETTINGS, choices=SETTINGS, nonempty=True)
    sgd_lrs: tuple[float, ...] = bounded((0.003, 0.01, 0.03), gt=0)
    adamw_lrs: tuple[float, ...] = bounded((3e-5, 1e-4, 3e-4), gt=0)
    momentum: float = bounded(0.9, ge=0, lt=1)
    weight_decay: float = bounded(0.1, ge=0)
    betas: tuple[float, ...] = bounded((0.9, 0.99), ge=0, lt=1)
    log_points: int = bounded(40, ge=1)
    loss: str = bounded("mse", choices=("mse", "half_mse"))
    dtype: str = bounded("float32", choices=("float32", "float64"))

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(dataset="digits", n_train=200, n_test=100, width=32, batch_size=50, steps=60,
                     seeds=1, settings=("sgd", "adamw"), sgd_lrs=(0.05,), adamw_lrs=(1e-3,),
                     log_points=6),
        "quick": dict(steps=2000, seeds=2),
        # NOTE [approximation demo preset]
        "demo": dict(steps=2000, seeds=1, sgd_lrs=(0.003,), adamw_lrs=(3e-5,)),
        "paper": dict(),
    }

    def lrs(self, setting: str) -> tuple[float, ...]:
        return self.adamw_lrs if setting == "adamw" else self.sgd_lrs

    def matched_step(self, setting: str, lr: float) -> int:
        """The step t at which γ·t = γ_min·steps for ``setting`` (NOTE [approximation fixed gamma T])."""
        return matched_step(min(self.lrs(setting)), lr, self.steps)


def matched_step(lr_min: float, lr: float, steps: int) -> int:
    """round(lr_min · steps / lr), at least 1: the step where γ·t equals lr_min·steps."""
    return max(1, int(round(lr_min * steps / lr)))


def optimizer_for(setting: str, params, lr: float, cfg: Config) -> torch.optim.Optimizer:
    if setting == "adamw":
        return make_optimizer("adamw", params, lr=lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    if setting == "momentum":
        return make_optimizer("sgd", params, lr=lr, momentum=cfg.momentum)
    if setting == "weight_decay":
        return make_optimizer("sgd", params, lr=lr, weight_decay=cfg.weight_decay)
    return make_optimizer("sgd", params, lr=lr)


def run_unit(cfg: Config, data, setting: str, lr: float, seed: int, sink, device: str, progress=None) -> None:
    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(seed)
    model = MLP(data.x_train.shape[1], cfg.width, cfg.depth, 1,
                output="sigmoid" if setting == "sigmoid" else None).to(device=device, dtype=dtype)
    x, y = data.x_train.to(device, dtype), data.y_train.to(device, dtype)
    x_test, y_test = data.x_test.to(device, dtype), data.y_test.to(device, dtype)
    lens = Lens(model, {"test": x_test})
    opt = optimizer_for(setting, model.parameters(), lr, cfg)
    loss_fn = squared_loss(cfg.loss)
    checkpoints = set(log_steps(cfg.steps, cfg.log_points)) | {cfg.matched_step(setting, lr)}

    def record(step: int, mean_loss: float | None) -> None:
        p = lens.predictions("test")
        net = p["network"].double()
        metrics = {
            "telescope/abs_err": float((net - p["telescope"]).abs().mean()),
            "linearized/abs_err": float((net - p["linearized"]).abs().mean()),
            **binary_metrics(net, y_test),
            "telescope/error": binary_error(p["telescope"], y_test),
            "linearized/error": binary_error(p["linearized"], y_test),
        }
        sink.log_dict(step, "test", metrics)
        with torch.no_grad():
            sink.log_dict(step, "train", binary_metrics(model(x), y))
        if mean_loss is not None:
            sink.log(step, "train", "loss", mean_loss)

    gen = torch.Generator().manual_seed(seed)
    fit(model, opt, loss_fn, x, y, steps=cfg.steps, batch_size=cfg.batch_size, generator=gen,
        lens=lens, record_at=(checkpoints, record), progress=progress)


def run(cfg: Config, sink, ctx: RunContext = RunContext()) -> dict[str, Any]:
    data = binary_task(cfg.dataset, tuple(cfg.classes), n_train=cfg.n_train, n_test=cfg.n_test,
                       size=cfg.image_size, seed=cfg.seed, root=ctx.data_dir)
    units = [Unit(f"{setting}/lr={lr:g}/seed={seed}", dict(setting=setting, lr=float(lr), seed=int(seed)),
                  (cfg, data, setting, lr, seed), dict(device=ctx.device))
             for setting in cfg.settings for lr in cfg.lrs(setting) for seed in range(cfg.seed, cfg.seed + cfg.seeds)]
    bar = sink.progress(len(units) * cfg.steps, "approximation")
    run_units(sink, units, run_unit, workers=unit_workers(ctx), progress=bar, steps_per_unit=cfg.steps)
    bar.close()
    return summarize(sink.metrics(), cfg.steps)


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (x, y: 1-D, positive, at least two points)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    return float(np.polyfit(lx, ly, 1)[0])


HEADLINE = ("*/ratio_linearized_to_telescope",)   # fact 1, printed first after a run (and by `telescope demo`)


def summarize(frame, steps: int) -> dict[str, Any]:
    """Per setting and lr: final errors (mean over seeds), their ratio, the largest accuracy
    gaps to the network; per setting with several lrs: the errors at the matched steps of a
    fixed γ·t (NOTE [approximation fixed gamma T]), the telescoping error's log-log slope in
    γ there and the linearized error's max/min spread."""
    out: dict[str, Any] = {}
    test = frame[frame["split"] == "test"]
    wide = test.pivot_table(index=["setting", "lr", "seed", "step"], columns="name", values="value").reset_index()
    for setting, gs in wide.groupby("setting"):
        lrs = sorted(gs["lr"].unique())
        if len(lrs) < 2:
            continue
        tel, lin = [], []
        for lr in lrs:
            t = matched_step(lrs[0], lr, steps)
            at = gs[(gs["lr"] == lr) & (gs["step"] == t)]
            if at.empty:   # a run stored before matched steps were logged
                break
            tel.append(float(at["telescope/abs_err"].mean()))
            lin.append(float(at["linearized/abs_err"].mean()))
            pre = f"{setting}/fixed_gT/lr={lr:g}"
            out[f"{pre}/step"] = t
            out[f"{pre}/telescope_abs_err"] = tel[-1]
            out[f"{pre}/linearized_abs_err"] = lin[-1]
        else:
            out[f"{setting}/fixed_gT/gamma_T"] = float(lrs[0] * steps)
            out[f"{setting}/fixed_gT/telescope_slope"] = loglog_slope(lrs, tel)
            out[f"{setting}/fixed_gT/linearized_spread"] = float(max(lin) / min(lin))
    for (setting, lr), g in wide.groupby(["setting", "lr"]):
        last = g[g["step"] == g["step"].max()]
        prefix = f"{setting}/lr={lr:g}"
        out[f"{prefix}/telescope_abs_err"] = float(last["telescope/abs_err"].mean())
        out[f"{prefix}/linearized_abs_err"] = float(last["linearized/abs_err"].mean())
        out[f"{prefix}/ratio_linearized_to_telescope"] = float(
            last["linearized/abs_err"].mean() / max(last["telescope/abs_err"].mean(), 1e-300))
        out[f"{prefix}/max_acc_gap_telescope_pp"] = float(100 * (g["telescope/error"] - g["error"]).abs().max())
        out[f"{prefix}/max_acc_gap_linearized_pp"] = float(100 * (g["linearized/error"] - g["error"]).abs().max())
        out[f"{prefix}/final_test_error"] = float(last["error"].mean())
    out["steps"] = steps
    return out
