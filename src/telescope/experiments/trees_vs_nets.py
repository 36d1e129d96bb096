"""Neural networks vs gradient-boosted trees on irregular test data (paper Fig. 5, 14).

Per dataset: the 10% of rows farthest from the median along the first principal
component are "irregular"; the rest give train / validation / regular test rows. Test
sets of ``n_test`` rows hold a proportion p of irregular rows (``p_grid``). A GBT
(scikit-learn, random search over the Grinsztajn space) and a 3-layer width-64 ReLU MLP
(Adam, batch 128, learning rate searched) are tuned on validation with the same number of
random-search trials, retrained on train ∪ validation for ``n_seeds`` seeds and evaluated
on every test set; all of it is repeated for ``n_splits`` outer splits (NOTE [outer splits]).

Metrics per p: test MSE of both models, rel_p = (MSE^p_NN − MSE^p_GBT)/(MSE^0_NN −
MSE^0_GBT), and the normalised maximum kernel-weight norm
R = mean_t max_test ‖k_t(x)‖₂ / mean_t max_train ‖k_t(x)‖₂ for both models.

The network's kernel weight norms are the core measure
:mod:`telescope.lens.kernel_weights` (NOTE [network kernel weights] there: K_t at θ_{t−1}
against the batch, the Adam-preconditioned kernel as the headline ``kernel/max_weight_norm``,
the plain tangent kernel as ``kernel/max_weight_norm_ntk``, γ_t not included), recorded at
``kernel_records`` evenly spaced steps; R's mean over t is taken over those steps. For the GBT,
k_t is the tree kernel (``telescope.trees``), also without γ.

# NOTE [network inputs]
The paper takes its pipeline from Grinsztajn et al. (2022), whose networks see
Gaussianised features: scikit-learn's ``QuantileTransformer(output_distribution="normal")``
fitted on the training rows (``nn_inputs="quantile"``, the default; the transform is
refitted on train ∪ validation for the final models). A feature beyond the training range
then maps to the training extreme, as it does for a tree. With ``nn_inputs="standard"``
the network sees the same standardised (partly logged) features as the GBT and
extrapolates linearly along them; on houses, where the irregular rows are blocks whose
logged size counts lie beyond the training range and the target depends on count
*ratios* (differences of logged counts, linear in the inputs), that lets the network
beat the tree on irregular rows and reverses the paper's fact 15 (docs/trees-vs-nets.md).
The GBT always sees the standardised features (trees are invariant to monotone maps).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from telescope.errors import ConfigError, DivergenceError
from telescope.experiments.base import RunContext, bounded
from telescope.lens.kernel_weights import KernelWeightRecorder
from telescope.train import batches, fit

log = logging.getLogger(__name__)

KERNEL = "kernel/max_weight_norm"
KERNEL_NTK = "kernel/max_weight_norm_ntk"
_MAX_DEPTHS = (None, 2, 3, 4, 5)                     # GOV22 GBT space (digest Sec. 6.4)
_MAX_DEPTH_P = (0.1, 0.1, 0.6, 0.1, 0.1)


@dataclass(frozen=True)
class Config:
    datasets: tuple[str, ...] = ("houses",)
    p_grid: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5)
    irregular_frac: float = bounded(0.1, gt=0, lt=1)
    skew_threshold: float = 2.0             # |skewness| above which a feature is logged (inf: never)
    target_scaling: str = bounded("standard", choices=("standard", "none"))  # NOTE [what the paper leaves open]
    fit_rows: str = bounded("all", choices=("all", "train"))  # rows the transforms, PCA and median are fitted on
    n_val: int = bounded(2000, ge=1)
    n_test: int = bounded(4000, ge=1)
    max_train: int = bounded(0, ge=0)  # 0: all remaining regular rows
    gbt_trials: int = bounded(25, ge=1)     # the paper: 25 random-search trials for each model
    gbt_estimators: tuple[float, ...] = bounded((10.5, 1000.5), gt=0)  # LogUniformInt bounds
    nn_trials: int = bounded(25, ge=1)      # must equal gbt_trials (equal search budgets)
    nn_lr: tuple[float, ...] = bounded((1e-5, 1e-2), gt=0)  # LogUniform bounds
    nn_epochs: int = bounded(60, ge=1)
    nn_search_epochs: int = bounded(0, ge=0)  # 0: nn_epochs (the searched lr is then the one for the final budget)
    batch_size: int = bounded(128, ge=1)
    width: int = bounded(64, ge=1)
    depth: int = bounded(3, ge=1)  # hidden layers (4 nn.Linear)
    optimizer: str = bounded("adam", choices=("adam", "sgd"))  # "adam" | "sgd"
    nn_inputs: str = bounded("quantile", choices=("quantile", "standard"))  # GOV22: quantile; NOTE [network inputs]
    kernel_records: int = bounded(20, ge=1)
    n_seeds: int = bounded(2, ge=1)          # model seeds per split (final retraining)
    n_splits: int = bounded(1, ge=1)         # outer splits: seeds seed, seed+1, …; NOTE [outer splits]
    seed: int = bounded(0, ge=0)

    # NOTE [sensitivity presets]: quick plus one choice the paper leaves open (docs/trees-vs-nets.md)
    _QUICK: ClassVar[dict] = {"max_train": 4000, "n_val": 1000, "n_test": 2000, "gbt_trials": 10, "nn_trials": 10,
                              "nn_epochs": 30, "kernel_records": 10, "n_seeds": 1, "n_splits": 3}
    PRESETS: ClassVar[dict] = {
        "tiny": {"max_train": 600, "n_val": 200, "n_test": 400, "gbt_trials": 2,
                 "gbt_estimators": (10.5, 30.5), "nn_trials": 2, "nn_epochs": 2,
                 "nn_search_epochs": 1, "kernel_records": 3, "n_seeds": 1,
                 "p_grid": (0.0, 0.25, 0.5)},
        "quick": _QUICK,
        "quick-fulltrain": {**_QUICK, "max_train": 0},
        "quick-trials25": {**_QUICK, "gbt_trials": 25, "nn_trials": 25},
        "quick-nolog": {**_QUICK, "skew_threshold": 1e9},   # no feature is that skewed: no log
        "quick-rawtarget": {**_QUICK, "target_scaling": "none"},
        "quick-trainfit": {**_QUICK, "fit_rows": "train"},
        "quick-standard": {**_QUICK, "nn_inputs": "standard"},
        "quick-sgd": {**_QUICK, "optimizer": "sgd", "nn_lr": (1e-3, 3e-1)},
        "quick-epochs10": {**_QUICK, "nn_epochs": 10},
        "quick-epochs100": {**_QUICK, "nn_epochs": 100},
        "paper": {"datasets": ("houses", "california", "house_sales", "house_16H"),
                  "nn_trials": 25, "nn_epochs": 100, "kernel_records": 50, "n_seeds": 4},
    }

    def validate(self) -> None:
        from telescope.data.tabular import DATASETS

        bad = [d for d in self.datasets if d not in DATASETS]
        if bad or not self.datasets:
            raise ConfigError(f"trees-vs-nets: datasets={self.datasets}: choose from {', '.join(DATASETS)}")
        if not self.p_grid or self.p_grid[0] != 0.0 or list(self.p_grid) != sorted(set(self.p_grid)) \
                or self.p_grid[-1] >= 1:
            raise ConfigError(f"trees-vs-nets: p_grid={self.p_grid}: give increasing proportions "
                              "starting at 0 and below 1, e.g. 0,0.125,0.25,0.375,0.5")
        if len(self.gbt_estimators) != 2 or len(self.nn_lr) != 2:
            raise ConfigError("trees-vs-nets: gbt_estimators and nn_lr take two bounds: low,high")
        if self.gbt_trials != self.nn_trials:
            raise ConfigError(f"trees-vs-nets: gbt_trials={self.gbt_trials}, nn_trials={self.nn_trials}: the "
                              "comparison needs equal search budgets (the paper: 25 each); set both to the same value")

    @property
    def search_epochs(self) -> int:
        return self.nn_search_epochs or self.nn_epochs


# NOTE [outer splits]
# One outer split is one draw of the regular rows' shuffle into train / validation / regular
# test, of the irregular rows' order, and of both random searches (split seed s = seed + k for
# k < n_splits); its final models are retrained for ``n_seeds`` model seeds s·1000 + j. A GBT
# with subsample = 1 depends on its seed only through tie-breaking among equally good
# splits, so model seeds barely move it: the spread that matters is between outer splits.
# ``summarise`` reports the mean over splits and the standard error over splits (over model
# seeds when there is one split).
#
# NOTE [what the paper leaves open]
# §6.2–6.5 of the digest leave these choices open; each is a config key and a ``quick-*`` preset
# (NOTE [sensitivity presets]): the log transform of skewed features (``skew_threshold``, inf:
# none), target rescaling (``target_scaling``), whether the transforms, the PCA and the median
# are fitted on all rows or on training rows (``fit_rows``, :func:`telescope.data.tabular.
# refit_on_train`), the network's inputs (``nn_inputs``), optimizer and epochs (``optimizer``,
# ``nn_epochs``). Whether Adam's φ_t enters R: both are logged in every run (``R_nn`` with it,
# ``R_nn_ntk`` without). Whether γ_t enters R: the learning rate is constant, so it cancels
# exactly (NOTE [network kernel weights]).


def _p_split(p: float) -> str:
    return f"p={p:g}"


# ----------------------------------------------------------------------------- data


@dataclass
class _Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_fit: np.ndarray              # train ∪ val (final models)
    y_fit: np.ndarray
    x_test: np.ndarray             # regular test pool then irregular pool (unique rows)
    y_test: np.ndarray
    test_rows: dict = field(default_factory=dict)   # split name -> row indices into x_test
    nn_search: tuple = ()          # the network's (x_train, x_val), NOTE [network inputs]
    nn_final: tuple = ()           # the network's (x_fit, x_test)


def _load(name: str, config: Config, ctx: RunContext, split: int) -> _Data:
    """The rows of outer split ``split`` (NOTE [outer splits]), preprocessed as ``config`` says."""
    from telescope.data.tabular import irregular_split, load_tabular, preprocess, refit_on_train

    x_raw, y_raw, _ = load_tabular(name, ctx.data_dir)
    scale_target = config.target_scaling == "standard"
    x, y, info = preprocess(x_raw, y_raw, skew_threshold=config.skew_threshold, scale_target=scale_target)
    sp = irregular_split(x, seed=split, irregular_frac=config.irregular_frac, n_val=config.n_val,
                         n_test=config.n_test, max_p=max(config.p_grid), max_train=config.max_train or None)
    if config.fit_rows == "train":
        x, y, info, sp = refit_on_train(x_raw, y_raw, sp, seed=split, skew_threshold=config.skew_threshold,
                                        scale_target=scale_target)
    k_irr = int(round(max(config.p_grid) * config.n_test))
    pool = np.concatenate([sp.test_regular, sp.irregular[:k_irr]])
    where = {int(r): i for i, r in enumerate(pool)}
    fit = np.concatenate([sp.train, sp.val])
    data = _Data(x[sp.train], y[sp.train], x[sp.val], y[sp.val], x[fit], y[fit], x[pool], y[pool])
    for p in config.p_grid:
        data.test_rows[_p_split(p)] = np.array([where[int(r)] for r in sp.test(p)])
    if config.nn_inputs == "quantile":
        from telescope.data.tabular import quantile_gaussianise

        data.nn_search = quantile_gaussianise(data.x_train, data.x_val, seed=split)
        data.nn_final = quantile_gaussianise(data.x_fit, data.x_test, seed=split)
    else:
        data.nn_search, data.nn_final = (data.x_train, data.x_val), (data.x_fit, data.x_test)
    log.info("trees-vs-nets %s split %d: train %d, val %d, test pool %d, logged features %s",
             name, split, len(sp.train), len(sp.val), len(pool), info["logged"])
    return data


# ----------------------------------------------------------------------------- GBT


def _gbt_space(rng: np.random.Generator, config: Config) -> dict:
    lo, hi = config.gbt_estimators
    return {
        "learning_rate": float(np.exp(rng.normal(np.log(0.01), np.log(10.0)))),
        "n_estimators": int(round(np.exp(rng.uniform(np.log(lo), np.log(hi))))),
        "max_depth": _MAX_DEPTHS[rng.choice(len(_MAX_DEPTHS), p=_MAX_DEPTH_P)],
    }


def _gbt(hp: dict, seed: int):
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(loss="squared_error", subsample=1.0, random_state=seed, **hp)


def _gbt_search(data: _Data, config: Config, split: int, unit) -> None:
    rng = np.random.default_rng([split, 1])
    for trial in range(config.gbt_trials):
        hp = _gbt_space(rng, config)
        gbr = _gbt(hp, split).fit(data.x_train, data.y_train)
        mse = float(np.mean((gbr.predict(data.x_val) - data.y_val) ** 2))
        unit.log_dict(trial, "val", {"mse": mse if np.isfinite(mse) else math.inf,
                                     "hp/learning_rate": hp["learning_rate"],
                                     "hp/n_estimators": hp["n_estimators"],
                                     "hp/max_depth": 0 if hp["max_depth"] is None else hp["max_depth"]})


def _gbt_final(data: _Data, hp: dict, seed: int, unit) -> None:
    from telescope.trees import tree_kernel_weight_norms

    gbr = _gbt(hp, seed).fit(data.x_fit, data.y_fit)
    pred = gbr.predict(data.x_test)
    norms_train = tree_kernel_weight_norms(gbr, data.x_fit)              # (T, n)
    norms_test = tree_kernel_weight_norms(gbr, data.x_fit, data.x_test)  # (T, m)
    max_train = norms_train.max(axis=1)
    for t in range(norms_train.shape[0]):
        unit.log(t + 1, "train", KERNEL, max_train[t])
    for split, rows in data.test_rows.items():
        unit.log(0, split, "mse", float(np.mean((pred[rows] - data.y_test[rows]) ** 2)))
        m = norms_test[:, rows].max(axis=1)
        for t in range(len(m)):
            unit.log(t + 1, split, KERNEL, m[t])
    unit.log(0, "train", "mse", float(np.mean((gbr.predict(data.x_fit) - data.y_fit) ** 2)))


# ----------------------------------------------------------------------------- network


def _mlp(d: int, config: Config) -> torch.nn.Module:
    """``config.depth`` hidden ReLU layers of ``config.width`` units, scalar output (n,)."""
    from telescope.models import MLP

    return MLP(d, config.width, config.depth + 1)


class _EpochLoss:
    """``fit`` hooks for :func:`_train_nn`: the epoch's mean training loss, logged at each epoch's end."""

    def __init__(self, n: int, steps_per_epoch: int, unit):
        self.n, self.steps_per_epoch, self.unit = n, steps_per_epoch, unit
        self.running, self.idx = 0.0, None

    def before_step(self, step: int, idx: torch.Tensor) -> None:
        self.idx = idx

    def __call__(self, step: int, loss: float) -> None:
        self.running += loss * self.idx.numel()
        if step % self.steps_per_epoch == 0:
            if self.unit is not None:
                self.unit.log(step, "train", "loss", self.running / self.n)
            self.running = 0.0


def _train_nn(data: _Data, config: Config, lr: float, seed: int, epochs: int, device: str,
              x_fit: np.ndarray, y_fit: np.ndarray, unit=None, record: bool = False) -> torch.nn.Module:
    """Mini-batch training (every row once per epoch, the last batch short); with ``record``,
    logs the kernel weight norms (:class:`~telescope.lens.kernel_weights.KernelWeightRecorder`)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float32
    x = torch.as_tensor(x_fit, dtype=dt, device=device)
    y = torch.as_tensor(y_fit, dtype=dt, device=device).reshape(-1)
    model = _mlp(x.shape[1], config).to(device=device, dtype=dt)
    params = list(model.parameters())
    opt = (torch.optim.Adam(params, lr=lr) if config.optimizer == "adam"
           else torch.optim.SGD(params, lr=lr))
    n, bs = x.shape[0], config.batch_size
    steps_per_epoch = math.ceil(n / bs)
    total = epochs * steps_per_epoch
    epoch_loss = _EpochLoss(n, steps_per_epoch, unit)
    hooks_before, hooks_after = [epoch_loss.before_step], [epoch_loss]
    if record:
        rec_steps = np.unique(np.linspace(1, total, min(config.kernel_records, total)).round().astype(int)).tolist()
        x_test = torch.as_tensor(data.nn_final[1], dtype=dt, device=device)
        kernels = KernelWeightRecorder(model, opt, x, {"train": x, "test": x_test}, rec_steps,
                                       precondition=config.optimizer == "adam",
                                       record=_kernel_logger(data.test_rows, unit))
        hooks_before.append(kernels.before_step)
        hooks_after.insert(0, kernels)
    fit(model, opt, torch.nn.functional.mse_loss, x, y, steps=total,
        stream=batches(n, bs, gen, drop_last=False), before_step=hooks_before, callbacks=hooks_after)
    return model


def _kernel_logger(test_rows: dict, unit):
    """``record`` of :class:`KernelWeightRecorder`: max_x ‖k_t(x)‖₂ on train and on every test split."""
    def record(step: int, norms: dict) -> None:
        per_split = {"train": norms["train"]}
        tn, to = norms["test"]
        for split, rows in test_rows.items():
            r = torch.as_tensor(rows, device=tn.device)
            per_split[split] = (tn[r], to[r])
        for split, (ntk, opt) in per_split.items():
            unit.log(step, split, KERNEL_NTK, float(ntk.max()))
            unit.log(step, split, KERNEL, float(opt.max()))
    return record


def _nn_predict(model: torch.nn.Module, x: np.ndarray, device: str) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=torch.float32, device=device)).reshape(-1).double().cpu().numpy()


def _nn_search(data: _Data, config: Config, split: int, device: str, unit) -> None:
    rng = np.random.default_rng([split, 2])
    lo, hi = config.nn_lr
    for trial in range(config.nn_trials):
        lr = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        try:
            model = _train_nn(data, config, lr, split, config.search_epochs, device,
                              data.nn_search[0], data.y_train)
            mse = float(np.mean((_nn_predict(model, data.nn_search[1], device) - data.y_val) ** 2))
        except DivergenceError:
            mse = math.inf
        unit.log_dict(trial, "val", {"mse": mse if np.isfinite(mse) else math.inf, "hp/learning_rate": lr})


def _nn_final(data: _Data, config: Config, lr: float, seed: int, device: str, unit) -> None:
    x_fit, x_test = data.nn_final
    model = _train_nn(data, config, lr, seed, config.nn_epochs, device, x_fit, data.y_fit,
                      unit=unit, record=True)
    pred = _nn_predict(model, x_test, device)
    for split, rows in data.test_rows.items():
        unit.log(0, split, "mse", float(np.mean((pred[rows] - data.y_test[rows]) ** 2)))
    unit.log(0, "train", "mse", float(np.mean((_nn_predict(model, x_fit, device) - data.y_fit) ** 2)))


# ----------------------------------------------------------------------------- run


def _best(frame: pd.DataFrame, ds: str, model: str, split: int) -> dict:
    rows = frame[(frame["dataset"] == ds) & (frame["model"] == model) & (frame["phase"] == "search")
                 & (frame["split_seed"] == split)]
    wide = rows.pivot_table(index="step", columns="name", values="value", aggfunc="first")
    best = wide.sort_values(["mse"], kind="stable").iloc[0]
    if model == "nn":
        return {"learning_rate": float(best["hp/learning_rate"])}
    depth = int(best["hp/max_depth"])
    return {"learning_rate": float(best["hp/learning_rate"]), "n_estimators": int(best["hp/n_estimators"]),
            "max_depth": None if depth == 0 else depth}


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), (float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0)


def _split_results(final: pd.DataFrame, p_grid: list[float]) -> dict:
    """One outer split: per (model, quantity, p) the per-model-seed values (mse, R, R_ntk)."""
    res: dict = {}
    for model in ("gbt", "nn"):
        m = final[final["model"] == model]
        for p in p_grid:
            sp = _p_split(p)
            mse = m[(m["split"] == sp) & (m["name"] == "mse")].groupby("seed")["value"].first()
            res[(model, "mse", p)] = mse.to_numpy(float)
            for name, key in ((KERNEL, "R"), (KERNEL_NTK, "R_ntk")):
                k = m[m["name"] == name]
                if k.empty:
                    continue
                rs = []
                for _, ks in k.groupby("seed"):
                    tr = ks[ks["split"] == "train"].set_index("step")["value"]
                    te = ks[ks["split"] == sp].set_index("step")["value"]
                    rs.append(float(te.mean() / tr.loc[te.index].mean()))
                res[(model, key, p)] = np.array(rs)
    return res


def summarise(frame: pd.DataFrame, config: dict) -> dict:
    """Per dataset and p: test MSEs, rel_p and R for both models, from stored metrics.

    Within an outer split, MSEs and R are averaged over model seeds and rel_p is taken from
    the seed-mean MSEs (its sign flips if the network wins at p = 0, so the gap
    MSE_NN − MSE_GBT is reported too). Across splits (NOTE [outer splits]) every quantity is
    the mean over splits with ``*_se`` its standard error over splits (over model seeds when
    there is one split). ``<ds>/split<s>/p=<p>/{rel,mse_gap}`` keep each split's values and
    ``<ds>/splits/*`` count the splits on which a fact holds.
    """
    out: dict = {}
    final = frame[frame["phase"] == "final"]
    p_grid = list(config["p_grid"])
    for ds in config["datasets"]:
        d = final[final["dataset"] == ds]
        if d.empty:
            continue
        splits = sorted(int(s) for s in d["split_seed"].unique())
        per = {s: _split_results(d[d["split_seed"] == s], p_grid) for s in splits}
        one = len(splits) == 1

        def agg(model, key, p):
            if one:
                return _mean_se(per[splits[0]][(model, key, p)])
            return _mean_se([per[s][(model, key, p)].mean() for s in splits])

        rel_s, gap_s = {}, {}
        for s in splits:
            mse = {(m, p): per[s][(m, "mse", p)].mean() for m in ("gbt", "nn") for p in p_grid}
            denom = mse[("nn", 0.0)] - mse[("gbt", 0.0)]
            gap_s[s] = [float(mse[("nn", p)] - mse[("gbt", p)]) for p in p_grid]
            rel_s[s] = [g / denom if denom != 0 else float("nan") for g in gap_s[s]]
            for p, g, r in zip(p_grid, gap_s[s], rel_s[s]):
                out[f"{ds}/split{s}/p={p:g}/mse_gap"], out[f"{ds}/split{s}/p={p:g}/rel"] = g, float(r)
        for i, p in enumerate(p_grid):
            tag = f"{ds}/p={p:g}"
            out[f"{tag}/mse_gbt"], out[f"{tag}/mse_gbt_se"] = agg("gbt", "mse", p)
            out[f"{tag}/mse_nn"], out[f"{tag}/mse_nn_se"] = agg("nn", "mse", p)
            out[f"{tag}/mse_gap"], out[f"{tag}/mse_gap_se"] = _mean_se([gap_s[s][i] for s in splits])
            out[f"{tag}/rel"], out[f"{tag}/rel_se"] = _mean_se([rel_s[s][i] for s in splits])
            out[f"{tag}/R_nn"], out[f"{tag}/R_nn_se"] = agg("nn", "R", p)
            out[f"{tag}/R_nn_ntk"], out[f"{tag}/R_nn_ntk_se"] = agg("nn", "R_ntk", p)
            out[f"{tag}/R_gbt"], out[f"{tag}/R_gbt_se"] = agg("gbt", "R", p)
        rel = [out[f"{ds}/p={p:g}/rel"] for p in p_grid]
        r_nn = [out[f"{ds}/p={p:g}/R_nn"] for p in p_grid]
        r_gbt = [out[f"{ds}/p={p:g}/R_gbt"] for p in p_grid]
        gap = [out[f"{ds}/p={p:g}/mse_gap"] for p in p_grid]
        out[f"{ds}/check/gbt_beats_nn_at_p0"] = bool(gap[0] > 0)
        out[f"{ds}/check/rel_increases"] = bool(rel[-1] > rel[0])        # meaningful when gap[0] > 0
        out[f"{ds}/check/gap_increases"] = bool(gap[-1] > gap[0])        # NN degrades faster than GBT
        out[f"{ds}/check/R_nn_increases"] = bool(r_nn[-1] > r_nn[0])
        out[f"{ds}/check/R_nn_exceeds_R_gbt"] = bool(min(a - b for a, b in zip(r_nn, r_gbt)) > 0)
        out[f"{ds}/check/R_gbt_le_1"] = bool(max(r_gbt) <= 1 + 1e-12)
        out[f"{ds}/splits/n"] = len(splits)
        out[f"{ds}/splits/gbt_beats_nn_at_p0"] = int(sum(gap_s[s][0] > 0 for s in splits))
        out[f"{ds}/splits/rel_increases"] = int(sum(rel_s[s][-1] > rel_s[s][0] for s in splits))
        out[f"{ds}/splits/gap_increases"] = int(sum(gap_s[s][-1] > gap_s[s][0] for s in splits))
    return out


def run(config: Config, sink, ctx: RunContext = RunContext()) -> dict:
    device = ctx.device
    units = []
    for ds in config.datasets:
        for split in range(config.seed, config.seed + config.n_splits):
            tags = dict(dataset=ds, split_seed=split)
            units += [(f"{ds}/split{split}/{m}/search", dict(tags, model=m, phase="search", seed=split))
                      for m in ("gbt", "nn")]
            units += [(f"{ds}/split{split}/{m}/seed{s}", dict(tags, model=m, phase="final", seed=s))
                      for s in range(split * 1000, split * 1000 + config.n_seeds) for m in ("gbt", "nn")]
    bar = sink.progress(len(units), "trees-vs-nets")
    loaded: dict[tuple, _Data] = {}
    for key, tags in units:
        if sink.unit_done(key):
            bar.update()
            continue
        ds, model, split = tags["dataset"], tags["model"], tags["split_seed"]
        if (ds, split) not in loaded:
            loaded.clear()
            loaded[(ds, split)] = _load(ds, config, ctx, split)
        data = loaded[(ds, split)]
        log.info("trees-vs-nets: unit %s", key)
        with sink.unit(key, **tags) as unit:
            if tags["phase"] == "search":
                if model == "gbt":
                    _gbt_search(data, config, split, unit)
                else:
                    _nn_search(data, config, split, device, unit)
            else:
                hp = _best(sink.metrics(), ds, model, split)
                if model == "gbt":
                    _gbt_final(data, hp, tags["seed"], unit)
                else:
                    _nn_final(data, config, hp["learning_rate"], tags["seed"], device, unit)
                for name, value in hp.items():
                    unit.log(0, "config", f"hp/{name}", 0 if value is None else value)
        bar.update()
    bar.close()
    from telescope.experiments.base import config_to_dict

    return summarise(sink.metrics(), config_to_dict(config))
