"""Grokking on MNIST with a large initialization, seen through effective parameters (paper Fig. 4 col. 2, Fig. 12).

MNIST 3-vs-5 at 8×8 (n = 1000), a 3-layer width-200 ReLU MLP whose initial parameters are
all scaled by α ∈ {5, 6, 7}, squared loss on labels {0, 1}, AdamW (γ = 1e-4 after a
100-step linear warmup, λ = 0.1, β = (0.9, 0.99), batch 200). At log-spaced steps it logs
train/test misclassification ``error``, ``mse``, the telescoping model's ``telescope/abs_err``
and the smoother's ``smoother/p_eff``, ``smoother/residual`` and ``smoother/valid`` (NOTE [smoother
validity] in telescope/lens/smoother.py) on train and test
(digest §5.5, §5.7; acceptance facts 12–13). ``grokking-control`` is the same study at
α = 1 with and without an output sigmoid (Fig. 4 col. 3, Fig. 13).

# NOTE [grokking quick preset]
# The paper's run (n = 1000, p = 53,601, T = 1e5, γ = 1e-4) costs about 2·N·p·n ≈ 2e11
# flops per step for the exact smoother: a GPU job (hours). Mechanism the quick preset keeps:
# at large α the net fits the training set in the lazy regime (kernel regime of a huge
# initial function, whose random part stays on test points), then AdamW's decoupled decay
# shrinks the weights by (1 − γλ) per step, e-fold time 1/(γλ), and the test error falls once
# the norm has come down by about α (≈ ln α/(γλ) steps); fitting takes ~ a few hundred
# steps at γ = 1e-3, so λ sets how much later generalization comes. Measured without the
# smoother (n = 200, α = 6, γ = 1e-3, λ = 0.1): width 48 fits at ~750 steps with test error
# 0.22 and is below 10 % at ~3000 (a 4× delay); width 100 fits at ~560 with test error 0.25,
# below 10 % at ~4500 (8×); width 200 fits at ~320 (10×) but costs 3× more; n = 1000 does
# not grok at this rate (test error 0.07 at fit: the lazy kernel generalizes with more data).
# Quick = n = 200 training images, width 100 (p = 16,701), α = 6, the paper's γ = 1e-4 with
# its 100-step warmup, β = (0.9, 0.99), batch 200 (here the full training set), and λ = 1.0:
# ten times the paper's decay, so that the decay time 1/(γλ) = 1e4 steps fits 8000 steps
# (with λ = 0.1 the test error falls below 10 % only at ~4e4 steps, a 1-hour CPU run).
# Measured (docs/grokking.md): fit at ~1250 steps with test error 0.22, below 10 % at ~4300.
# The earlier quick preset used LMT22's γ = 1e-3 and λ = 0.1 (6000 steps); at that rate the
# AdamW smoother's self-check failed ~800 steps after fitting, at γ = 1e-4 ~3000 steps after.
# The smoother's test probe covers 100 test images (errors use all 1000), float32 state and
# the sketch (K = 32, O(p·K) state; exact p⁰ by `--set methods=exact,sketch`,
# which runs the same training once per method and overlays p). The `full` preset (issue
# 10) takes all 5000 shared MNIST training images; 3-vs-5 has only ~1000 of them, so it
# learns odd vs even digits (task="parity"). Measured outcomes: docs/grokking.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from telescope.data import Split, binary_task
from telescope.data.images import digit_group_task
from telescope.errors import ConfigError
from telescope.experiments.base import RunContext, bounded
from telescope.experiments.units import Unit, run_units, unit_workers
from telescope.lens import (NEAR_EDGE, Lens, SmootherSpec, adam_sharpness, last_valid_step, self_check_valid,
                           smoother_metrics, step_near_edge)
from telescope.measures import binary_metrics, first_step, value_at, weight_norm
from telescope.models import MLP, scale_init
from telescope.train import fit, log_steps, squared_loss

OUTPUTS = ("linear", "sigmoid")
METHODS = ("exact", "sketch")
TASKS = ("pair", "parity")


@dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    task: str = bounded("pair", choices=TASKS)  # "pair": classes[0] → 0, [1] → 1; "parity": odd → 1
    classes: tuple[int, ...] = bounded((3, 5), ge=0, le=9, nonempty=True)
    n_train: int = bounded(1000, ge=1)
    n_test: int = bounded(1000, ge=1)
    n_probe: int = bounded(1000, ge=1)  # test images the smoother tracks (p_test); errors use all n_test
    image_size: int = bounded(8, ge=1)
    width: int = bounded(200, ge=1)
    depth: int = bounded(3, ge=1)
    alphas: tuple[float, ...] = bounded((5.0, 6.0, 7.0), gt=0, nonempty=True)
    outputs: tuple[str, ...] = bounded(("linear",), choices=OUTPUTS, nonempty=True)
    lr: float = bounded(1e-4, gt=0)
    warmup: int = bounded(100, ge=0)
    weight_decay: float = bounded(0.1, ge=0)
    betas: tuple[float, ...] = bounded((0.9, 0.99), ge=0, lt=1)
    adam_eps: float = bounded(1e-8, gt=0)  # ε in φ = √v̂ + ε (docs/grokking.md, session 5)
    batch_size: int = bounded(200, ge=1)
    steps: int = bounded(100_000, ge=1)
    seeds: int = bounded(4, ge=1)
    seed: int = bounded(0, ge=0)
    log_points: int = bounded(40, ge=1)
    loss: str = bounded("mse", choices=("mse", "half_mse"))
    dtype: str = bounded("float32", choices=("float32", "float64"))
    smoother_dtype: str = bounded("float64", choices=("float32", "float64"))
    memory_budget_gb: float = bounded(8.0, gt=0)
    methods: tuple[str, ...] = bounded(("exact",), choices=METHODS, nonempty=True)  # several: one training per method
    probes: int = bounded(32, ge=1)  # K, probe label vectors of the sketch

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(dataset="digits", n_train=60, n_test=100, n_probe=40, width=16, alphas=(6.0,),
                     lr=3e-3, warmup=10, batch_size=20, steps=60, seeds=1, log_points=8),
        "quick": dict(n_train=200, n_probe=100, width=100, alphas=(6.0,), lr=1e-4, weight_decay=1.0, batch_size=200,
                      steps=8000, seeds=1, log_points=30, smoother_dtype="float32", methods=("sketch",)),
        # Fig. 12's α ∈ {5, 6, 7} at the quick problem: three quick runs, ~17 min on one core (docs/grokking.md)
        "fig12": dict(n_train=200, n_probe=100, width=100, alphas=(5.0, 6.0, 7.0), lr=1e-4, weight_decay=1.0,
                      batch_size=200, steps=8000, seeds=1, log_points=30, smoother_dtype="float32",
                      methods=("sketch",)),
        # issue 10: every shared MNIST training image (odd vs even digits), the paper's model and
        # optimizer, the sketch (the exact state would be p × 5001 ≈ 1 GB per buffer); a GPU job
        "full": dict(task="parity", n_train=5000, n_test=1000, n_probe=500, alphas=(6.0,), seeds=1,
                     methods=("sketch",), smoother_dtype="float32", log_points=40),
        "paper": dict(),
    }

    def validate(self) -> None:
        name = type(self).__module__.rsplit(".", 1)[-1].replace("_", "-")
        if not 1 <= self.n_probe <= self.n_test:
            raise ConfigError(f"{name}: n_probe={self.n_probe} must lie in [1, n_test={self.n_test}]")
        if self.task == "parity" and self.dataset != "mnist":
            raise ConfigError(f"{name}: task={self.task!r} with dataset={self.dataset!r}; choose task 'pair', "
                              "or 'parity' with dataset 'mnist'")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"{name}: methods={self.methods}; give distinct entries of {', '.join(METHODS)}")
        if "sketch" in self.methods and self.probes < 2:
            raise ConfigError(f"{name}: probes={self.probes}; the sketch needs K ≥ 2 probe vectors "
                              "for a standard error")


def load_task(cfg: Config, root=None) -> Split:
    """The study's data: ``binary_task`` for ``task="pair"``; for ``task="parity"`` all ten MNIST
    digits, label 1 for odd ones (``digit_group_task``: balanced draws of ``n_train`` training
    images — the shared 5,000-image subset, or the full 60,000 where present — and ``n_test``
    test images, area-downsampled to ``image_size``² and flattened, in [0, 1])."""
    if cfg.task == "pair":
        return binary_task(cfg.dataset, tuple(cfg.classes), n_train=cfg.n_train, n_test=cfg.n_test,
                           size=cfg.image_size, seed=cfg.seed, root=root)
    return digit_group_task((1, 3, 5, 7, 9), n_train=cfg.n_train, n_test=cfg.n_test, size=cfg.image_size,
                            seed=cfg.seed, root=root)


def run_unit(cfg: Config, data, alpha: float, output: str, seed: int, sink, device: str, progress=None,
             method: str = "exact") -> None:
    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(seed)
    model = MLP(data.x_train.shape[1], cfg.width, cfg.depth, 1,
                output="sigmoid" if output == "sigmoid" else None).to(device=device, dtype=dtype)
    scale_init(model, alpha)
    x, y = data.x_train.to(device, dtype), data.y_train.to(device, dtype)
    x_test, y_test = data.x_test.to(device, dtype), data.y_test.to(device, dtype)
    spec = SmootherSpec(x, y, loss=cfg.loss, dtype=cfg.smoother_dtype, memory_budget_gb=cfg.memory_budget_gb,
                        method=method, probes=cfg.probes, seed=seed)
    lens = Lens(model, {"test": x_test[:cfg.n_probe]}, smoother=spec)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas),
                            eps=cfg.adam_eps)
    warmup = max(cfg.warmup, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / warmup))
    loss_fn = squared_loss(cfg.loss)
    checkpoints = set(log_steps(cfg.steps, cfg.log_points))

    def record(step: int, mean_loss: float | None) -> None:
        with torch.no_grad():
            for split, xs, ys in (("train", x, y), ("test", x_test, y_test)):
                sink.log_dict(step, split, binary_metrics(model(xs), ys))
        pred = lens.predictions("test", linearized=False)
        sink.log(step, "test", "telescope/abs_err",
                 float((pred["network"].double() - pred["telescope"].double()).abs().mean()))
        for split, values in smoother_metrics(lens).items():
            sink.log_dict(step, split, values)
        sink.log(step, "train", "weight_norm", weight_norm(model.parameters()))
        if step > 0:    # NOTE [adam edge of stability]: λ_max(γ·a·J_B diag(1/φ) J_Bᵀ) / 2(1+β1)/(1−β1)
            sink.log(step, "train", "adam/sharpness_ratio",
                     adam_sharpness(model, opt, x[:cfg.batch_size], loss=cfg.loss)["ratio"])
        if mean_loss is not None:
            sink.log(step, "train", "loss", mean_loss)

    gen = torch.Generator().manual_seed(seed)
    fit(model, opt, loss_fn, x, y, steps=cfg.steps, batch_size=cfg.batch_size, generator=gen,
        lens=lens, scheduler=sched, record_at=(checkpoints, record), progress=progress)


def run(cfg: Config, sink, ctx: RunContext = RunContext(), *, name: str = "grokking-mnist",
        extra: tuple[tuple[float, str], ...] = ()) -> dict[str, Any]:
    """Train every (α, output) of ``cfg.alphas`` × ``cfg.outputs``, then the (α, output) pairs of
    ``extra`` not already among them (grokking-control's α = 6 reference), each per method and seed."""
    data = load_task(cfg, ctx.data_dir)
    # NOTE [one training per method]: with several methods the same training (same seed: same
    # initialization and batches) runs once per smoother method; the smoother only observes, so
    # the error curves coincide and only p differs (exact p⁰ vs the sketch's estimate).
    settings = [(float(a), o) for a in cfg.alphas for o in cfg.outputs]
    settings += [(float(a), o) for a, o in extra if (float(a), o) not in settings]
    units = [Unit(f"alpha={a:g}/output={o}/method={m}/seed={seed}",
                  dict(alpha=a, output=o, method=m, seed=int(seed)),
                  (cfg, data, a, o, seed), dict(device=ctx.device, method=m))
             for a, o in settings for m in cfg.methods for seed in range(cfg.seed, cfg.seed + cfg.seeds)]
    bar = sink.progress(len(units) * cfg.steps, name)
    run_units(sink, units, run_unit, workers=unit_workers(ctx), progress=bar, steps_per_unit=cfg.steps)
    bar.close()
    return summarize(sink.metrics(), cfg.steps)


GENERALIZED = 0.10      # test error below which a run counts as generalized (summary and docs)
LABEL_RANGE = 1.0       # labels {0, 1}: the scale of the self-check's floor (NOTE [smoother validity])


def _valid_flags(run_) -> np.ndarray:
    """Per logged step: ``smoother/valid`` on every split (NOTE [smoother validity]); runs stored before
    the flag existed get it from the test split's logged residual and telescoping error, by the same rule."""
    cols = [c for c in run_.columns if c[1] == "smoother/valid"]
    if cols:
        return np.all(run_[cols].to_numpy() == 1.0, axis=1)
    return self_check_valid(run_[("test", "smoother/residual")].to_numpy(),
                            run_[("test", "telescope/abs_err")].to_numpy(), LABEL_RANGE)


def summarize(frame, steps: int) -> dict[str, Any]:
    """Per (α, output, method), means over seeds of: ``step_fit`` (first logged step with train
    error 0), ``step_generalize`` (first logged step with test error < 10 %), the test error and
    p_train/p_test at those two steps, ``step_p_gap`` (first step with p_train ≥ 1 and p_test <
    0.9·p_train), ``step_near_edge`` (first logged step from which Adam's preconditioned sharpness
    stays at or above ``NEAR_EDGE`` of its stability threshold, lens/stability.py; early transients,
    when v̂ holds one or two gradients, are not counted), ``max_sharpness_ratio`` and
    ``sharpness_ratio_at_first_invalid``, ``step_unreliable`` (first step where the test residual
    |s·y + c − f̃| fails the self-check of NOTE [smoother validity] in telescope/lens/smoother.py:
    above both 3·|f − f̃| and 0.02), final errors, p and residuals. Two keys are minima over seeds,
    not means: ``last_valid_step`` (the last logged step up to which ``smoother/valid`` holds on
    every split, :func:`telescope.lens.last_valid_step`; the last step when p⁰ stays valid, None
    when it is invalid from the first logged step) and ``step_first_invalid`` (the logged step after
    it; None when p⁰ stays valid to the end in every seed). Keys are ``alpha=A/output=O/method=M/NAME``."""
    out: dict[str, Any] = {"steps": steps}
    if "method" not in frame.columns:
        frame = frame.assign(method="exact")
    wide = frame.pivot_table(index=["alpha", "output", "method", "seed", "step"], columns=["split", "name"],
                             values="value").sort_index()
    for (alpha, output, method), g in wide.groupby(level=["alpha", "output", "method"]):
        rows: dict[str, list[float]] = {}
        minima: dict[str, list[float]] = {"last_valid_step": [], "step_first_invalid": []}   # inf: valid to the end
        last_step = float(g.index.get_level_values("step").max())
        for _, run_ in g.groupby(level="seed"):
            st = run_.index.get_level_values("step").to_numpy().astype(float)
            err_tr, err_te = run_[("train", "error")].to_numpy(), run_[("test", "error")].to_numpy()
            p_tr, p_te = run_[("train", "smoother/p_eff")].to_numpy(), run_[("test", "smoother/p_eff")].to_numpy()
            fit = first_step(st, err_tr == 0)
            gen = first_step(st, err_te < GENERALIZED)
            vals = {
                "step_fit": fit,
                "step_generalize": gen,
                "step_p_gap": first_step(st, (p_tr >= 1.0) & (p_te < 0.9 * p_tr)),
                "step_unreliable": first_step(st, ~self_check_valid(run_[("test", "smoother/residual")].to_numpy(),
                                                                run_[("test", "telescope/abs_err")].to_numpy(),
                                                                LABEL_RANGE)),
                "test_error_at_fit": value_at(st, err_te, fit),
                "p_train_at_fit": value_at(st, p_tr, fit),
                "p_test_at_fit": value_at(st, p_te, fit),
                "p_train_at_generalize": value_at(st, p_tr, gen),
                "p_test_at_generalize": value_at(st, p_te, gen),
                "final_train_error": float(err_tr[-1]),
                "final_test_error": float(err_te[-1]),
                "min_test_error": float(np.nanmin(err_te)),
                "final_p_train": float(p_tr[-1]),
                "final_p_test": float(p_te[-1]),
                "max_p_train": float(np.nanmax(p_tr)),
                "final_residual_test": float(run_[("test", "smoother/residual")].to_numpy()[-1]),
                "final_telescope_abs_err": float(run_[("test", "telescope/abs_err")].to_numpy()[-1]),
            }
            valid = _valid_flags(run_)
            last_valid = last_valid_step(st, valid)
            first_invalid = first_step(st, ~valid)
            minima["last_valid_step"].append(last_valid if np.isfinite(first_invalid) else float("inf"))
            minima["step_first_invalid"].append(first_invalid if np.isfinite(first_invalid) else float("inf"))
            if ("train", "adam/sharpness_ratio") in run_.columns:
                ratio = run_[("train", "adam/sharpness_ratio")].to_numpy()
                vals["step_near_edge"] = step_near_edge(st, ratio, NEAR_EDGE)
                vals["max_sharpness_ratio"] = float(np.nanmax(ratio)) if np.isfinite(ratio).any() else float("nan")
                vals["sharpness_ratio_at_first_invalid"] = value_at(st, ratio, first_invalid)
            if ("test", "smoother/p_eff_se") in run_.columns:
                vals["final_p_train_se"] = float(run_[("train", "smoother/p_eff_se")].to_numpy()[-1])
                vals["final_p_test_se"] = float(run_[("test", "smoother/p_eff_se")].to_numpy()[-1])
            for key, v in vals.items():
                rows.setdefault(key, []).append(v)
        prefix = f"alpha={alpha:g}/output={output}/method={method}"
        for key, vs in rows.items():
            out[f"{prefix}/{key}"] = None if all(np.isnan(vs)) else float(np.nanmean(vs))
        lo = float(np.min(minima["last_valid_step"]))       # NaN (invalid from the first step) propagates
        out[f"{prefix}/last_valid_step"] = last_step if lo == float("inf") else (None if np.isnan(lo) else lo)
        first = float(np.min(minima["step_first_invalid"]))
        out[f"{prefix}/step_first_invalid"] = None if first == float("inf") else first
    return out
