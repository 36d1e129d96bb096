"""Three stages of kernel learning dynamics (Ghosh, Mei & Yu, ICLR 2022): oracle vs empirical world.

Gradient flow on kernel least squares, in closed form (:mod:`telescope.flow`), with inputs
uniform on the sphere of radius √d, inner-product kernels h(⟨x, x'⟩/d) and a target built
from products of distinct coordinates (default f = x1 + x2·x3, label noise σ). Three studies,
each a set of units:

* ``stages/<kernel>``: train, test and oracle error on a log grid of times up to ``t_max``
  for each kernel in ``kernels``; stage windows detected on the curves (NOTE [stage
  detection] in :mod:`telescope.flow.stages`) next to the theory's boundaries.
* ``speed/c=<mult>``: "faster training is not better generalisation" — the exp kernel plus a
  nugget c = mult · n · λ_{d,1} on the training Gram (our construction, digest b.6, not the
  paper's two kernels): a larger nugget interpolates sooner and generalises worse.
* ``bridge``: a wide two-layer ReLU net trained by full-batch GD on the same kind of data
  (smaller d, n) against the empirical-world flow of its own initial tangent kernel, and
  online SGD on fresh samples against the oracle-world curve of the ReLU NTK.

Metrics (long format). For ``stages`` and ``speed`` units ``step`` is the flow time t itself
(integers on a log grid, so the column plots on a log axis); for the ``bridge`` unit ``step``
is the GD/SGD iteration and the flow time is ``bridge_lr · step``. Splits ``train``,
``test``, ``oracle``; names ``mse`` and ``learned/deg<k>`` (the fraction of the target's
degree-k part held by the predictor: ⟨f̂_t, P_k f⟩ / ‖P_k f‖² on the test set, exact
1 − e^{−λ_k t} for the oracle). In the bridge unit ``mse`` is the network under full-batch GD,
``kernel_flow/mse`` the exact closed form of GD with the net's initial tangent kernel (same
step), ``online_sgd/mse`` (split ``test``) the network under online SGD and split ``oracle``
the oracle world of the infinite-width ReLU NTK. ``oracle``/``mse_on_test`` is the oracle
predictor's error on the test points (shares their sampling noise; ``oracle``/``mse`` is exact). Tag columns: ``study``, ``kernel``, ``nugget``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from telescope.errors import ConfigError
from telescope.experiments.base import bounded, check_fields
from telescope.flow import (
    EmpiricalFlow,
    ProductTarget,
    TwoLayerReLU,
    detect_stages,
    funk_hecke_eigenvalues,
    inner_product_kernel,
    log_time_grid,
    oracle_learned_fraction,
    oracle_mse,
    predicted_boundaries,
    sample_sphere,
)
from telescope.flow.inner_product import INNER_PRODUCT_KERNELS
from telescope.measures import first_step
from telescope.store import curve
from telescope.train import fit

log = logging.getLogger(__name__)

# NOTE [fact-5 preset]
# l = 2 needs B(d, 2) ≪ n ≪ B(d, 3) and n ≫ κ_{>2}/λ_{d,2}: at d = 40 that is 820 ≪ n ≪ 10,660,
# so n = 4000 = d^{2.25} (one 4000×4000 eigendecomposition, ~30 s on one core). The margins
# are only ~4× each way, so the stages are not clean (the oracle learns degree 3 at
# 1/λ_{d,3} ≈ 7e4 while the fit ends near 5e4) but the frozen test error is ‖P_{>2}f‖²: the
# target x1 + x2x3 + x4x5x6 has energy in degrees 1, 2, 3, so the plateau halves from
# ‖P_2f‖² + ‖P_3f‖² (n = 400 = 10d, l = 1) to ‖P_3f‖² (n = 4000, l = 2). The digest (b.7)
# saw d = 30–40 fail to separate with another target; the plateau, not the stage windows,
# is what this preset checks.


@dataclass(frozen=True)
class Config:
    d: int = bounded(200, ge=3)
    n: int = bounded(2000, ge=1)
    n_test: int = bounded(2000, ge=1)
    noise: float = bounded(0.3, ge=0)
    target: str = "x1+x2*x3"
    kernels: tuple[str, ...] = ("exp", "ntk_relu", "rf_relu")
    t_max: float = bounded(1e7, ge=1)
    points_per_decade: int = bounded(8, ge=1)
    stage_tol: float = bounded(0.1, gt=0, lt=0.5)   # NOTE [stage detection]
    # "faster training is not better generalisation": nuggets in units of n·λ_{d,1}
    nuggets: tuple[float, ...] = bounded((0.0, 1.0, 10.0), ge=0)
    fit_tol: float = bounded(0.01, gt=0)
    # the neural bridge
    bridge: bool = True
    bridge_d: int = bounded(20, ge=3)
    bridge_n: int = bounded(200, ge=1)
    bridge_n_test: int = bounded(4000, ge=1)
    bridge_width: int = bounded(1024, ge=2)
    bridge_scale: float = bounded(4.0, gt=0)
    bridge_lr: float = bounded(2.0, gt=0)
    bridge_steps: int = bounded(1000, ge=1)
    bridge_batch: int = bounded(50, ge=1)
    seed: int = bounded(0, ge=0)

    PRESETS: ClassVar[dict] = {
        "tiny": {"d": 100, "n": 1000, "n_test": 500, "kernels": ("exp",), "points_per_decade": 6,
                 "bridge_d": 10, "bridge_n": 60, "bridge_n_test": 500, "bridge_width": 256,
                 "bridge_steps": 200, "bridge_batch": 20},
        "quick": {},
        "paper": {"d": 400, "n": 4000, "n_test": 4000, "points_per_decade": 10,
                  "bridge_d": 40, "bridge_n": 400, "bridge_n_test": 4000, "bridge_width": 4096,
                  "bridge_steps": 3000},
        # digest b.5 fact 5: n ≈ d^{2+δ} (l = 2) moves the plateau from ‖P_{>1}f‖² to ‖P_{>2}f‖²;
        # compare with the same command at --set n=400 (n = 10d, l = 1). NOTE [fact-5 preset]
        "fact5": {"d": 40, "n": 4000, "n_test": 4000, "target": "x1+x2*x3+x4*x5*x6", "kernels": ("exp",),
                  "nuggets": (), "bridge": False, "points_per_decade": 10},
    }

    def validate(self) -> None:
        check_fields(self, "kernel-stages")  # run() validates a config built without resolve_config
        if self.bridge_width % 2:
            raise ConfigError(f"kernel-stages: bridge_width={self.bridge_width} must be even and >= 2")
        if not self.kernels:
            raise ConfigError("kernel-stages: kernels is empty; name at least one of "
                              f"{', '.join(sorted(INNER_PRODUCT_KERNELS))}")
        for k in self.kernels:
            inner_product_kernel(k)
        target = ProductTarget.parse(self.target)
        target.check_dim(min(self.d, self.bridge_d))


# ----------------------------------------------------------------------------- data


@dataclass
class _Problem:
    d: int
    x: np.ndarray        # (n, d)
    y: np.ndarray        # (n,)  noisy labels
    x_test: np.ndarray   # (m, d)
    f_test: np.ndarray   # (m,)  clean targets
    parts: dict[int, np.ndarray]   # degree -> P_k f on the test points


def _problem(target: ProductTarget, d: int, n: int, n_test: int, noise: float, seed: int,
             stream: int) -> _Problem:
    rng = np.random.default_rng([seed, stream])
    x = sample_sphere(n, d, rng)
    x_test = sample_sphere(n_test, d, rng)
    y = target(x) + noise * rng.standard_normal(n)
    parts = {k: target.degree_part(x_test, k) for k in target.degrees()}
    return _Problem(d, x, y, x_test, target(x_test), parts)


def _log_curves(s, steps, train, test, oracle, learned_emp=None, learned_or=None) -> None:
    for i, step in enumerate(steps):
        s.log(int(step), "train", "mse", train[i])
        s.log(int(step), "test", "mse", test[i])
        s.log(int(step), "oracle", "mse", oracle[i])
        for k, arr in (learned_emp or {}).items():
            s.log(int(step), "test", f"learned/deg{k}", arr[i])
        for k, arr in (learned_or or {}).items():
            s.log(int(step), "oracle", f"learned/deg{k}", arr[i])


def _oracle_on_test(lam: np.ndarray, times: np.ndarray, parts: dict[int, np.ndarray]) -> np.ndarray:
    """The oracle predictor's MSE on the test points: mean_x (Σ_k e^{−λ_k t} P_k f(x))²: (T,).

    Same points as the empirical test error, so the two share the test set's sampling noise
    in ‖f‖² (the closed-form ``mse`` of split ``oracle`` is the exact population value).
    """
    resid = sum(np.outer(np.exp(-lam[k] * times), p) for k, p in parts.items())
    return np.mean(resid ** 2, axis=1)


def _learned(pred: np.ndarray, parts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """⟨f̂_t, P_k f⟩ / ‖P_k f‖² on the test set for each degree k: {k: (T,)}."""
    return {k: pred @ p / max(float(p @ p), 1e-300) for k, p in parts.items()}


# ----------------------------------------------------------------------------- units


def _stage_unit(s, config: Config, kernel_name: str, problem: _Problem, target: ProductTarget,
                times: np.ndarray) -> EmpiricalFlow:
    kernel = inner_product_kernel(kernel_name)
    kmax = target.max_degree + 1
    lam = funk_hecke_eigenvalues(kernel.h, config.d, kmax)
    energies = target.energies(config.d, kmax)
    flow = EmpiricalFlow(kernel(problem.x), problem.y)
    cross = kernel(problem.x_test, problem.x)
    pred = flow.predict(cross, times)
    test = np.mean((pred - problem.f_test) ** 2, axis=1)
    frac = oracle_learned_fraction(lam, times)
    _log_curves(s, times, flow.train_mse(times), test, oracle_mse(lam, energies, times),
                _learned(pred, problem.parts), {k: frac[:, k] for k in problem.parts})
    for step, value in zip(times, _oracle_on_test(lam, times.astype(float), problem.parts)):
        s.log(int(step), "oracle", "mse_on_test", value)
    # ‖P_{>l} f‖² on the test points: the stage-2/3 plateau with the test set's own sampling noise
    level = int(predicted_boundaries(lam, energies, config.d, config.n, float(kernel.h(np.array(1.0))))["l"])
    high = [p for k, p in problem.parts.items() if k > level]
    s.log(int(times[-1]), "oracle", "plateau_on_test", float(np.mean(sum(high) ** 2)) if high else 0.0)
    return flow


def _speed_unit(s, base: EmpiricalFlow, nugget: float, problem: _Problem, cross: np.ndarray,
                oracle: np.ndarray, times: np.ndarray) -> None:
    flow = base.with_nugget(nugget)
    _log_curves(s, times, flow.train_mse(times), flow.test_mse(cross, problem.f_test, times), oracle)


def half_mse(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/2n) Σ (y − f)², the bridge's objective (NOTE [flow convention])."""
    return 0.5 * torch.mean((f - y) ** 2)


def _bridge_unit(s, config: Config, target: ProductTarget, progress, device: str = "cpu") -> None:
    d, n = config.bridge_d, config.bridge_n
    problem = _problem(target, d, n, config.bridge_n_test, config.noise, config.seed, stream=7)
    gen = torch.Generator().manual_seed(config.seed)
    net = TwoLayerReLU(d, config.bridge_width, scale=config.bridge_scale, generator=gen)
    online = TwoLayerReLU(d, config.bridge_width, scale=config.bridge_scale)
    online.load_state_dict(net.state_dict())
    steps = np.concatenate([[0], log_time_grid(config.bridge_steps, config.points_per_decade)])
    times = config.bridge_lr * steps   # flow time; step η/α² on the α-scaled net moves f like η on α = 1

    # the empirical world of the network's own initial tangent kernel, as the exact discrete-GD
    # version of the closed form (the α-scaled kernel α²K with step η/α²; flow time η·step)
    lr = config.bridge_lr / config.bridge_scale ** 2
    try:
        flow = EmpiricalFlow(net.tangent_kernel(problem.x), problem.y, lr=lr)
    except ConfigError as exc:
        raise ConfigError(f"kernel-stages bridge: bridge_lr={config.bridge_lr} is too large for this "
                          f"tangent kernel ({exc}); lower bridge_lr") from None
    cross = net.tangent_kernel(problem.x_test, problem.x)
    k_train, k_test = flow.train_mse(lr * steps), flow.test_mse(cross, problem.f_test, lr * steps)
    # the oracle world of the infinite-width ReLU NTK
    kmax = target.max_degree + 1
    lam = funk_hecke_eigenvalues(inner_product_kernel("ntk_relu").h, d, kmax)
    oracle = oracle_mse(lam, target.energies(d, kmax), times)
    oracle_test = _oracle_on_test(lam, times.astype(float), problem.parts)

    # the networks may train on an accelerator (--device); the closed forms stay in float64 numpy
    net.to(device)
    online.to(device)
    x = torch.as_tensor(problem.x, device=device)
    y = torch.as_tensor(problem.y, device=device)
    x_test = torch.as_tensor(problem.x_test, device=device)
    f_test = torch.as_tensor(problem.f_test, device=device)
    rng = np.random.default_rng([config.seed, 8])
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    opt_online = torch.optim.SGD(online.parameters(), lr=lr)
    record = {int(v): i for i, v in enumerate(steps)}

    def online_step() -> None:
        # online SGD: a fresh batch every step, the same objective in expectation as R(f)
        xb_np = sample_sphere(config.bridge_batch, d, rng)
        xb = torch.as_tensor(xb_np, device=device)
        yb = torch.as_tensor(target(xb_np) + config.noise * rng.standard_normal(config.bridge_batch),
                             device=device)
        opt_online.zero_grad()
        half_mse(online(xb), yb).backward()
        opt_online.step()

    def log(step: int) -> None:
        i = record[step]
        with torch.no_grad():
            train_mse = torch.mean((net(x) - y) ** 2).item()
            test_mse = torch.mean((net(x_test) - f_test) ** 2).item()
            online_mse = torch.mean((online(x_test) - f_test) ** 2).item()
        if not all(map(math.isfinite, (train_mse, test_mse, online_mse))):
            raise ConfigError(f"kernel-stages bridge: GD diverged at step {step}; lower bridge_lr "
                              f"(got {config.bridge_lr})")
        if step > 0:   # step 0 cannot sit on a log axis; all curves start equal there anyway
            s.log(step, "train", "mse", train_mse)
            s.log(step, "test", "mse", test_mse)
            s.log(step, "train", "kernel_flow/mse", k_train[i])
            s.log(step, "test", "kernel_flow/mse", k_test[i])
            s.log(step, "test", "online_sgd/mse", online_mse)
            s.log(step, "oracle", "mse", oracle[i])
            s.log(step, "oracle", "mse_on_test", oracle_test[i])

    def after_step(step: int, loss: float) -> None:
        online_step()
        if step in record:
            log(step)

    log(0)
    # full-batch GD on (1/2n) Σ (y − f)² — NOTE [flow convention]; the online net steps beside it
    fit(net, opt, half_mse, x, y, steps=config.bridge_steps, batch_size=len(y), generator=torch.Generator(),
        callbacks=[after_step], progress=progress)


# ----------------------------------------------------------------------------- run


def run(config: Config, sink, ctx=None) -> dict[str, Any]:
    config.validate()
    target = ProductTarget.parse(config.target)
    times = log_time_grid(config.t_max, config.points_per_decade)
    problem = _problem(target, config.d, config.n, config.n_test, config.noise, config.seed, stream=1)
    flows: dict[str, EmpiricalFlow] = {}

    for name in config.kernels:
        key = f"stages/{name}"
        if sink.unit_done(key):
            continue
        with sink.unit(key, study="stages", kernel=name, nugget=0.0) as s:
            flows[name] = _stage_unit(s, config, name, problem, target, times)
        log.info("kernel-stages: finished %s", key)

    if config.nuggets:
        exp = inner_product_kernel("exp")
        lam = funk_hecke_eigenvalues(exp.h, config.d, target.max_degree + 1)
        oracle = oracle_mse(lam, target.energies(config.d, target.max_degree + 1), times)
        cross = None
        for mult in config.nuggets:
            key = f"speed/c={mult:g}"
            if sink.unit_done(key):
                continue
            if "exp" not in flows:
                flows["exp"] = EmpiricalFlow(exp(problem.x), problem.y)
            if cross is None:
                cross = exp(problem.x_test, problem.x)
            nugget = mult * config.n * lam[1]
            with sink.unit(key, study="speed", kernel="exp", nugget=float(nugget)) as s:
                _speed_unit(s, flows["exp"], nugget, problem, cross, oracle, times)

    if config.bridge and not sink.unit_done("bridge"):
        progress = sink.progress(config.bridge_steps, "kernel-stages bridge")
        try:
            with sink.unit("bridge", study="bridge", kernel=f"net width {config.bridge_width}",
                           nugget=0.0) as s:
                _bridge_unit(s, config, target, progress, getattr(ctx, "device", None) or "cpu")
        finally:
            progress.close()

    return summarize(sink.metrics(), config)


# ----------------------------------------------------------------------------- summary


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def summarize(frame: pd.DataFrame, config: Config) -> dict[str, Any]:
    """The summary from stored metrics: stage windows, predicted boundaries, speed and bridge gaps."""
    out: dict[str, Any] = {}
    target = ProductTarget.parse(config.target)
    kmax = target.max_degree + 1
    energies = target.energies(config.d, kmax)
    all_in_order = True
    for name in config.kernels:
        unit = frame[(frame["study"] == "stages") & (frame["kernel"] == name)] if len(frame) else frame
        if not len(unit):
            continue
        t, train = curve(unit, "train", "mse")
        _, test = curve(unit, "test", "mse")
        _, oracle = curve(unit, "oracle", "mse")
        _, oracle_on_test = curve(unit, "oracle", "mse_on_test")   # shares the test points' noise
        report = detect_stages(t, train, test, oracle_on_test, noise_var=config.noise ** 2,
                               tol=config.stage_tol)
        p = f"{name}/"
        out[p + "stages_in_order"] = report.in_order
        out[p + "bootstrap_gap"] = _finite(report.bootstrap_gap)
        out[p + "t_fitted"] = _finite(first_step(t, report.memorisation_gap >= 1 - config.stage_tol))
        all_in_order &= report.in_order
        for w in report.windows:
            out[p + f"stage{w.stage}_start"] = w.start
            out[p + f"stage{w.stage}_end"] = w.end
        kernel = inner_product_kernel(name)
        lam = funk_hecke_eigenvalues(kernel.h, config.d, kmax)
        pred = predicted_boundaries(lam, energies, config.d, config.n, float(kernel.h(np.array(1.0))))
        for key, value in pred.items():
            out[p + "predicted/" + key] = _finite(value)
        _, plateau = curve(unit, "oracle", "plateau_on_test")
        if len(plateau):   # the frozen test error above ‖P_{>l}f‖² on the same points: variance + bias
            out[p + "plateau_on_test"] = float(plateau[-1])
            out[p + "plateau_excess"] = float(test[-1] - plateau[-1])
        w3 = report.window(3)
        if w3 is not None:   # how frozen the empirical test error is across stage 3
            in3 = (t >= w3.start) & (t <= w3.end)
            out[p + "stage3_test_change"] = float(np.ptp(test[in3]) / test[in3].mean())
        for label, when in (("t=d", config.d), ("t=n", config.n), ("end", t[-1])):
            i = int(np.argmin(np.abs(t - when)))
            out[p + f"{label}/train"] = float(train[i])
            out[p + f"{label}/test"] = float(test[i])
            out[p + f"{label}/oracle"] = float(oracle[i])
    out["stages_in_order"] = all_in_order

    speed = frame[frame["study"] == "speed"] if len(frame) else frame
    if len(speed):
        fits, finals = [], []
        for nugget in sorted(speed["nugget"].unique()):
            unit = speed[speed["nugget"] == nugget]
            t, train = curve(unit, "train", "mse")
            _, test = curve(unit, "test", "mse")
            t_fit = first_step(t, train < config.fit_tol)
            t_fit = math.inf if math.isnan(t_fit) else t_fit
            p = f"speed/c={nugget:.4g}/"
            out[p + "t_fit"] = _finite(t_fit)
            out[p + "final_test"] = float(test[-1])
            fits.append(t_fit)
            finals.append(float(test[-1]))
        out["speed/faster_fit_worse_test"] = bool(
            len(fits) > 1 and all(a > b for a, b in zip(fits, fits[1:]))
            and all(a < b for a, b in zip(finals, finals[1:])))

    bridge = frame[frame["study"] == "bridge"] if len(frame) else frame
    if len(bridge):
        for split in ("train", "test"):
            _, net = curve(bridge, split, "mse")
            _, ker = curve(bridge, split, "kernel_flow/mse")
            out[f"bridge/{split}_max_gap"] = float(np.max(np.abs(net - ker)) / ker[0])
            out[f"bridge/{split}_final_net"] = float(net[-1])
            out[f"bridge/{split}_final_kernel"] = float(ker[-1])
        _, online = curve(bridge, "test", "online_sgd/mse")
        _, oracle = curve(bridge, "oracle", "mse_on_test")
        out["bridge/online_vs_oracle_max_gap"] = float(np.max(np.abs(online - oracle)) / oracle[0])
        out["bridge/final_online"] = float(online[-1])
        out["bridge/final_oracle"] = float(oracle[-1])
    return out
