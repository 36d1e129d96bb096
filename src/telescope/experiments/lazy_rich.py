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
the init scale σ over ``sigmas`` at ``alpha`` and jointly at α·σ² = ``alpha`` (Fig. 7b, 7c;
NOTE [σ sweep]), the interpolation of W₀ towards the analytic solution over
``interp_mixes`` on the paper's small Fig. 10 task (NOTE [init interpolation]), and the
quadratic MLP on modular addition (p = 23) over ``modular_scales`` (Fig. 2; NOTE [modular
loss]), and Kumar's MNIST MLP over ``mnist_alphas`` (Fig. 6a; NOTE [MNIST laziness]).
Digest: shared/papers/grokking-and-kernel-dynamics.md (c).

# NOTE [final loss needs convergence]
# A fact about the *final* test loss (small α or small ε ends lower) is only a fact about
# converged runs: at lr = 1 and 30,000 epochs the ε = 0.02 run still had train loss 1.4e-3
# and a test loss 3× above ε = 0.1's, the reverse of the paper. The early dynamics do not
# depend on the step size (η·epochs is the clock), so the presets take larger steps:
# ``quick`` lr = 10 (η = 10·N/α²), 5,000 epochs ≈ 50,000 at lr = 1; ``final`` lr = 20 (the
# paper's Fig. 3e step), 10,000 epochs ≈ 200,000 at lr = 1, for the ε sweep (measured: ε =
# 0.02 passes below ε = 0.1 only after ~100,000 lr-1 epochs). α = 1/64 diverges at lr = 20.
# Every unit reports ``final_test_change`` = |test(T/2) − test(T)| / test(T); a final-loss
# comparison counts only where it is small, or where the lower run is still falling.

# NOTE [time to grok]
# The paper's Fig. 3e code uses an absolute threshold (first epoch with test loss < 0.1
# minus first epoch with train loss < 0.1, at an initial loss ≈ 0.9). Loss scales move
# with D, β and the seed, so we use a threshold relative to the initial test loss L₀:
# delay = first epoch with test < q·L₀ − first epoch with train < q·L₀, q = grok_threshold
# (default ½, the digest's scaled-down reproduction). A run whose test loss never
# crosses reports NaN (did not grok within the epochs run). Crossings are read on the
# dense ``eval_every`` grid, so they are exact to that resolution. ``test_rise`` =
# max(0, max test / L₀ − 1) is the height of the grokking bump above the initial loss (Fig. 3a);
# ``test_bump`` = max_t test(t) / min_{t' ≤ t} test(t') − 1 is the rise above the best loss so
# far, which also sees a bump after an initial drop (the uncentred runs of Fig. 10, whose
# random initial function is removed in the first epochs).

# NOTE [σ sweep]
# W₀ = σ·N(0, 1) (Fig. 7). Writing W = σU, f = (α/N) Σ [σ u·x + (εσ²/2)(u·x)²] is exactly the
# σ = 1 model with (α, ε) → (ασ, εσ), and GD on W with step η is GD on U with step η/σ². The
# step here is η = lr·N/α² for every unit (the linear part of the tangent kernel, (α²/N) x·x',
# does not depend on σ), which maps to lr·N/(ασ)², the same convention: so a σ unit *is* the
# σ = 1 unit at (ασ, εσ) — tested to 1e-10 (tests/experiments/test_lazy_rich.py). Consequences
# measured in docs/fidelity.md: ‖W − W₀‖/‖W₀‖ depends on ασ² (the quadratic part must grow by
# ~1/(αεσ²)), but the delay and the final loss follow (ασ, εσ), so a σ sweep at fixed α is not
# an α sweep and α = 1/σ² does not keep the dynamics. The paper's Fig. 7 code steps η = 250/σ²
# for a model normalised differently (x ~ N(0, I), h = Wx/√D); we keep one convention for all
# units and report the mismatch rather than tune the step per unit.

# NOTE [init interpolation]
# Fig. 10: W₀(s) = s·W* + (1 − s)·W_rand with W* an exact minimiser of the population loss:
# rows ±β/√(αε) alternately, so that M = ββᵀ/(αε) and w̄ = 0 (eq. 6 is then 0; N even). On
# the paper's task for this figure: D = 40, P = 120, N = 2, ε = 0.25, α = 1, η = 1 (lr = ½
# in our units), uncentred predictor, 20,000 epochs. ``test_bump`` per s is the fact (the
# uncentred test loss first drops as the random initial function is fitted away, so the
# bump is measured from the best loss so far, NOTE [time to grok]).

# NOTE [modular loss]
# The digest reads the authors' loss as "MSE/s²". Taken as the mean over pairs *and* the p
# outputs, the paper's scales (1, 2) fit 13 % / 7 % of the training pairs in 3,000 epochs
# (measured, p = 23, width 100, lr = 100/s²), while the paper's App. 16 has 100 % train
# accuracy by ~2k epochs at scale 1. Summed over the p outputs (mean over pairs) — p times
# the gradient — scale 1 reaches 100 % train accuracy at epoch 1,000 and 100 % test at
# 1,500 (train loss 0.047, the App. 16 level ≈ 0.06), and scale 2 fits 92 % by 3,000 with
# 2 % test accuracy: the paper's behaviour. So the loss is Σ_c (f_c − y_c)² / s², averaged
# over pairs, and the quick preset uses the paper's scales.

# NOTE [MNIST laziness]
# Fig. 6a (digest c.6): 1,000 random MNIST training images, 2,000 *other* training images
# as the test set (the shared 5k training subset, drawn under ``seed``); an MLP 784-200-200-
# 200-10 without biases, ReLU, each hidden layer h = relu(W h_prev/√fan_in), output
# f = α·h Wₒᵀ/N (N = width); every W ~ N(0, 1)·√(2/fan_in)·``mnist_init_scale`` (150: the
# authors' intent, Kaiming ×150 "replicated from Omnigrok"; their notebook's first α got a
# plain N(0, 150²) init by an ordering bug, not reproduced). Loss: mean over images and the
# ten outputs of (f − onehot)², *uncentred* (as the notebook); AdamW lr 1e-3, wd 0.01, batches
# of 200 cycling through the 1,000 images (an epoch is 5 steps). Because Adam's step size
# does not depend on the gradient's scale, α sets how far the output moves per step: at
# large α the training set is fitted by tiny weight changes (lazy, a kernel fit), at small α
# the weights must move far (rich). The paper runs 250,000 steps; ``mnist_steps`` sets ours
# (the ``mnist`` preset's count and what it does to the claim: docs/lazy-rich.md).
# Reported per α: the first recorded step with train accuracy ≥ ``mnist_train_acc`` and the
# first with test accuracy ≥ ``mnist_test_acc``, their difference (the grokking delay), and
# the final accuracies; NaN where a threshold is never reached.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from telescope.data.images import load_mnist
from telescope.errors import ConfigError, DivergenceError
from telescope.experiments.base import RunContext, bounded
from telescope.experiments.units import Unit, run_units, unit_workers
from telescope.flow import LinearizedGD
from telescope.kernels import kernel_target_alignment
from telescope.lens.closed_form import ClosedFormSmoother
from telescope.lens.smoother import label_range, self_check_valid
from telescope.measures import first_step, weight_norm
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
    sigmas: tuple[float, ...] = bounded((), gt=0)        # NOTE [σ sweep]; σ = 1 is the α sweep's unit
    interp_mixes: tuple[float, ...] = bounded((), ge=0, le=1)   # NOTE [init interpolation]
    interp_d: int = bounded(40, ge=1)
    interp_width: int = bounded(2, ge=2)
    interp_n_train: int = bounded(120, ge=1)
    interp_epsilon: float = bounded(0.25, gt=0)
    interp_lr: float = bounded(0.5, gt=0)
    interp_epochs: int = bounded(20000, ge=1)
    modular_p: int = bounded(23, ge=2)
    modular_width: int = bounded(100, ge=1)
    modular_train_fraction: float = bounded(0.9, gt=0, lt=1)
    modular_scales: tuple[float, ...] = bounded((0.25, 0.5, 0.7), gt=0)
    modular_lr: float = bounded(100.0, gt=0)
    modular_epochs: int = bounded(15000, ge=1)
    modular_eval_every: int = bounded(50, ge=1)
    mnist_alphas: tuple[float, ...] = bounded((), gt=0)     # NOTE [MNIST laziness]
    mnist_steps: int = bounded(10000, ge=1)
    mnist_n_train: int = bounded(1000, ge=1)
    mnist_n_test: int = bounded(2000, ge=1)
    mnist_width: int = bounded(200, ge=1)
    mnist_hidden_layers: int = bounded(3, ge=1)
    mnist_init_scale: float = bounded(150.0, gt=0)
    mnist_lr: float = bounded(1e-3, gt=0)
    mnist_weight_decay: float = bounded(0.01, ge=0)
    mnist_batch: int = bounded(200, ge=1)
    mnist_log_points: int = bounded(60, ge=2)
    mnist_train_acc: float = bounded(0.95, gt=0, le=1)
    mnist_test_acc: float = bounded(0.85, gt=0, le=1)
    seed: int = bounded(0, ge=0)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(d=16, width=40, n_train=64, n_test=200, epsilon=0.05, alpha=0.5, alphas=(0.5, 2.0),
                     smoother_test_points=50, phase_alphas=(), phase_epsilons=(),
                     epsilons=(0.05, 0.2), epochs=2500, eval_every=5, log_points=15, sigmas=(2.0,),
                     interp_mixes=(0.0, 0.2), interp_epochs=2000, modular_p=11,
                     modular_width=40, modular_scales=(1.0,), modular_epochs=800, modular_eval_every=20),
        # NOTE [final loss needs convergence]: lr 10, 5,000 epochs ≈ 50,000 epochs at lr 1
        "quick": dict(lr=10.0, epochs=5000, eval_every=20, alphas=(1 / 64, 0.25, 1.0, 4.0),
                      phase_epochs=1000, sigmas=(0.5, 2.0), interp_mixes=(0.0, 0.05, 0.2, 0.5),
                      modular_scales=(0.5, 1.0, 2.0), modular_epochs=6000),
        # the ε sweep to convergence (fact 3): lr 20 (the paper's Fig. 3e step), 10,000 epochs
        # ≈ 200,000 at lr 1; α = 1/64 diverges at lr 20, so the α sweep stays in `quick`
        "final": dict(lr=20.0, epochs=10000, eval_every=20, alphas=(), epsilons=(0.02, 0.05, 0.1),
                      phase_alphas=(), phase_epsilons=(), modular_scales=()),
        # fact 2 at small α: the paper's step (lr 10 diverges below α = 1/64; at lr 1, α = 1/1024
        # oscillates at the edge of stability, measured), every epoch logged
        "small-alpha": dict(lr=1.0, epochs=2000, eval_every=1, alphas=(1 / 256, 1 / 64), epsilons=(),
                            phase_alphas=(), phase_epsilons=(), modular_scales=()),
        # fact 9 (Fig. 6a), NOTE [MNIST laziness]: 20,000 of the paper's 250,000 steps per α (≈ 4 ms
        # a step on one core: ~6 CPU-minutes); α = 0.5 is left out (after 3,000 steps its train loss
        # is still 1,600× the α = 1e-4 initial loss: the ×150 initial function is not yet removed)
        "mnist": dict(alphas=(), epsilons=(), phase_alphas=(), phase_epsilons=(), modular_scales=(),
                      mnist_alphas=(1e-4, 1e-3, 0.01, 0.05), mnist_steps=20000),
        # the paper's Fig. 6a length and α grid (its code's α list plus the legend's 1e-4): ~17 CPU-
        # minutes per α at ≈ 4 ms a step (not run)
        "mnist-paper": dict(alphas=(), epsilons=(), phase_alphas=(), phase_epsilons=(), modular_scales=(),
                            mnist_alphas=(1e-4, 1e-3, 0.01, 0.05, 0.5), mnist_steps=250000, mnist_log_points=100),
        "paper": dict(d=100, width=500, n_train=550, n_test=1000, alphas=(1 / 32, 0.25, 0.5, 1.0, 2.0, 4.0),
                      epsilons=(0.02, 0.05, 0.1, 0.25), epochs=100000, log_points=100,
                      phase_alphas=(0.4, 1.2, 2.0, 2.8, 4.0, 5.6), phase_epsilons=(0.02, 0.06, 0.12, 0.2, 0.28),
                      phase_epochs=110000, sigmas=(0.125, 0.25, 0.5, 2.0),
                      interp_mixes=(0.0, 0.05, 0.2, 0.5, 0.75, 0.95),
                      modular_scales=(0.5, 1.0, 1.5, 2.0), modular_epochs=100000),
    }

    def units(self) -> list[tuple[float, float, float, int, tuple[str, ...]]]:
        """(α, ε, σ, epochs, roles) for every committee-machine run, duplicates merged."""
        runs: dict[tuple[float, float, float, int], list[str]] = {}
        eps, alpha = float(self.epsilon), float(self.alpha)
        for a in self.alphas:
            runs.setdefault((float(a), eps, 1.0, self.epochs), []).append("alpha_sweep")
        for e in self.epsilons:
            runs.setdefault((alpha, float(e), 1.0, self.epochs), []).append("epsilon_sweep")
        if self.sigmas:
            for sigma in sorted({1.0, *map(float, self.sigmas)}):
                runs.setdefault((alpha, eps, sigma, self.epochs), []).append("sigma_sweep")
                runs.setdefault((alpha / sigma ** 2, eps, sigma, self.epochs), []).append("sigma_joint")
        for a in self.phase_alphas:
            for e in self.phase_epsilons:
                key = (float(a), float(e), 1.0, self.epochs)
                if key not in runs:
                    key = (float(a), float(e), 1.0, self.phase_epochs)
                runs.setdefault(key, []).append("phase")
        return [(a, e, sg, t, tuple(roles)) for (a, e, sg, t), roles in runs.items()]


# ----------------------------------------------------------------------------- units


def analytic_solution(beta: torch.Tensor, width: int, alpha: float, epsilon: float) -> torch.Tensor:
    """W* (N, D): rows ±β/√(αε) alternately, so M = ββᵀ/(αε) and w̄ = 0 (NOTE [init interpolation])."""
    if width % 2:
        raise ConfigError(f"analytic_solution(width={width}): the rows come in ± pairs so that w̄ = 0; "
                          "use an even width (interp_width)")
    signs = torch.tensor([1.0, -1.0], dtype=beta.dtype).repeat(width // 2)
    return signs[:, None] * beta[None, :] / math.sqrt(alpha * epsilon)


def run_committee(cfg: Config, data, alpha: float, epsilon: float, epochs: int, sink,
                  progress=None, *, sigma: float = 1.0, init_mix: float | None = None) -> dict[str, float]:
    """Train one committee machine by full-batch GD; log its metrics; return crossing epochs.

    ``sigma``: init scale (NOTE [σ sweep]); ``init_mix`` = s: W₀ = s·W* + (1 − s)·W_rand
    (NOTE [init interpolation]).
    """
    x, y, xt, yt, beta = data
    gen = torch.Generator().manual_seed(cfg.seed + 1)       # the same W₀ for every (α, ε)
    model = CommitteeMachine(cfg.d, cfg.width, epsilon=epsilon, alpha=alpha, centred=cfg.centred,
                             init_scale=sigma, generator=gen)
    if init_mix is not None:
        with torch.no_grad():
            w0 = init_mix * analytic_solution(beta, cfg.width, alpha, epsilon) + (1 - init_mix) * model.weight
            model.weight.copy_(w0)
            model.weight0.copy_(w0)
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
    t_train, t_test = first_step(steps_a, tr_a < level), first_step(steps_a, te_a < level)
    half = int(np.argmin(np.abs(steps_a - epochs / 2)))
    return {"initial_test": l0, "max_test": float(te_a.max()), "max_test_epoch": float(steps_a[te_a.argmax()]),
            "test_rise": max(0.0, float(te_a.max()) / l0 - 1.0),
            "test_bump": float(np.max(te_a / np.minimum.accumulate(te_a)) - 1.0),
            "final_test_change": float(abs(te_a[half] - te_a[-1]) / te_a[-1]),
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

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:   # NOTE [modular loss]
        return ((out - target) ** 2).sum(dim=1).mean() / scale ** 2

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
    t_train, t_test = first_step(s, 1 - tr < 0.1), first_step(s, 1 - te < 0.1)
    return {"final_train_acc": float(tr[-1]), "final_test_acc": float(te[-1]),
            "epoch_train_acc_90": t_train, "epoch_test_acc_90": t_test,
            "delay": max(0.0, t_test - t_train) if math.isfinite(t_test) else float("nan")}


class LazyMLP(torch.nn.Module):
    """Kumar et al.'s MNIST MLP (NOTE [MNIST laziness]): x (n, d_in) → f (n, d_out).

    ``hidden_layers`` layers h = relu(W h_prev / √fan_in) of ``width``, no biases, output
    f = α·h Wₒᵀ / width. Every weight W (out, fan_in) ~ N(0, 1)·√(2/fan_in)·``init_scale``.
    f is exactly linear in α at fixed weights.
    """

    def __init__(self, d_in: int, width: int, d_out: int, *, hidden_layers: int = 3, alpha: float = 1.0,
                 init_scale: float = 150.0, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if alpha <= 0 or init_scale <= 0:
            raise ConfigError(f"LazyMLP(alpha={alpha}, init_scale={init_scale}): both must be positive")
        dims = [d_in] + [width] * hidden_layers + [d_out]
        self.alpha, self.width = float(alpha), width
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(o, i, generator=generator, dtype=dtype) * math.sqrt(2 / i) * init_scale)
            for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for w in self.weights[:-1]:
            h = torch.relu(h @ w.T / math.sqrt(w.shape[1]))
        return self.alpha * (h @ self.weights[-1].T) / self.width


def mnist_task(cfg: Config, root=None) -> tuple[torch.Tensor, ...]:
    """x (n_train, 784), onehot (n_train, 10), x_test (n_test, 784), onehot_test: disjoint random
    draws from the MNIST training file under ``root`` (None: $TELESCOPE_DATA or the cache; NOTE [MNIST
    laziness]), float32, pixels in [0, 1]."""
    xs, ys = load_mnist("train", root)
    n = cfg.mnist_n_train + cfg.mnist_n_test
    if n > len(ys):
        raise ConfigError(f"lazy-rich: mnist_n_train + mnist_n_test = {n} exceeds the {len(ys)} MNIST training "
                          "images in the data directory; lower them")
    idx = np.random.default_rng(cfg.seed).permutation(len(ys))[:n]
    x = torch.as_tensor(xs[idx].reshape(n, -1) / 255.0, dtype=torch.float32)
    y = torch.nn.functional.one_hot(torch.as_tensor(ys[idx], dtype=torch.int64), 10).float()
    k = cfg.mnist_n_train
    return x[:k], y[:k], x[k:], y[k:]


def run_mnist(cfg: Config, data, alpha: float, sink, progress=None) -> dict[str, float]:
    """Train Kumar's MNIST MLP at output scale α with AdamW; log loss and accuracy on a log grid.

    ``data`` = (x (n, d), onehot (n, c), x_test, onehot_test). Returns the threshold steps.
    """
    x, y, xt, yt = data
    gen = torch.Generator().manual_seed(cfg.seed + 4)      # the same W₀ for every α
    model = LazyMLP(x.shape[1], cfg.mnist_width, y.shape[1], hidden_layers=cfg.mnist_hidden_layers, alpha=alpha,
                    init_scale=cfg.mnist_init_scale, generator=gen, dtype=x.dtype)
    w0 = [w.detach().clone() for w in model.weights]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.mnist_lr, weight_decay=cfg.mnist_weight_decay)
    steps, acc_tr, acc_te = [], [], []

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((out - target) ** 2).mean()

    @torch.no_grad()
    def record(step: int, _loss: float | None) -> None:
        out, out_t = model(x), model(xt)
        a_tr = float((out.argmax(1) == y.argmax(1)).float().mean())
        a_te = float((out_t.argmax(1) == yt.argmax(1)).float().mean())
        steps.append(step), acc_tr.append(a_tr), acc_te.append(a_te)
        change = math.sqrt(sum(float(((w - v) ** 2).sum()) for w, v in zip(model.weights, w0))
                           / sum(float((v ** 2).sum()) for v in w0))
        sink.log_dict(step, "train", {"loss": float(loss_fn(out, y)), "mse": float(loss_fn(out, y)),
                                      "error": 1 - a_tr, "weight_norm": weight_norm(model.parameters()),
                                      "param/relative_change": change})
        sink.log_dict(step, "test", {"loss": float(loss_fn(out_t, yt)), "mse": float(loss_fn(out_t, yt)),
                                     "error": 1 - a_te})

    fit(model, opt, loss_fn, x, y, steps=cfg.mnist_steps, batch_size=cfg.mnist_batch, generator=gen,
        record_at=(log_steps(cfg.mnist_steps, cfg.mnist_log_points), record), progress=progress)
    s, tr, te = np.array(steps), np.array(acc_tr), np.array(acc_te)
    t_train, t_test = first_step(s, tr >= cfg.mnist_train_acc), first_step(s, te >= cfg.mnist_test_acc)
    return {"final_train_acc": float(tr[-1]), "final_test_acc": float(te[-1]), "max_test_acc": float(te.max()),
            "step_train_acc": t_train, "step_test_acc": t_test,
            "delay": max(0.0, t_test - t_train) if math.isfinite(t_test) else float("nan")}


# ----------------------------------------------------------------------------- run


def train_and_summarize(train, epochs: int, *args, sink, progress=None, **kwargs) -> None:
    """One unit: ``train(*args, sink, progress, **kwargs)`` (run_committee, run_modular or run_mnist),
    then the summary values it returns as rows of split ``summary`` at its last epoch ``epochs``."""
    for k, v in train(*args, sink=sink, progress=progress, **kwargs).items():
        sink.log(epochs, "summary", k, v)


CPU_ONLY = ("its committee-machine units are float64 full-batch gradient descent on a few thousand parameters, "
            "launch-bound on a GPU, and its units are not wired for one")


def run(cfg: Config, sink, ctx: RunContext = RunContext()) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(cfg.seed)
    data = gaussian_quadratic_task(cfg.d, cfg.n_train, cfg.n_test, generator=gen)
    committee = cfg.units()
    total = (sum(t for *_, t, _ in committee) + cfg.modular_epochs * len(cfg.modular_scales)
             + cfg.interp_epochs * len(cfg.interp_mixes) + cfg.mnist_steps * len(cfg.mnist_alphas))
    bar = sink.progress(total, "lazy-rich")
    summary: dict[str, Any] = {}
    units = [Unit(f"committee/alpha={alpha:g}/eps={eps:g}/epochs={epochs}" + ("" if sigma == 1 else f"/sigma={sigma:g}"),
                  dict(model="committee", alpha=alpha, epsilon=eps, sigma=sigma, epochs=epochs, roles=",".join(roles)),
                  (run_committee, epochs, cfg, data, alpha, eps, epochs), dict(sigma=sigma), steps=epochs)
             for alpha, eps, sigma, epochs, roles in committee]
    if cfg.interp_mixes:   # NOTE [init interpolation]: the paper's small task, its own data
        if cfg.interp_width % 2:
            raise ConfigError(f"lazy-rich: interp_width={cfg.interp_width} must be even (W* has ± row pairs)")
        icfg = dataclasses.replace(cfg, d=cfg.interp_d, width=cfg.interp_width, n_train=cfg.interp_n_train,
                                   lr=cfg.interp_lr, centred=False, smoother_test_points=0)
        idata = gaussian_quadratic_task(icfg.d, icfg.n_train, icfg.n_test,
                                        generator=torch.Generator().manual_seed(cfg.seed + 3))
        units += [Unit(f"interp/s={mix:g}",
                       dict(model="interp", alpha=1.0, epsilon=cfg.interp_epsilon, sigma=1.0, mix=float(mix),
                            epochs=cfg.interp_epochs, roles="interp"),
                       (run_committee, cfg.interp_epochs, icfg, idata, 1.0, cfg.interp_epsilon, cfg.interp_epochs),
                       dict(init_mix=float(mix)), steps=cfg.interp_epochs)
                  for mix in cfg.interp_mixes]
    units += [Unit(f"modular/scale={scale:g}",
                   dict(model="modular", alpha=float(scale), epsilon=float("nan"), sigma=1.0,
                        epochs=cfg.modular_epochs, roles="modular"),
                   (run_modular, cfg.modular_epochs, cfg, float(scale)), steps=cfg.modular_epochs)
              for scale in cfg.modular_scales]
    mnist_keys = [f"mnist/alpha={alpha:g}" for alpha in cfg.mnist_alphas]
    # the images, read only if an MNIST unit is still to train
    mnist = mnist_task(cfg, ctx.data_dir) if any(not sink.unit_done(k) for k in mnist_keys) else None
    units += [Unit(key, dict(model="mnist", alpha=float(alpha), epsilon=float("nan"), sigma=1.0,
                             epochs=cfg.mnist_steps, roles="mnist"),
                   (run_mnist, cfg.mnist_steps, cfg, mnist, float(alpha)), steps=cfg.mnist_steps)
              for key, alpha in zip(mnist_keys, cfg.mnist_alphas)]
    run_units(sink, units, train_and_summarize, workers=unit_workers(ctx), progress=bar)
    bar.close()
    frame = sink.metrics()
    rows = frame[frame["split"] == "summary"]
    if "mix" not in rows.columns:
        rows = rows.assign(mix=float("nan"))
    for (model, alpha, eps, sigma, mix, epochs), g in rows.groupby(
            ["model", "alpha", "epsilon", "sigma", "mix", "epochs"], dropna=False):
        if model == "modular":
            prefix = f"modular/scale={alpha:g}"
        elif model == "mnist":
            prefix = f"mnist/alpha={alpha:g}"
        elif model == "interp":
            prefix = f"interp/s={mix:g}"
        else:
            prefix = (f"alpha={alpha:g}/eps={eps:g}" + ("" if sigma == 1 else f"/sigma={sigma:g}")
                      + ("" if epochs == cfg.epochs else f"/epochs={epochs}"))
        for name, value in zip(g["name"], g["value"]):
            summary[f"{prefix}/{name}"] = float(value) if math.isfinite(value) else None
    summary["grok_threshold"] = cfg.grok_threshold
    return summary
