"""Grokking as the lazy-to-rich transition (Kumar, Bordelon, Gershman & Pehlevan, ICLR 2024).

The committee machine f(W, x) = (α/N) Σ φ(w_i·x), φ(h) = h + (ε/2)h², readout fixed,
trained on the centred predictor f(W, x) − f(W₀, x) with full-batch GD on the mean
squared error, η = lr·N/α², no weight decay; x ~ N(0, I/D), y = ½(β·x)². Per (α, ε):

* dense (every ``eval_every`` epochs): train/test ``mse`` of the network and
  ``linearized/mse`` of the same GD on the network linearized at init (closed form);
* on a log grid: the exact population loss decomposition (split ``population``:
  ``decomposition/variance|misalignment|linear|total``), the NTK alignment of the
  current tangent kernel on the test set (``ntk/alignment`` centred as Cortes et al.;
  ``ntk/alignment_code`` as in the authors' code), ``weight_norm``,
  ``param/relative_change``, ``feature/alignment`` (D·β̂ᵀMβ̂/Tr M);
* once: the initial-kernel ridgeless regression test MSE (``kernel_regression/mse``);
* with ``smoother_test_points`` > 0: the telescoping lens's effective parameters
  ``smoother/p_eff`` on train and on that many test points (the closed-form smoother of
  :mod:`telescope.experiments.grokking_poly`; it costs about as much as the training
  itself, so ``quick`` leaves it off and ``grokking-poly`` is the study of it);
* in the summary: time to grok and the quantities of the paper's figures.

Sweeps: ``alphas`` at ``epsilon`` (Fig. 3a), ``epsilons`` at ``alpha`` (Fig. 3b), a
``phase_alphas`` × ``phase_epsilons`` grid of time to grok over ``phase_epochs`` (Fig. 3e),
and the quadratic MLP on modular addition (p = 23) over ``modular_scales`` (Fig. 2).
Digest: shared/papers/grokking-and-kernel-dynamics.md (c).

# NOTE [time to grok]
# The paper's Fig. 3e code uses an absolute threshold (first epoch with test loss < 0.1
# minus first epoch with train loss < 0.1, at an initial loss ≈ 0.9). Loss scales move
# with D, β and the seed, so we use a threshold relative to the initial test loss L₀:
# delay = first epoch with test < q·L₀ − first epoch with train < q·L₀, q = grok_threshold
# (default ½, the digest's scaled-down reproduction). A run whose test loss never
# crosses reports NaN (did not grok within the epochs run). Crossings are read on the
# dense ``eval_every`` grid, so they are exact to that resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from telescope.errors import DivergenceError
from telescope.experiments.base import RunContext, bounded
from telescope.flow import LinearizedGD
from telescope.kernels import kernel_target_alignment
from telescope.lens.closed_form import ClosedFormSmoother
from telescope.lens.smoother import label_range, self_check_valid
from telescope.measures import weight_norm
from telescope.models.modular import ModularQuadraticMLP, modular_addition
from telescope.models.poly import CommitteeMachine, gaussian_quadratic_task
from telescope.train import fit, log_steps


def alignment(kernel: torch.Tensor, y: torch.Tensor, centering: str = "double") -> float:
    """``ntk/alignment`` (Cortes et al.) and, with ``"one_sided"``, the authors' code's form."""
    return float(kernel_target_alignment(kernel, y, centering=centering))


@dataclass(frozen=True)
class Config:
    d: int = bounded(50, ge=1)
    width: int = bounded(200, ge=1)
    n_train: int = bounded(275, ge=1)
    n_test: int = bounded(1000, ge=1)
    epsilon: float = bounded(0.02, ge=0)
    alpha: float = bounded(1.0, gt=0)
    alphas: tuple[float, ...] = bounded((0.25, 1.0, 4.0), gt=0)
    epsilons: tuple[float, ...] = bounded((0.02, 0.1), ge=0)
    lr: float = bounded(1.0, gt=0)
    epochs: int = bounded(30000, ge=1)
    eval_every: int = bounded(50, ge=1)
    log_points: int = bounded(60, ge=1)
    grok_threshold: float = bounded(0.5, gt=0, lt=1)
    centred: bool = True
    smoother_test_points: int = bounded(0, ge=0)
    phase_alphas: tuple[float, ...] = bounded((0.5, 1.0, 2.0), gt=0)
    phase_epsilons: tuple[float, ...] = bounded((0.02, 0.05, 0.1), ge=0)
    phase_epochs: int = bounded(10000, ge=1)
    modular_p: int = bounded(23, ge=2)
    modular_width: int = bounded(100, ge=1)
    modular_train_fraction: float = bounded(0.9, gt=0, lt=1)
    modular_scales: tuple[float, ...] = bounded((0.25, 0.5, 0.7), gt=0)
    modular_lr: float = bounded(100.0, gt=0)
    modular_epochs: int = bounded(15000, ge=1)
    modular_eval_every: int = bounded(50, ge=1)
    seed: int = bounded(0, ge=0)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(d=16, width=40, n_train=64, n_test=200, epsilon=0.05, alpha=0.5, alphas=(0.5, 2.0),
                     smoother_test_points=50, phase_alphas=(), phase_epsilons=(),
                     epsilons=(0.05, 0.2), epochs=2500, eval_every=5, log_points=15, modular_p=11,
                     modular_width=40, modular_scales=(1.0,), modular_epochs=800, modular_eval_every=20),
        "quick": dict(),
        "paper": dict(d=100, width=500, n_train=550, n_test=1000, alphas=(0.25, 0.5, 1.0, 2.0, 4.0),
                      epsilons=(0.02, 0.05, 0.1, 0.25), epochs=100000, log_points=100,
                      phase_alphas=(0.4, 1.2, 2.0, 2.8, 4.0, 5.6), phase_epsilons=(0.02, 0.06, 0.12, 0.2, 0.28),
                      phase_epochs=110000, modular_scales=(0.5, 1.0, 1.5, 2.0), modular_epochs=100000),
    }

    def units(self) -> list[tuple[float, float, int, tuple[str, ...]]]:
        """(α, ε, epochs, roles) for every committee-machine run, duplicates merged."""
        runs: dict[tuple[float, float, int], list[str]] = {}
        for a in self.alphas:
            runs.setdefault((float(a), float(self.epsilon), self.epochs), []).append("alpha_sweep")
        for e in self.epsilons:
            runs.setdefault((float(self.alpha), float(e), self.epochs), []).append("epsilon_sweep")
        for a in self.phase_alphas:
            for e in self.phase_epsilons:
                key = (float(a), float(e), self.epochs)
                if key not in runs:
                    key = (float(a), float(e), self.phase_epochs)
                runs.setdefault(key, []).append("phase")
        return [(a, e, t, tuple(roles)) for (a, e, t), roles in runs.items()]


# ----------------------------------------------------------------------------- units


def first_below(steps: np.ndarray, values: np.ndarray, level: float) -> float:
    """The first step whose value is below ``level`` (NaN if none)."""
    hit = np.nonzero(values < level)[0]
    return float(steps[hit[0]]) if hit.size else float("nan")


def run_committee(cfg: Config, data, alpha: float, epsilon: float, epochs: int, sink,
                  progress=None) -> dict[str, float]:
    """Train one committee machine by full-batch GD; log its metrics; return crossing epochs."""
    x, y, xt, yt, beta = data
    gen = torch.Generator().manual_seed(cfg.seed + 1)       # the same W₀ for every (α, ε)
    model = CommitteeMachine(cfg.d, cfg.width, epsilon=epsilon, alpha=alpha, centred=cfg.centred,
                             generator=gen)
    lr = cfg.lr * cfg.width / alpha ** 2
    with torch.no_grad():
        f0_train, f0_test = model(x), model(xt)
        k0_train = model.tangent_kernel(x)
        k0_test_train = model.tangent_kernel(xt, x)
        lin = LinearizedGD(k0_train, k0_test_train, y, f0_train, f0_test, lr)
        kreg = float(((lin.test_prediction(math.inf) - yt) ** 2).mean())
        sink.log(0, "test", "kernel_regression/mse", kreg)
        k0_test = model.tangent_kernel(xt)
        sink.log(0, "test", "kernel/initial_alignment", alignment(k0_test, yt, centering="one_sided"))

    grid = set(log_steps(epochs, cfg.log_points))
    smoother = None
    if cfg.smoother_test_points > 0:
        smoother = ClosedFormSmoother(model, x, y, xt[: cfg.smoother_test_points], lr)
        span = label_range(y)
    steps, tr, te = [], [], []
    l0 = float(((f0_test - yt) ** 2).mean())

    def record(ep: int, train_mse: float) -> None:
        with torch.no_grad():
            test_mse = float(((model(xt) - yt) ** 2).mean())
            steps.append(ep), tr.append(train_mse), te.append(test_mse)
            sink.log_dict(ep, "train", {"mse": train_mse,
                                        "linearized/mse": float((lin.train_residual(ep) ** 2).mean())})
            sink.log_dict(ep, "test", {"mse": test_mse,
                                       "linearized/mse": float(((lin.test_prediction(ep) - yt) ** 2).mean())})
            if ep in grid:
                dec = model.loss_decomposition(beta)
                sink.log_dict(ep, "population", {f"decomposition/{k}": v for k, v in dec.items()})
                k = model.tangent_kernel(xt)
                sink.log_dict(ep, "test", {"ntk/alignment": alignment(k, yt),
                                           "ntk/alignment_code": alignment(k, yt, centering="one_sided")})
                if smoother is not None:   # p with its self-check (NOTE [smoother validity])
                    p = smoother.effective_parameters()
                    f_now = {"train": model(x), "test": model(xt[: cfg.smoother_test_points])}
                    for split in ("train", "test"):
                        res = smoother.residual(split)
                        err = float((f_now[split] - smoother.telescope(split)).abs().mean())
                        sink.log_dict(ep, split, {"smoother/p_eff": p[split], "smoother/residual": res,
                                                  "telescope/abs_err": err,
                                                  "smoother/valid": float(self_check_valid(res, err, span))})
                sink.log_dict(ep, "train", {"weight_norm": float(model.weight.detach().norm()),
                                            "param/relative_change": model.relative_change(),
                                            "feature/alignment": model.feature_alignment(beta)})

    with torch.no_grad():
        for ep in range(epochs + 1):
            r = model(x) - y
            if ep % cfg.eval_every == 0 or ep in grid:
                train_mse = float((r * r).mean())
                if not math.isfinite(train_mse):
                    raise DivergenceError(f"lazy-rich: α={alpha:g}, ε={epsilon:g} diverged at epoch {ep} "
                                          f"(η = {lr:g}); lower lr (now {cfg.lr:g}·N/α²)")
                record(ep, train_mse)
            if ep == epochs:
                break
            delta = -lr * model.mse_gradient(x, r)
            if smoother is not None:
                smoother.step(model.weight.detach().clone(), delta)
            model.weight += delta
            if progress is not None and ep % 100 == 99:
                progress.update(100)
    steps_a, tr_a, te_a = np.array(steps), np.array(tr), np.array(te)
    level = cfg.grok_threshold * l0
    t_train, t_test = first_below(steps_a, tr_a, level), first_below(steps_a, te_a, level)
    return {"initial_test": l0, "max_test": float(te_a.max()), "max_test_epoch": float(steps_a[te_a.argmax()]),
            "final_train": float(tr_a[-1]), "final_test": float(te_a[-1]),
            "epoch_train_below": t_train, "epoch_test_below": t_test,
            "delay": max(0.0, t_test - t_train) if math.isfinite(t_test) else float("nan"),
            "kernel_regression_mse": kreg,
            "weight_norm_ratio": float(model.weight.detach().norm() / model.weight0.norm()),
            "final_linearized_test": float(((lin.test_prediction(epochs) - yt) ** 2).mean())}


def run_modular(cfg: Config, scale: float, sink, progress=None) -> dict[str, float]:
    """The quadratic MLP on a + b mod p: full-batch GD on MSE/s² at lr/s², no weight decay."""
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    x, y, xt, yt = modular_addition(cfg.modular_p, cfg.modular_train_fraction, generator=gen,
                                    dtype=torch.float64)
    model = ModularQuadraticMLP(cfg.modular_p, cfg.modular_width, scale=scale, generator=gen, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.modular_lr / scale ** 2)
    steps, acc_tr, acc_te = [], [], []

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((out - target) ** 2).mean() / scale ** 2

    @torch.no_grad()
    def record(ep: int, _loss: float | None = None) -> None:
        if ep % cfg.modular_eval_every:
            return
        out, out_t = model(x), model(xt)
        loss = float(loss_fn(out, y))
        if not math.isfinite(loss):
            raise DivergenceError(f"lazy-rich: modular MLP at scale {scale:g} diverged at epoch {ep}; "
                                  f"lower modular_lr (now {cfg.modular_lr:g})")
        a_tr = float((out.argmax(1) == y.argmax(1)).double().mean())
        a_te = float((out_t.argmax(1) == yt.argmax(1)).double().mean())
        steps.append(ep), acc_tr.append(a_tr), acc_te.append(a_te)
        sink.log_dict(ep, "train", {"loss": loss, "mse": float(((out - y) ** 2).mean()), "error": 1 - a_tr,
                                    "weight_norm": weight_norm(model.parameters())})
        sink.log_dict(ep, "test", {"loss": float(loss_fn(out_t, yt)),
                                   "mse": float(((out_t - yt) ** 2).mean()), "error": 1 - a_te})

    record(0)
    fit(model, opt, loss_fn, x, y, steps=cfg.modular_epochs, batch_size=len(x), generator=gen,
        callbacks=[record], progress=progress)
    s, tr, te = np.array(steps), np.array(acc_tr), np.array(acc_te)
    t_train, t_test = first_below(s, 1 - tr, 0.1), first_below(s, 1 - te, 0.1)
    return {"final_train_acc": float(tr[-1]), "final_test_acc": float(te[-1]),
            "epoch_train_acc_90": t_train, "epoch_test_acc_90": t_test,
            "delay": max(0.0, t_test - t_train) if math.isfinite(t_test) else float("nan")}


# ----------------------------------------------------------------------------- run


def run(cfg: Config, sink, ctx: RunContext = RunContext()) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(cfg.seed)
    data = gaussian_quadratic_task(cfg.d, cfg.n_train, cfg.n_test, generator=gen)
    units = cfg.units()
    total = sum(t for _, _, t, _ in units) + cfg.modular_epochs * len(cfg.modular_scales)
    bar = sink.progress(total, "lazy-rich")
    summary: dict[str, Any] = {}
    for alpha, eps, epochs, roles in units:
        key = f"committee/alpha={alpha:g}/eps={eps:g}/epochs={epochs}"
        if sink.unit_done(key):
            bar.update(epochs)
            continue
        with sink.unit(key, model="committee", alpha=alpha, epsilon=eps, epochs=epochs,
                       roles=",".join(roles)) as unit:
            out = run_committee(cfg, data, alpha, eps, epochs, unit, progress=bar)
            for k, v in out.items():
                unit.log(epochs, "summary", k, v)
    for scale in cfg.modular_scales:
        key = f"modular/scale={scale:g}"
        if sink.unit_done(key):
            bar.update(cfg.modular_epochs)
            continue
        with sink.unit(key, model="modular", alpha=float(scale), epsilon=float("nan"),
                       epochs=cfg.modular_epochs, roles="modular") as unit:
            out = run_modular(cfg, float(scale), unit, progress=bar)
            for k, v in out.items():
                unit.log(cfg.modular_epochs, "summary", k, v)
    bar.close()
    frame = sink.metrics()
    rows = frame[frame["split"] == "summary"]
    for (model, alpha, eps, epochs), g in rows.groupby(["model", "alpha", "epsilon", "epochs"], dropna=False):
        prefix = (f"modular/scale={alpha:g}" if model == "modular"
                  else f"alpha={alpha:g}/eps={eps:g}" + ("" if epochs == cfg.epochs else f"/epochs={epochs}"))
        for name, value in zip(g["name"], g["value"]):
            summary[f"{prefix}/{name}"] = float(value) if math.isfinite(value) else None
    summary["grok_threshold"] = cfg.grok_threshold
    return summary
