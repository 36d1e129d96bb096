"""XGBoost regressors as telescoping kernel models (optional extra: ``xgboost``).

``telescope.trees``' functions (``boosting_smoother``, ``boosting_offset``,
``tree_kernel``, ``tree_kernel_weight_norms``, …) accept a fitted ``xgboost.XGBRegressor``
in place of scikit-learn's ``GradientBoostingRegressor`` when it was fitted with the
parity settings below. This module holds the XGBoost-specific parts; ``xgboost`` itself
is imported only when such a model is passed.

# NOTE [xgboost parity]
With squared error XGBoost's gradient is g_i = f(x_i) − y_i and its hessian h_i = 1 per
(unweighted) row, and a leaf's value is −η · Σ_leaf g_i / (Σ_leaf h_i + λ) (plus the L1
soft-threshold α and the step cap ``max_delta_step``). With ``reg_lambda=0``,
``reg_alpha=0`` and ``max_delta_step=0`` the leaf value is η · mean(y − f) over the
training rows in the leaf: exactly the tree kernel K_t(x, x_i) = 1{same leaf}/n_leaf of
scikit-learn's GBT. ``subsample=1`` keeps every row in every tree; column sampling,
``gamma`` (split pruning) and ``max_depth`` only change which partition is learned, so they
are allowed. h_0 is the constant ``base_score`` (XGBoost ≥ 2 estimates it from the targets
unless it is given; ``boost_from_average`` is not needed: any constant is handled by the
offset c). XGBoost computes in float32, so ``S @ y + c`` matches ``predict`` to float32
rounding (about 1e-6 relative), not to 1e-10 as for scikit-learn. Each leaf's "cover"
(Σ h_i) is compared with the number of x_train rows the leaf receives, which checks that
``x_train`` is the fitting data and that no sample weights were used.
"""

from __future__ import annotations

import json

import numpy as np

from telescope.errors import ConfigError, ShapeError, UnsupportedModelError

PARITY = {"objective": "reg:squarederror", "reg_lambda": 0.0, "reg_alpha": 0.0,
          "max_delta_step": 0.0, "subsample": 1.0, "booster": "gbtree"}
"""Keyword arguments of ``xgboost.XGBRegressor`` that make its trees plain leaf means."""


def is_xgboost(model) -> bool:
    """True when ``model`` is an XGBoost scikit-learn-API regressor (no import of xgboost)."""
    return type(model).__module__.split(".")[0] == "xgboost"


def _config(model, fn: str) -> dict:
    try:
        booster = model.get_booster()
    except Exception as err:  # xgboost raises NotFittedError (a ValueError subclass) here
        raise ConfigError(f"{fn}(gbr=...): the XGBoost model is not fitted; call fit(x_train, y_train) first") from err
    return json.loads(booster.save_config())["learner"]


def check(model, fn: str) -> None:
    """Raise unless ``model`` is a fitted XGBoost regressor with the parity settings."""
    learner = _config(model, fn)
    objective = learner["objective"]["name"]
    if objective != "reg:squarederror":
        raise UnsupportedModelError(
            f"{fn}(gbr=...): objective={objective!r}; the tree smoother is exact only for "
            "'reg:squarederror' (hessian 1 per row)")
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree":
        raise UnsupportedModelError(f"{fn}(gbr=...): booster={gb.get('name')!r}; use booster='gbtree'")
    if int(learner["learner_model_param"].get("num_target", "1")) > 1:
        raise UnsupportedModelError(f"{fn}(gbr=...): a multi-output model; fit one target")
    if int(gb.get("gbtree_model_param", {}).get("num_parallel_tree", "1")) != 1:
        raise UnsupportedModelError(f"{fn}(gbr=...): num_parallel_tree > 1 (boosted forests); use 1")
    p = gb["tree_train_param"]
    for key, name in (("lambda", "reg_lambda"), ("alpha", "reg_alpha"), ("max_delta_step", "max_delta_step")):
        if float(p[key]) != 0.0:
            raise UnsupportedModelError(
                f"{fn}(gbr=...): {name}={float(p[key]):g}; leaves are plain means of the residuals "
                f"only with {name}=0 (see telescope.trees.xgb.PARITY)")
    if float(p["subsample"]) != 1.0:
        raise UnsupportedModelError(
            f"{fn}(gbr=...): subsample={float(p['subsample']):g}; each tree then averages over a "
            "random subsample that XGBoost does not store; refit with subsample=1")


def n_trees(model) -> int:
    return int(model.get_booster().num_boosted_rounds())


def learning_rate(model, fn: str) -> float:
    return float(_config(model, fn)["gradient_booster"]["tree_train_param"]["eta"])


def base_score(model, fn: str) -> float:
    """h_0: the constant ``base_score`` (stored as e.g. '[2.93E0]' or '2.93')."""
    raw = _config(model, fn)["learner_model_param"]["base_score"]
    return float(str(raw).strip("[]").split(",")[0])


def leaves(model, x_train: np.ndarray, x_eval: np.ndarray | None, n_stages: int, fn: str
           ) -> tuple[np.ndarray, np.ndarray | None, list[np.ndarray]]:
    """Leaf index (0..L_t−1) of every point in each of the first ``n_stages`` trees.

    Returns ``(train (n_train, T) int64, eval (n_eval, T) int64 or None, counts)`` with
    ``counts[t]`` (L_t,) training rows per leaf, checked against the trees' covers.
    """
    import xgboost

    booster = model.get_booster()
    frame = booster.trees_to_dataframe()
    n = x_train.shape[0]
    train = np.empty((n, n_stages), dtype=np.int64)
    evl = None if x_eval is None else np.empty((x_eval.shape[0], n_stages), dtype=np.int64)
    counts: list[np.ndarray] = []
    if n_stages == 0:
        return train, evl, counts

    def nodes(x: np.ndarray) -> np.ndarray:
        out = booster.predict(xgboost.DMatrix(x), pred_leaf=True, iteration_range=(0, n_stages))
        return np.asarray(out, dtype=np.int64).reshape(x.shape[0], n_stages)

    nodes_train = nodes(x_train)
    nodes_eval = None if x_eval is None else nodes(x_eval)
    for t in range(n_stages):
        tree = frame[(frame["Tree"] == t) & (frame["Feature"] == "Leaf")]
        leaf_nodes = tree["Node"].to_numpy(dtype=np.int64)
        cover = tree["Cover"].to_numpy(dtype=np.float64)
        table = np.full(int(frame.loc[frame["Tree"] == t, "Node"].max()) + 1, -1, dtype=np.int64)
        table[leaf_nodes] = np.arange(len(leaf_nodes))
        train[:, t] = table[nodes_train[:, t]]
        cnt = np.bincount(train[:, t], minlength=len(leaf_nodes))
        if not np.array_equal(cnt.astype(np.float64), cover):
            raise ShapeError(
                f"{fn}(x_train=...): tree {t} covers {cover.tolist()[:8]}... (Σ hessian per leaf) but "
                f"x_train puts {cnt.tolist()[:8]}... rows there; pass exactly the x the model was "
                "fitted on, without sample weights")
        if evl is not None:
            evl[:, t] = table[nodes_eval[:, t]]
        counts.append(cnt)
    if (np.concatenate(counts) == 0).any():
        raise UnsupportedModelError(f"{fn}(gbr=...): a leaf holds no training row (min_child_weight=0?); "
                                    "its kernel is undefined")
    return train, evl, counts
