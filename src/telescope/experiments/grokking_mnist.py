"""Grokking on MNIST with a large initialization, seen through effective parameters (paper Fig. 4 col. 2, Fig. 12).

MNIST 3-vs-5 at 8×8 (n = 1000), a 3-layer width-200 ReLU MLP whose initial parameters are
all scaled by α ∈ {5, 6, 7}, squared loss on labels {0, 1}, AdamW (γ = 1e-4 after a
100-step linear warmup, λ = 0.1, β = (0.9, 0.99), batch 200). At log-spaced steps it logs
train/test misclassification ``error``, ``mse``, the telescoping model's ``telescope/abs_err``
and the smoother's ``smoother/p_eff`` and ``smoother/residual`` on train and test
(digest §5.5, §5.7; acceptance facts 12–13). ``grokking-control`` is the same study at
α = 1 with and without an output sigmoid (Fig. 4 col. 3, Fig. 13).

# NOTE [grokking quick preset]
# The paper's run (n = 1000, p = 53,601, T = 1e5, γ = 1e-4) costs about 2·N·p·n ≈ 2e11
# flops per step for the smoother: a GPU job (hours). The quick preset keeps every
# ingredient (large α, AdamW with warmup and λ = 0.1, β = (0.9, 0.99), squared loss) and
# shrinks the problem so it runs in minutes on a CPU: n = 200 training images, a width-48
# MLP (p ≈ 5.5k), the smoother's test probe on 100 test images (errors still use all
# 1000), batch 100, γ = 1e-3 (LMT22's rate; 10× the paper's, so generalization arrives in
# a few thousand steps instead of 1e5), 5000 steps, one α = 6 and float32 smoother state
# (the residual metric shows it stays within the telescoping error). Measured outcome in
# docs/smoother.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from telescope.data import binary_task
from telescope.errors import ConfigError
from telescope.experiments.base import RunContext
from telescope.lens import Lens, SmootherSpec, smoother_metrics
from telescope.models import MLP, scale_init
from telescope.train import RecordAt, fit, log_steps, make_optimizer, squared_loss

OUTPUTS = ("linear", "sigmoid")


@dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    classes: tuple[int, ...] = (3, 5)
    n_train: int = 1000
    n_test: int = 1000
    n_probe: int = 1000                 # test images the smoother tracks (p_test); errors use all n_test
    image_size: int = 8
    width: int = 200
    depth: int = 3
    alphas: tuple[float, ...] = (5.0, 6.0, 7.0)
    outputs: tuple[str, ...] = ("linear",)
    lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, ...] = (0.9, 0.99)
    batch_size: int = 200
    steps: int = 100_000
    seeds: int = 4
    seed: int = 0
    log_points: int = 40
    loss: str = "mse"
    dtype: str = "float32"
    smoother_dtype: str = "float64"
    memory_budget_gb: float = 8.0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(dataset="digits", n_train=60, n_test=100, n_probe=40, width=16, alphas=(6.0,),
                     lr=3e-3, warmup=10, batch_size=20, steps=60, seeds=1, log_points=8),
        "quick": dict(n_train=200, n_probe=100, width=48, alphas=(6.0,), lr=1e-3, batch_size=100, steps=5000,
                      seeds=1, log_points=30, smoother_dtype="float32"),
        "paper": dict(),
    }

    def validate(self) -> None:
        name = type(self).__module__.rsplit(".", 1)[-1].replace("_", "-")
        bad = [o for o in self.outputs if o not in OUTPUTS]
        if bad:
            raise ConfigError(f"{name}: unknown output(s) {bad}; choose from {', '.join(OUTPUTS)}")
        if self.dtype not in ("float32", "float64") or self.smoother_dtype not in ("float32", "float64"):
            raise ConfigError(f"{name}: dtype={self.dtype!r}, smoother_dtype={self.smoother_dtype!r}; "
                              "choose float32 or float64")
        if self.steps < 1 or self.seeds < 1 or self.batch_size < 1 or self.warmup < 0:
            raise ConfigError(f"{name}: steps, seeds and batch_size must be ≥ 1 and warmup ≥ 0")
        if not 1 <= self.n_probe <= self.n_test:
            raise ConfigError(f"{name}: n_probe={self.n_probe} must lie in [1, n_test={self.n_test}]")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise ConfigError(f"{name}: alphas={self.alphas} must be positive")


def run_unit(cfg: Config, data, alpha: float, output: str, seed: int, sink, device: str, progress=None) -> None:
    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(seed)
    model = MLP(data.x_train.shape[1], cfg.width, cfg.depth, 1,
                output="sigmoid" if output == "sigmoid" else None).to(device=device, dtype=dtype)
    scale_init(model, alpha)
    x, y = data.x_train.to(device, dtype), data.y_train.to(device, dtype)
    x_test, y_test = data.x_test.to(device, dtype), data.y_test.to(device, dtype)
    spec = SmootherSpec(x, y, loss=cfg.loss, dtype=cfg.smoother_dtype, memory_budget_gb=cfg.memory_budget_gb)
    lens = Lens(model, {"test": x_test[:cfg.n_probe]}, smoother=spec)
    opt = make_optimizer("adamw", model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    warmup = max(cfg.warmup, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / warmup))
    loss_fn = squared_loss(cfg.loss)
    checkpoints = set(log_steps(cfg.steps, cfg.log_points))

    def record(step: int, mean_loss: float | None) -> None:
        with torch.no_grad():
            for split, xs, ys in (("train", x, y), ("test", x_test, y_test)):
                f = model(xs).double()
                sink.log_dict(step, split, {
                    "mse": float(((f - ys.double()) ** 2).mean()),
                    "error": float(((f > 0.5).double() != ys.double()).double().mean()),
                })
            weight_norm = math.sqrt(sum(float(p.double().pow(2).sum()) for p in model.parameters()))
        pred = lens.predictions("test", linearized=False)
        sink.log(step, "test", "telescope/abs_err",
                 float((pred["network"].double() - pred["telescope"].double()).abs().mean()))
        for split, values in smoother_metrics(lens).items():
            sink.log_dict(step, split, values)
        sink.log(step, "train", "weight_norm", weight_norm)
        if mean_loss is not None:
            sink.log(step, "train", "loss", mean_loss)

    recorder = RecordAt(checkpoints, record)
    recorder.start()
    gen = torch.Generator().manual_seed(seed)
    fit(model, opt, loss_fn, x, y, steps=cfg.steps, batch_size=cfg.batch_size, generator=gen,
        lens=lens, scheduler=sched, callbacks=[recorder], progress=progress)


def run(cfg: Config, sink, ctx: RunContext = RunContext(), *, name: str = "grokking-mnist") -> dict[str, Any]:
    data = binary_task(cfg.dataset, tuple(cfg.classes), n_train=cfg.n_train, n_test=cfg.n_test,
                       size=cfg.image_size, seed=cfg.seed, root=ctx.data_dir)
    units = [(float(a), o, cfg.seed + k) for a in cfg.alphas for o in cfg.outputs for k in range(cfg.seeds)]
    bar = sink.progress(len(units) * cfg.steps, name)
    for alpha, output, seed in units:
        key = f"alpha={alpha:g}/output={output}/seed={seed}"
        if sink.unit_done(key):
            bar.update(cfg.steps)
            continue
        with sink.unit(key, alpha=alpha, output=output, seed=int(seed)) as unit:
            run_unit(cfg, data, alpha, output, seed, unit, ctx.device, progress=bar)
    bar.close()
    return summarize(sink.metrics(), cfg.steps)


def _first(steps: np.ndarray, ok: np.ndarray) -> float:
    hit = np.flatnonzero(ok)
    return float(steps[hit[0]]) if hit.size else float("nan")


def summarize(frame, steps: int) -> dict[str, Any]:
    """Per (α, output), means over seeds of: the step where training is fitted (train error
    ≤ 1%), the step of generalization (test error within 0.02 of its final value), the step
    where p_test first falls 10% below p_train (the p gap), and final errors and p."""
    out: dict[str, Any] = {"steps": steps}
    wide = frame.pivot_table(index=["alpha", "output", "seed", "step"], columns=["split", "name"],
                             values="value").sort_index()
    for (alpha, output), g in wide.groupby(level=["alpha", "output"]):
        rows: dict[str, list[float]] = {}
        for _, run_ in g.groupby(level="seed"):
            st = run_.index.get_level_values("step").to_numpy()
            err_tr, err_te = run_[("train", "error")].to_numpy(), run_[("test", "error")].to_numpy()
            p_tr, p_te = run_[("train", "smoother/p_eff")].to_numpy(), run_[("test", "smoother/p_eff")].to_numpy()
            vals = {
                "step_fit": _first(st, err_tr <= 0.01),
                "step_generalize": _first(st, err_te <= err_te[-1] + 0.02),
                "step_p_gap": _first(st, (st > 0) & (p_te < 0.9 * p_tr)),
                "final_train_error": float(err_tr[-1]),
                "final_test_error": float(err_te[-1]),
                "test_error_at_fit": float(err_te[np.flatnonzero(err_tr <= 0.01)[0]]) if (err_tr <= 0.01).any()
                else float("nan"),
                "final_p_train": float(p_tr[-1]),
                "final_p_test": float(p_te[-1]),
                "max_p_train": float(np.nanmax(p_tr)),
                "final_residual_test": float(run_[("test", "smoother/residual")].to_numpy()[-1]),
                "final_telescope_abs_err": float(run_[("test", "telescope/abs_err")].to_numpy()[-1]),
            }
            for key, v in vals.items():
                rows.setdefault(key, []).append(v)
        prefix = f"alpha={alpha:g}/output={output}"
        for key, vs in rows.items():
            out[f"{prefix}/{key}"] = None if all(np.isnan(vs)) else float(np.nanmean(vs))
    return out
