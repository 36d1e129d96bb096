"""Grokking modular addition with a one-layer transformer, through the telescoping lens (issue 20).

(a + b) mod p as tokens [a, b, =] (models/transformer.py: embeddings, one attention block, a ReLU
MLP, read-out at ``=``), a random ``train_fraction`` of the p² pairs for training, full-batch AdamW
(Nanda et al. 2023: lr 1e-3, weight decay 1, β = (0.9, 0.98)). The loss is the squared error on
one-hot answers (``loss="mse"``, torch's mse_loss) rather than the paper's cross-entropy: the
smoother, and so p_train / p_test, exists for squared losses only (NOTE [loss scaling] in
lens/smoother.py). Logged on a linear grid of ``eval_every`` steps plus ``log_points`` log-spaced
ones: train/test ``loss``, ``mse``, ``error`` (1 − accuracy) on every pair; the lens's
``telescope/abs_err`` and ``linearized/abs_err`` on the ``n_probe`` tracked test pairs (and
``trapezoid/abs_err``, the error of the lens's second-order companion, NOTE [trapezoid rule]); the sketch's
``smoother/p_eff`` (± ``smoother/p_eff_se``) and its self-check ``smoother/residual`` on train and on
those test pairs; ``ntk/alignment`` (centred kernel–target alignment of the trace kernel) and
``ntk/distance`` (kernel distance from the initial kernel, Fort et al.) on ``n_kernel`` train and
``n_kernel`` test pairs; ``weight_norm``; ``embedding/effective_rank`` (entropy effective rank of
the token-embedding matrix's singular values); ``adam/sharpness_ratio`` (train; ``sharpness=True``): AdamW's
preconditioned sharpness on the full training batch over its stability threshold (NOTE [adam edge of
stability], lens/stability.py; matrix-free, |B|·k = n_train·p rows).

# NOTE [grokking-transformer presets]
# paper: Nanda et al.'s p = 113, 30 % train, d_model 128, 4 heads, d_mlp 512, full batch, 40k steps,
# with the squared loss (above); the sketch tracks 500 test pairs. A GPU job: each step needs the
# k = p = 113 output gradients of every tracked point (k backward passes, NOTE [structured
# products]). quick: chosen by short training-only runs on this 2-core CPU (docs/grokking-transformer.md
# lists them): p = 23, 80 % train, d_model 32, targets 3 · one-hot, Nanda's lr 1e-3 and weight decay 1,
# 5000 steps (with 1 · one-hot the squared loss fit the training set but stayed near 70 % test accuracy
# for 4000 steps; cross-entropy at 70 % train grokked by 4000). lr 1e-3 rather than the 3e-3 of the first
# version: the same grokking curve stretched 3× in steps, and the telescoping error stays ≥ 10× below the
# linearized one until the fit instead of crossing it there (docs/grokking-transformer.md, lr table).
# quick-ce: Nanda's cross-entropy at 70 % train, lr 3e-3 (the lens alone; groks on 3 of 3 seeds);
# quick-ce-lazy / quick-ce-rich: Kumar et al.'s α = 1 / 0.15 on centred logits. tiny: a smoke test of
# every code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from telescope.errors import ConfigError
from telescope.experiments.base import RunContext, bounded
from telescope.kernels import empirical_ntk, kernel_distance, kernel_target_alignment, spectrum_effective_rank
from telescope.kernels.fastpath import no_fused_fastpath
from telescope.lens import Lens, SmootherSpec, adam_sharpness, last_valid_step, smoother_metrics, step_near_edge
from telescope.measures import first_step, value_at, weight_norm
from telescope.models.transformer import ModularTransformer, modular_tokens
from telescope.train import fit, log_steps, make_optimizer, squared_loss


@dataclass(frozen=True)
class Config:
    p: int = bounded(113, ge=2)
    train_fraction: float = bounded(0.3, gt=0, lt=1)
    d_model: int = bounded(128, ge=1)
    heads: int = bounded(4, ge=1)
    d_mlp: int = bounded(512, ge=1)
    layer_norm: bool = False
    alpha: float = bounded(1.0, gt=0)        # Kumar et al.'s laziness: logits × α (their lr rule: lr ∝ 1/α²)
    centred: bool = False                   # logits − initial logits (Kumar et al.'s centred loss)
    optimizer: str = bounded("adamw", choices=("adamw", "sgd"))   # sgd: momentum, coupled weight decay
    momentum: float = bounded(0.9, ge=0, lt=1)                    # sgd only
    lr: float = bounded(1e-3, gt=0)
    weight_decay: float = bounded(1.0, ge=0)
    betas: tuple[float, ...] = bounded((0.9, 0.98), ge=0, lt=1)
    steps: int = bounded(40_000, ge=1)
    eval_every: int = bounded(500, ge=1)
    log_points: int = bounded(30, ge=1)
    loss: str = bounded("mse", choices=("mse", "half_mse", "cross_entropy"))  # cross_entropy: the lens only
    target_scale: float = bounded(1.0, gt=0)  # targets = target_scale · one-hot(answer)
    n_probe: int = bounded(500, ge=1)       # test pairs the lens and the sketch track
    smoother: bool = True                   # False: the lens alone (no p_train / p_test), ~20x cheaper a step
    n_kernel: int = bounded(128, ge=2)      # train and test pairs of the kernel statistics
    probes: int = bounded(16, ge=2)         # K, probe label vectors of the sketch
    sharpness: bool = True                  # log AdamW's preconditioned sharpness ratio at log points (AdamW only)
    second_order: bool = True               # also log the trapezoid-rule error (NOTE [trapezoid rule]): +1 JVP/step
    smoother_dtype: str = bounded("float64", choices=("float32", "float64"))
    dtype: str = bounded("float32", choices=("float32", "float64"))
    seed: int = bounded(0, ge=0)

    _QUICK: ClassVar[dict[str, Any]] = dict(
        p=23, train_fraction=0.8, d_model=32, heads=4, d_mlp=128, lr=1e-3, target_scale=3.0, steps=5000,
        eval_every=250, log_points=15, n_probe=50, n_kernel=32,
        smoother=False)   # the lens alone: minutes; the sketch costs ~0.35 s a step here (30 CPU-minutes)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(p=7, train_fraction=0.6, d_model=8, heads=2, d_mlp=16, steps=30, eval_every=10, log_points=4,
                     n_probe=10, n_kernel=8, probes=4, lr=3e-3),
        "quick": _QUICK,
        # Nanda et al.'s loss (the lens only: no smoother, no sharpness ratio): sharp grokking at 70 % train
        "quick-ce": {**_QUICK, "loss": "cross_entropy", "train_fraction": 0.7, "lr": 3e-3, "steps": 4000},
        # Kumar et al. Fig. 6b's knob on quick-ce: centred logits × α. Their lr ∝ 1/α² (gradient descent's
        # scaling) collapsed the network at α = 0.15 (lr 0.133: every output dead within ~20 steps); Adam's step
        # ignores the gradient's scale, so the same function-space step needs lr ∝ 1/α: 3e-3 / 0.15 = 0.02
        "quick-ce-lazy": {**_QUICK, "loss": "cross_entropy", "train_fraction": 0.7, "lr": 3e-3, "steps": 4000,
                          "centred": True, "alpha": 1.0},
        "quick-ce-rich": {**_QUICK, "loss": "cross_entropy", "train_fraction": 0.7, "lr": 0.02,
                          "steps": 4000, "centred": True, "alpha": 0.15},
        "paper": dict(),
    }

    def validate(self) -> None:
        if self.loss == "cross_entropy" and self.smoother:
            raise ConfigError("grokking-transformer: the smoother (p_train / p_test) exists for squared losses only; "
                              "with loss=cross_entropy set smoother=false (the lens's errors work for any loss)")
        if self.d_model % self.heads:
            raise ConfigError(f"grokking-transformer: heads={self.heads} must divide d_model={self.d_model}")
        n_test = self.p * self.p - int(self.train_fraction * self.p * self.p)
        n_train = int(self.train_fraction * self.p * self.p)
        if n_train < 1 or n_test < 1:
            raise ConfigError(f"grokking-transformer: train_fraction={self.train_fraction} leaves {n_train} "
                              f"training and {n_test} test pairs at p={self.p}; choose a fraction in between")


def _kernel(model, x: torch.Tensor) -> torch.Tensor:
    """The trace tangent kernel (n, n) in float64 on the transformers' general path (NOTE [fused fast path])."""
    with no_fused_fastpath():
        return empirical_ntk(model, x, output="trace").double()


def run(cfg: Config, sink, ctx: RunContext = RunContext()) -> dict[str, Any]:
    key = f"p={cfg.p}/seed={cfg.seed}"
    bar = sink.progress(cfg.steps, "grokking-transformer")
    if not sink.unit_done(key):
        with sink.unit(key, p=cfg.p, seed=cfg.seed) as unit:
            run_unit(cfg, unit, ctx.device, progress=bar)
    bar.close()
    return summarize(sink.metrics(), cfg)


def run_unit(cfg: Config, sink, device: str, progress=None) -> None:
    dtype = getattr(torch, cfg.dtype)
    gen = torch.Generator().manual_seed(cfg.seed)
    x, c, xt, ct = (t.to(device) for t in modular_tokens(cfg.p, cfg.train_fraction, generator=gen))
    y, yt = (cfg.target_scale * F.one_hot(t, cfg.p).to(dtype) for t in (c, ct))
    torch.manual_seed(cfg.seed)
    model = ModularTransformer(cfg.p, cfg.d_model, cfg.heads, cfg.d_mlp, layer_norm=cfg.layer_norm,
                               generator=gen, dtype=dtype, alpha=cfg.alpha, centred=cfg.centred).to(device)
    n_probe = min(cfg.n_probe, xt.shape[0])
    spec = SmootherSpec(x, y, loss=cfg.loss, dtype=cfg.smoother_dtype, method="sketch", probes=cfg.probes,
                        seed=cfg.seed) if cfg.smoother else None
    lens = Lens(model, {"test": xt[:n_probe]}, smoother=spec, second_order=cfg.second_order)
    opt = make_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas,
                         momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0)
    # NOTE [loss scaling]: squared losses on target_scale · one-hot; cross-entropy (Nanda et al.'s loss) on the
    # answers themselves, for the lens alone (the smoother and the sharpness ratio need a squared loss)
    squared = cfg.loss != "cross_entropy"
    loss_fn = squared_loss(cfg.loss) if squared else F.cross_entropy
    target, target_t = (y, yt) if squared else (c, ct)
    nk = min(cfg.n_kernel, x.shape[0], xt.shape[0])
    kx = {"train": (x[:nk], y[:nk]), "test": (xt[:nk], yt[:nk])}
    k0 = {split: _kernel(model, xs) for split, (xs, _) in kx.items()}
    grid = set(log_steps(cfg.steps, cfg.log_points)) | set(range(0, cfg.steps + 1, cfg.eval_every)) | {cfg.steps}

    def record(step: int, mean_loss: float | None) -> None:
        with torch.no_grad(), no_fused_fastpath():
            model.eval()
            for split, xs, cs, ys, ts in (("train", x, c, y, target), ("test", xt, ct, yt, target_t)):
                out = model(xs)
                sink.log_dict(step, split, {"loss": float(loss_fn(out, ts)), "mse": float(((out - ys) ** 2).mean()),
                                            "error": float((out.argmax(1) != cs).double().mean())})
            model.train()
        sink.log_dict(step, "test", lens.errors("test"))
        if spec is not None:
            for split, values in smoother_metrics(lens).items():
                sink.log_dict(step, split, values)
        for split, (xs, ys) in kx.items():
            K = _kernel(model, xs)
            sink.log_dict(step, split, {"ntk/alignment": float(kernel_target_alignment(K, ys.double())),
                                        "ntk/distance": float(kernel_distance(K, k0[split]))})
        with torch.no_grad():
            sv = torch.linalg.svdvals(model.embed.weight[:cfg.p].double())
        sink.log_dict(step, "train", {"weight_norm": weight_norm(model.parameters()),
                                      "embedding/effective_rank": float(spectrum_effective_rank(sv))})
        if cfg.sharpness and squared and cfg.optimizer == "adamw" and step > 0:     # NOTE [adam edge of stability]: λ_max(γ·a·J_B diag(1/φ) J_Bᵀ) / 2(1+β1)/(1−β1)
            sink.log(step, "train", "adam/sharpness_ratio",
                     adam_sharpness(model, opt, x, loss=cfg.loss, seed=cfg.seed)["ratio"])

    fit(model, opt, loss_fn, x, target, steps=cfg.steps, batch_size=x.shape[0], generator=gen, lens=lens,
        record_at=(sorted(grid), record), progress=progress)


GENERALIZED = 0.95      # test accuracy that counts as generalized (the acceptance)


def summarize(frame, cfg: Config) -> dict[str, Any]:
    """``step_fit`` (first logged step with train accuracy 100 %), ``step_generalize`` (first with test
    accuracy > 95 %), ``delay`` (their difference), ``step_p_gap`` (first step with p_test < 0.9·p_train
    after p_train ≥ 1), p_train / p_test and ``ntk/alignment`` (test) at fit and at generalization, the
    max over the run of the telescoping and linearized errors and the largest ratio telescoping /
    linearized error after step 1 (after one step f̃ = f_lin); the ratio linearized / telescoping error
    at fit, at generalization and at the end, ``step_10x_lost`` (first logged step, after the ratio
    first reached 10, where it is below 10: the issue's acceptance holds up to the step before);
    ``step_near_edge`` (first logged step from which AdamW's sharpness ratio stays ≥ NEAR_EDGE,
    lens/stability.py), the ratio at fit and its max; ``max_trapezoid_abs_err``, ``final_trapezoid_abs_err``
    and ``min_linearized_over_trapezoid`` (after step 1) for the trapezoid companion f̂ (NOTE [trapezoid
    rule]); ``last_valid_step_test`` (the last logged step before the sketch's self-check first fails on
    the test pairs, NOTE [smoother validity]) and p_train / p_test there; final values. Every p value
    (at fit, at generalization, final, ``step_p_gap``) is read only up to ``last_valid_step_test``: past
    it p⁰ is no account of the network, and the key is None."""
    wide = frame.pivot_table(index="step", columns=["split", "name"], values="value").sort_index()
    st = wide.index.to_numpy().astype(float)

    def col(split, name):
        return wide[(split, name)].to_numpy() if (split, name) in wide.columns else np.full(len(st), np.nan)

    err_tr, err_te = col("train", "error"), col("test", "error")
    p_tr, p_te = col("train", "smoother/p_eff"), col("test", "smoother/p_eff")
    tel, lin = col("test", "telescope/abs_err"), col("test", "linearized/abs_err")
    align = col("test", "ntk/alignment")
    sharp = col("train", "adam/sharpness_ratio")
    with np.errstate(divide="ignore", invalid="ignore"):
        lin_over_tel = lin / tel
    reached = first_step(st, (st > 1) & (lin_over_tel >= 10))
    valid_te = col("test", "smoother/valid")
    trap = col("test", "trapezoid/abs_err")
    logged = np.isfinite(valid_te)
    last_valid = last_valid_step(st[logged], valid_te[logged]) if logged.any() else float("nan")
    readable = st <= last_valid                   # False everywhere when NaN (no sketch, or invalid from the start)
    p_tr, p_te = np.where(readable, p_tr, np.nan), np.where(readable, p_te, np.nan)
    fit_, gen = first_step(st, err_tr == 0), first_step(st, 1 - err_te > GENERALIZED)

    def at(values, step):
        return value_at(st, values, step)

    later = (st > 1) & np.isfinite(tel)           # after one step f̃ = f_lin by definition & np.isfinite(lin) & (lin > 0)
    out = {
        "p": cfg.p, "steps": cfg.steps,
        "step_fit": fit_, "step_generalize": gen,
        "delay": gen - fit_ if np.isfinite(gen) and np.isfinite(fit_) else float("nan"),
        "step_p_gap": first_step(st, (p_tr >= 1.0) & (p_te < 0.9 * p_tr)),
        "test_accuracy_at_fit": 1 - at(err_te, fit_),
        "p_train_at_fit": at(p_tr, fit_), "p_test_at_fit": at(p_te, fit_),
        "p_train_at_generalize": at(p_tr, gen), "p_test_at_generalize": at(p_te, gen),
        "alignment_test_at_init": float(align[0]), "alignment_test_at_fit": at(align, fit_),
        "alignment_test_at_generalize": at(align, gen), "max_alignment_test": float(np.nanmax(align)),
        "max_telescope_abs_err": float(np.nanmax(tel)), "max_linearized_abs_err": float(np.nanmax(lin)),
        "max_ratio_telescope_to_linearized": float(np.nanmax(tel[later] / lin[later])) if later.any() else None,
        "final_train_accuracy": 1 - float(err_tr[-1]), "final_test_accuracy": 1 - float(err_te[-1]),
        "final_p_train": float(p_tr[-1]), "final_p_test": float(p_te[-1]),
        "final_residual_test": float(col("test", "smoother/residual")[-1]),
        "final_telescope_abs_err": float(tel[-1]), "final_linearized_abs_err": float(lin[-1]),
        "final_kernel_distance_test": float(col("test", "ntk/distance")[-1]),
        "linearized_over_telescope_at_fit": at(lin_over_tel, fit_),
        "linearized_over_telescope_at_generalize": at(lin_over_tel, gen),
        "final_linearized_over_telescope": float(lin_over_tel[-1]),
        "max_trapezoid_abs_err": float(np.nanmax(trap)) if np.isfinite(trap).any() else float("nan"),
        "final_trapezoid_abs_err": float(trap[-1]),
        "min_linearized_over_trapezoid": float(np.nanmin(lin[later] / trap[later]))
        if np.isfinite(trap[later]).any() else float("nan"),
        "step_10x_lost": first_step(st, (st > reached) & (lin_over_tel < 10)) if np.isfinite(reached) else float("nan"),
        "step_near_edge": step_near_edge(st, sharp),
        "sharpness_ratio_at_fit": at(sharp, fit_),
        "max_sharpness_ratio": float(np.nanmax(sharp)) if np.isfinite(sharp).any() else float("nan"),
        "last_valid_step_test": last_valid,
        "p_train_at_last_valid": at(p_tr, last_valid), "p_test_at_last_valid": at(p_te, last_valid),
    }
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}
