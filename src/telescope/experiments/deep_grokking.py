"""Deep grokking: MNIST grokking in deep MLPs and feature-rank collapse (Fan, Pascanu & Jaggi 2024).

Omnigrok's recipe on deeper nets: a depth-L ReLU MLP (784 → width → … → 10) whose every
initial parameter is multiplied by α, AdamW, MSE on one-hot targets with 10 raw outputs,
batch 200, a small training set. The net fits the training set early, test accuracy rises
much later, and the rise coincides with a drop of the feature rank of the later layers
while the weight norm decays smoothly. At log-spaced steps it logs train/test accuracy
(``accuracy``, ``error``) and loss, ``weight_norm`` and ``weight_norm/last_layer``,
``feature_rank/<l>`` for every linear layer l = 1..L (and robust variants), the tunnel
length, and at a coarser cadence linear-probe accuracy per layer and the NTK alignment of
the last hidden layer. Digest: shared/papers/grokking-and-kernel-dynamics.md (a).

# NOTE [deep grokking data]
# The training set is a class-balanced draw of N MNIST training images by default, the
# paper's first N with ``subset="first"`` (NOTE [ten-class digit subsets] in
# telescope/data/digits.py). Per-step test metrics use the first ``n_test`` test images
# (2,000 keep float64 ranks and probes cheap); the final step is also evaluated on all
# 10,000 test images (split ``test_full``).

# NOTE [deep grokking deviations]
# * Ranks: pre-activations (outputs of each ``nn.Linear``) of a float64 copy of the net on
#   the test images, NOTE [feature rank tolerance] in telescope/measures/features.py.
#   Two diagnostics of that count go with it: ``dead_units/<l>`` (hidden units ≤ 0 on every
#   test image; layer l+1's rank is at most width − dead_units/l) and
#   ``feature_rank_f32tol/<l>``, the same count with the tolerance the authors' code applies
#   to float32 features (d·eps(float32)·σ_max ≈ 1.5e-5·σ_max at d = 128; their text: "the
#   epsilon value of the dtype of the feature matrix").
# * Tunnel length counts the width-w layers 1..L−1 with rank < 0.75·w (the output layer's
#   rank is at most 10 and is left out); ``tunnel_length`` uses the authors' rank,
#   ``tunnel_length_rel`` the rank at relative tolerance ``rank_rtol``.
# * Linear probes: a ridge-regression classifier on one-hot targets, fit in closed form on
#   the standardised layer features of the training set, accuracy on the test images. The
#   authors train a softmax head with Adam for 30 epochs; the closed form needs no
#   learning rate and is deterministic, and measures the same thing (linear decodability).
# * NTK alignment: the trace tangent kernel Σ_k ∇θ f_k(x)·∇θ f_k(x') restricted to the
#   parameters (weight and bias) of the last hidden layer (``last_hidden_ntk``:
#   ``telescope.kernels.empirical_ntk(params=[...])`` on a float64 copy) on the first
#   ``ntk_points`` test images, centred-aligned with the one-hot label kernel.
# * Not included: the smoother's effective parameters p_train/p_test. With 10 outputs and
#   N ≥ 1000 the exact smoother tracks an (N·10)-column matrix per probe point through
#   every step; that is beyond a CPU-minutes preset (see docs/deep-grokking.md).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from telescope.data import DigitClasses, load_digit_classes
from telescope.errors import ConfigError
from telescope.experiments.base import RunContext, bounded
from telescope.experiments.units import Unit, run_units, unit_workers
from telescope.kernels import empirical_ntk, kernel_target_alignment
from telescope.measures import (as_float64, dead_units, feature_effective_rank, first_step, layer_features,
                                numerical_rank, probe_accuracy, tunnel_length, weight_norm)
from telescope.models import MLP, scale_init
from telescope.store import curve
from telescope.train import fit, log_steps, make_optimizer, squared_loss

log = logging.getLogger(__name__)

F32_EPS = float(torch.finfo(torch.float32).eps)  # NOTE [deep grokking deviations]: the float32-tolerance rank


@dataclass(frozen=True)
class Config:
    dataset: str = bounded("mnist", choices=("mnist", "digits"))
    subset: str = bounded("balanced", choices=("balanced", "first"))
    pool: str = bounded("train", choices=("train", "train+test"))
    test_keep: int = bounded(5000, ge=2)
    n_trains: tuple[int, ...] = bounded((1000, 2000), ge=10, nonempty=True)
    n_test: int = bounded(2000, ge=2)
    depths: tuple[int, ...] = bounded((6,), ge=2, nonempty=True)
    width: int = bounded(128, ge=1)
    alpha: float = bounded(6.0, gt=0)
    lr: float = bounded(1e-3, gt=0)
    weight_decays: tuple[float, ...] = bounded((0.1,), ge=0, nonempty=True)
    batch_size: int = bounded(200, ge=1)
    steps: int = bounded(20000, ge=1)
    seeds: int = bounded(1, ge=1)
    seed: int = bounded(0, ge=0)
    data_seed: int = bounded(0, ge=0)
    log_points: int = bounded(80, ge=2)
    probe_points: int = bounded(16, ge=0)
    probe_ridge: float = bounded(1e-3, ge=0)
    ntk_points: int = bounded(100, ge=0)
    rank_rtol: float = bounded(1e-3, gt=0)
    tunnel_fraction: float = bounded(0.75, gt=0, le=1)
    dtype: str = bounded("float32", choices=("float32", "float64"))

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(dataset="digits", n_trains=(300,), n_test=300, depths=(4,), width=32, alpha=2.0,
                     weight_decays=(0.1,), batch_size=100, steps=300, log_points=12, probe_points=3,
                     ntk_points=40),
        "quick": dict(),
        # 64-wide MLPs on N = 1000, one unit per run: the grid point of the depth and
        # weight-decay sweeps (`telescope sweep ... --grid "depths=4;8;12"`, docs/deep-grokking.md)
        "small": dict(n_trains=(1000,), n_test=1000, depths=(6,), width=64, log_points=60, probe_points=8,
                      ntk_points=0),
        # the paper's N = 7000 (Fig. 1c, 2 bottom, 4): 5,000 training images + 2,000 drawn from the
        # test file's second half; the first 5,000 test images stay the (disjoint) test set
        "multistage": dict(n_trains=(7000,), pool="train+test", test_keep=5000, n_test=2000, depths=(6,),
                           width=64, log_points=60, probe_points=8, ntk_points=0),
        "paper": dict(n_trains=(2000, 5000), n_test=10000, depths=(12,), width=400, alpha=8.0,
                      weight_decays=(0.01,),
                      steps=100_000, log_points=150, probe_points=30, ntk_points=200, dtype="float64"),
    }

    def validate(self) -> None:
        if self.pool == "train+test" and self.dataset != "mnist":
            raise ConfigError(f"deep-grokking: pool='train+test' with dataset={self.dataset!r}; the pooled "
                              "training set is an MNIST option, use dataset=mnist or pool=train")
        if self.pool == "train+test" and self.n_test > self.test_keep:
            raise ConfigError(f"deep-grokking: n_test={self.n_test} > test_keep={self.test_keep}; with "
                              "pool='train+test' per-step test images come from the kept test images, lower n_test")
        if self.subset == "balanced" and any(n % 10 for n in self.n_trains):
            raise ConfigError(f"deep-grokking: n_trains={self.n_trains}; with subset='balanced' each N must "
                              "be a multiple of 10 (N/10 images per class)")


def load_data(cfg: Config, n_train: int, root=None) -> DigitClasses:
    """The training subset of size ``n_train`` and the test images (NOTE [deep grokking data])."""
    return load_digit_classes(n_train, dataset=cfg.dataset, subset=cfg.subset, n_test=cfg.n_test,
                              data_seed=cfg.data_seed, pool=cfg.pool, test_keep=cfg.test_keep, root=root)


# ----------------------------------------------------------------------------- measurements


def last_hidden_ntk(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """Trace tangent kernel (n, n) float64 of the last hidden layer's weight and bias
    (the layer z = W h + b that feeds the last ReLU), on a float64 copy of ``model``; x (n, d)."""
    net = as_float64(model)
    layer = net.linear_layers()[-2]
    prefix = next(name for name, m in net.named_modules() if m is layer)
    return empirical_ntk(net, x.double(), params=[f"{prefix}.weight", f"{prefix}.bias"]).detach()


# ----------------------------------------------------------------------------- one run


def run_unit(cfg: Config, data: DigitClasses, depth: int, weight_decay: float, seed: int, sink,
             device: str = "cpu", progress=None) -> None:
    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(seed)
    model = MLP(data.x_train.shape[1], cfg.width, depth, 10)
    scale_init(model, cfg.alpha)
    model = model.to(device=device, dtype=dtype)
    x, y = data.x_train.to(device, dtype), data.y_train.to(device)
    onehot = torch.nn.functional.one_hot(y, 10).to(dtype)
    x_test, y_test = data.x_test.to(device, dtype), data.y_test.to(device)
    opt = make_optimizer("adamw", model.parameters(), lr=cfg.lr, weight_decay=weight_decay)
    loss_fn = squared_loss("mse")
    probes = set(log_steps(cfg.steps, cfg.probe_points)) if cfg.probe_points else set()
    checkpoints = set(log_steps(cfg.steps, cfg.log_points)) | probes
    hidden = depth - 1  # the width-w layers

    def evaluate(split: str, xs: torch.Tensor, ys: torch.Tensor, step: int) -> None:
        with torch.no_grad():
            out = model(xs).double()
        target = torch.nn.functional.one_hot(ys, 10).double()
        acc = float((out.argmax(1) == ys).double().mean())
        sink.log_dict(step, split, {"accuracy": acc, "error": 1.0 - acc,
                                    "mse": float(((out - target) ** 2).mean()),
                                    "loss_sum": float(((out - target) ** 2).sum(1).mean())})

    def record(step: int, mean_loss: float | None) -> None:
        evaluate("train", x, y, step)
        evaluate("test", x_test, y_test, step)
        sink.log_dict(step, "train", {"weight_norm": weight_norm(model.parameters()),
                                      "weight_norm/last_layer": weight_norm(model.linear_layers()[-1].parameters())})
        if mean_loss is not None:
            sink.log(step, "train", "loss", mean_loss)
        net64 = as_float64(model)
        feats = layer_features(net64, x_test.double())
        ranks, rel = [], []
        for layer, a in enumerate(feats, start=1):
            r, rr = numerical_rank(a), numerical_rank(a, rtol=cfg.rank_rtol)
            ranks.append(r)
            rel.append(rr)
            values = {f"feature_rank/{layer}": r, f"feature_rank_rel/{layer}": rr,
                      f"feature_rank_f32tol/{layer}": numerical_rank(a, rtol=a.shape[1] * F32_EPS),
                      f"effective_rank/{layer}": feature_effective_rank(a)}
            if layer <= hidden:
                values[f"dead_units/{layer}"] = dead_units(a)
            sink.log_dict(step, "test", values)
        sink.log_dict(step, "test", {
            "tunnel_length": tunnel_length(ranks[:hidden], cfg.width, cfg.tunnel_fraction),
            "tunnel_length_rel": tunnel_length(rel[:hidden], cfg.width, cfg.tunnel_fraction)})
        if step in probes:
            train_feats = layer_features(net64, x.double())
            for layer, (a_tr, a_te) in enumerate(zip(train_feats, feats), start=1):
                sink.log(step, "test", f"probe_accuracy/{layer}",
                         probe_accuracy(a_tr, y, a_te, y_test, cfg.probe_ridge))
            if cfg.ntk_points:
                xs = x_test[:cfg.ntk_points]
                kernel = last_hidden_ntk(model, xs)
                labels = torch.nn.functional.one_hot(y_test[:len(xs)], 10)
                sink.log(step, "test", "ntk/alignment", float(kernel_target_alignment(kernel, labels)))

    gen = torch.Generator().manual_seed(seed)
    fit(model, opt, loss_fn, x, onehot, steps=cfg.steps, batch_size=cfg.batch_size, generator=gen,
        record_at=(checkpoints, record), progress=progress)
    if cfg.dataset == "mnist" and len(data.y_test_full) > len(data.y_test):
        evaluate("test_full", data.x_test_full.to(device, dtype), data.y_test_full.to(device), cfg.steps)


def run(cfg: Config, sink, ctx: RunContext = RunContext()) -> dict[str, Any]:
    units = [(n, d, wd, cfg.seed + k) for n in cfg.n_trains for d in cfg.depths for wd in cfg.weight_decays
             for k in range(cfg.seeds)]
    bar = sink.progress(len(units) * cfg.steps, "deep-grokking")
    keys = {u: f"n={u[0]}/depth={u[1]}/wd={u[2]:g}/seed={u[3]}" for u in units}
    data = {n: load_data(cfg, n, ctx.data_dir)      # only the sizes a unit still to train needs
            for n in dict.fromkeys(u[0] for u in units if not sink.unit_done(keys[u]))}
    todo = [Unit(keys[(n, depth, wd, seed)], dict(n_train=int(n), depth=int(depth), weight_decay=float(wd),
                                                   seed=int(seed)),
                 (cfg, data.get(n), depth, wd, seed), dict(device=ctx.device))
            for n, depth, wd, seed in units]
    run_units(sink, todo, run_unit, workers=unit_workers(ctx), progress=bar, steps_per_unit=cfg.steps)
    bar.close()
    return summarize(sink.metrics(), cfg)


# ----------------------------------------------------------------------------- summary


RANKS = (("feature_rank", "rank"), ("feature_rank_rel", "rank_rel"), ("feature_rank_f32tol", "rank_f32tol"),
         ("effective_rank", "erank"))


def transition(frame, depth: int) -> dict[str, float]:
    """Times and values that describe one run's grokking (all steps are logged steps).

    * ``fit_step``: first step with train accuracy ≥ 0.95;
    * ``grok_step``: first step test accuracy reaches the midpoint between its value at
      ``fit_step`` and its final value (the time of the test-accuracy rise);
    * ``rank_drop_step/<l>``: first step after ``fit_step`` at which layer l's rank is below the
      midpoint between its value at ``fit_step`` and its final value (NaN if it did not drop
      by at least max(1.5, 2%)); ``rank_rel_*`` and ``erank_*`` the same for the
      relative-tolerance and effective ranks;
    * ranks, test accuracy and weight norm at ``fit_step``, ``grok_step`` and the end;
    * ``weight_norm_slope_ratio``: d log‖θ‖/dt over [grok, 1.5·grok] divided by that over
      [grok/1.5, grok] — about 1 when the norm shows no kink at the transition;
    * onsets (``rise_start_step``, ``*_fall_start/<l>``: 10% of the way), ``delay_ratio``,
      dead units at fit and end, the second-last layer's double descent (``*_dd_*``,
      :func:`_down_up_down`) and the norms' largest rebound (:func:`_max_rebound`);
      the keys are listed in docs/deep-grokking.md.
    """
    out: dict[str, float] = {}
    s_tr, acc_tr = curve(frame, "train", "accuracy")
    s_te, acc_te = curve(frame, "test", "accuracy")
    fit_step = first_step(s_tr, acc_tr >= 0.95)
    out["fit_step"] = fit_step
    out["final_train_accuracy"] = float(acc_tr[-1])
    out["final_test_accuracy"] = float(acc_te[-1])
    out["max_test_accuracy"] = float(acc_te.max())
    full = frame[(frame["split"] == "test_full") & (frame["name"] == "accuracy")]
    if len(full):
        out["final_test_accuracy_full"] = float(full["value"].iloc[-1])
    s_wn, wn = curve(frame, "train", "weight_norm")
    out["weight_norm_init"] = float(wn[0])
    out["weight_norm_final"] = float(wn[-1])
    out["weight_norm_max_rebound"] = _max_rebound(wn)
    _, wn_last = curve(frame, "train", "weight_norm/last_layer")
    if len(wn_last):
        out["last_layer_norm_max_rebound"] = _max_rebound(wn_last)
    for metric, short in RANKS:  # the second-last layer's double descent, fit or not
        s_r, r = curve(frame, "test", f"{metric}/{depth - 1}")
        if len(r):
            out[f"{short}_max/{depth - 1}"] = float(r.max())
            for part, value in zip(("first_drop", "rise", "second_drop"), _down_up_down(r)):
                out[f"{short}_dd_{part}/{depth - 1}"] = value
    if math.isnan(fit_step):
        out["grok_step"] = float("nan")
        return out
    at_fit = int(np.searchsorted(s_te, fit_step))
    out["test_accuracy_at_fit"] = float(acc_te[at_fit])
    mid = 0.5 * (acc_te[at_fit] + acc_te[-1])
    later = s_te >= fit_step
    grok_step = first_step(s_te[later], acc_te[later] >= mid) if acc_te[-1] - acc_te[at_fit] > 0.05 else float("nan")
    out["grok_step"] = grok_step
    out["delay_ratio"] = grok_step / fit_step if fit_step > 0 else float("nan")
    rose = acc_te[at_fit] + 0.1 * (acc_te[-1] - acc_te[at_fit])
    out["rise_start_step"] = (first_step(s_te[later], acc_te[later] >= rose) if not math.isnan(grok_step)
                              else float("nan"))
    out["weight_norm_at_fit"] = float(np.interp(fit_step, s_wn, wn))
    if not math.isnan(grok_step):
        out["weight_norm_at_grok"] = float(np.interp(grok_step, s_wn, wn))
        # d log(weight norm)/d step just after vs just before the rise: 1 = no kink
        lo, hi = grok_step / 1.5, min(1.5 * grok_step, float(s_wn[-1]))
        lw = lambda t: float(np.interp(t, s_wn, np.log(wn)))  # noqa: E731
        before = (lw(grok_step) - lw(lo)) / (grok_step - lo)
        after = (lw(hi) - lw(grok_step)) / max(hi - grok_step, 1e-12)
        out["weight_norm_slope_ratio"] = after / before if before != 0 else float("nan")
    for layer in range(1, depth):
        s_d, dead = curve(frame, "test", f"dead_units/{layer}")
        if len(dead):
            out[f"dead_units_at_fit/{layer}"] = float(dead[int(np.searchsorted(s_d, fit_step))])
            out[f"dead_units_final/{layer}"] = float(dead[-1])
    for metric, short in RANKS:
        for layer in range(1, depth + 1):
            s_r, r = curve(frame, "test", f"{metric}/{layer}")
            if not len(r):  # a metric this run did not log
                continue
            i_fit = int(np.searchsorted(s_r, fit_step))
            out[f"{short}_at_fit/{layer}"] = float(r[i_fit])
            out[f"{short}_final/{layer}"] = float(r[-1])
            drop_mid = 0.5 * (r[i_fit] + r[-1])
            after_fit = s_r >= fit_step
            dropped = r[i_fit] - r[-1] >= max(1.5, 0.02 * r[i_fit])
            out[f"{short}_drop_step/{layer}"] = (first_step(s_r[after_fit], r[after_fit] <= drop_mid)
                                                  if dropped else float("nan"))
            fall = r[i_fit] - 0.1 * (r[i_fit] - r[-1])
            out[f"{short}_fall_start/{layer}"] = (first_step(s_r[after_fit], r[after_fit] <= fall)
                                                  if dropped else float("nan"))
    return out


def _max_rebound(values: np.ndarray) -> float:
    """Largest relative rise of a curve above its running minimum, max_t v_t / min_{s≤t} v_s − 1
    (0 for a curve that never goes up: fact 8's "no slingshot plateaus or spikes")."""
    return float(np.max(values / np.minimum.accumulate(values)) - 1.0)


def _down_up_down(r: np.ndarray) -> tuple[float, float, float]:
    """A rank curve's double descent (facts 3, 9): for every peak index j, the trough i = the
    lowest point before j; first drop = highest point before i − r_i, rise = r_j − r_i,
    second drop = r_j − lowest point after j. Returns (first drop, rise, second drop) of the j
    with the largest min of the three: all three are > 0 only for a fall, rise, fall; all
    zero for a curve without one (a transient rise at the start followed by one fall has
    no first drop and scores 0)."""
    best, out = 0.0, (0.0, 0.0, 0.0)
    for j in range(1, len(r) - 1):
        i = int(np.argmin(r[:j + 1]))
        first, rise, fall = float(r[:i + 1].max() - r[i]), float(r[j] - r[i]), float(r[j] - r[j:].min())
        if min(first, rise, fall) > best:
            best, out = min(first, rise, fall), (first, rise, fall)
    return out


def summarize(frame, cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": cfg.steps}
    for (n, depth, wd, seed), g in frame.groupby(["n_train", "depth", "weight_decay", "seed"]):
        prefix = f"n={n}/depth={depth}/wd={wd:g}/seed={seed}"
        values = transition(g, int(depth))
        for key, value in values.items():
            out[f"{prefix}/{key}"] = None if isinstance(value, float) and math.isnan(value) else value
    if len(frame.groupby(["n_train", "depth", "weight_decay", "seed"])) == 1:
        # one unit per run (a `telescope sweep` grid point): the headline values without the unit
        # prefix and with the second-last layer called so, to line up across depths in table.csv
        last = f"/{int(depth) - 1}"
        for key, value in values.items():
            if "/" not in key or key.endswith(last):
                out[key.replace(last, "/second_last") if key.endswith(last) else key] = (
                    None if isinstance(value, float) and math.isnan(value) else value)
    return out
