"""Gradient-boosted trees as a telescoping kernel model (paper Sec. 4.2, Eq. 9).

For scikit-learn's :class:`~sklearn.ensemble.GradientBoostingRegressor` with squared
loss, tree ``t`` is fitted to the residuals ``y − f_{t−1}`` and predicts the mean
residual of the training points in a leaf, so

    f_t(x) = f_{t−1}(x) + γ Σ_i K_t(x, x_i) (y_i − f_{t−1}(x_i)),
    K_t(x, x_i) = 1{leaf_t(x) = leaf_t(x_i)} / n_{leaf_t(x)}.

Written as a smoother, f_t(x) = s_t(x)·y + c_t(x) with

    s_t(x) = s_{t−1}(x) + γ K_t(x, ·) (I − S_{t−1}),   s_0 = 0,
    c_t(x) = c_{t−1}(x) − γ K_t(x, ·) c_{t−1},          c_0 = h_0 (the init's prediction),

where ``S_{t−1}`` (n × n) stacks s_{t−1} at the training points. With ``init="zero"``
c ≡ 0; with the default mean init c_T(x) = (1 − γ)^T ȳ.

# NOTE [leaf-wise smoother]
K_t is never formed. ``K_t(x, ·) M`` is the mean of the rows of ``M`` over the training
points in x's leaf, i.e. a segment mean. Consecutive trees are processed in *chunks*
whose leaves together number at most ``_DENSE_LEAVES``: one pass over ``S`` computes the
segment means of all trees in the chunk (a GEMM with the leaf one-hot matrix), a small
triangular recursion in leaf space accounts for the trees of the chunk acting on each
other (``C_kj = D_k⁻¹ Z_kᵀ Z_j``, leaves × leaves), and one in-place GEMM adds the chunk's
update to ``S``. Trees with more leaves than that budget (deep trees) take a sparse path
(sparse segment means, row-blocked gathers). Cost: O(n·n_eval·Σ_t L_t) flops in
GEMMs for shallow trees, O((n + n_eval)·n) per deep tree; memory: the n × n train
smoother (shared with the output when ``x_eval`` is ``x_train``), the n_eval × n output
and O(n · _DENSE_LEAVES) workspace. No n × n co-membership matrix is ever built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from telescope.errors import ConfigError, ShapeError, UnsupportedModelError
from telescope.trees import xgb as _xgb

log = logging.getLogger(__name__)

# Leaf budget of one dense chunk (see NOTE [leaf-wise smoother]); a chunk's one-hot
# matrices are n × _DENSE_LEAVES float64.
_DENSE_LEAVES = 256
# Row block of the sparse path's gathers (bounds its temporary to _ROW_BLOCK × n).
_ROW_BLOCK = 1024


@dataclass(frozen=True)
class _Leaves:
    """Leaf indices of the training and evaluation points in every tree.

    ``train``: (n_train, T) int64, leaf index in 0..L_t−1; ``eval``: (n_eval, T) or None
    when the evaluation points are the training points; ``counts[t]``: (L_t,) training
    points per leaf (all ≥ 1).
    """

    train: np.ndarray
    eval: np.ndarray | None
    counts: list[np.ndarray]
    learning_rate: float


def _check_model(gbr, fn: str) -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    if not isinstance(gbr, GradientBoostingRegressor):
        raise UnsupportedModelError(
            f"{fn}(gbr=...): expected a fitted sklearn.ensemble.GradientBoostingRegressor (or an "
            f"xgboost.XGBRegressor with telescope.trees.xgb.PARITY), got {type(gbr).__name__}")
    if not hasattr(gbr, "estimators_"):
        raise ConfigError(f"{fn}(gbr=...): the model is not fitted; call gbr.fit(x_train, y_train) first")
    if gbr.loss != "squared_error":
        raise UnsupportedModelError(
            f"{fn}(gbr=...): loss={gbr.loss!r}; the tree smoother is exact only for "
            "loss='squared_error' (other losses re-fit leaf values by line search)")
    if gbr.subsample < 1.0:
        raise UnsupportedModelError(
            f"{fn}(gbr=...): subsample={gbr.subsample}; each tree then averages over a random "
            "subsample that scikit-learn does not store; refit with subsample=1.0")
    if gbr.n_iter_no_change is not None:
        raise UnsupportedModelError(
            f"{fn}(gbr=...): n_iter_no_change={gbr.n_iter_no_change}; early stopping fits the "
            "trees on an internal split of x_train; refit with n_iter_no_change=None")


def _as_2d(x, n_features: int, fn: str, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ShapeError(
            f"{fn}({name}=...): expected shape (n, {n_features}) like the data the model was "
            f"fitted on, got {tuple(x.shape)}")
    return x


def _leaf_table(tree) -> tuple[np.ndarray, np.ndarray]:
    """Node id -> leaf index (−1 for split nodes), and the fitted leaf sample counts."""
    is_leaf = tree.children_left == -1
    table = np.full(tree.node_count, -1, dtype=np.int64)
    table[is_leaf] = np.arange(int(is_leaf.sum()))
    return table, tree.n_node_samples[is_leaf]


def _n_trees(gbr) -> int:
    if _xgb.is_xgboost(gbr):
        return _xgb.n_trees(gbr)
    return getattr(gbr, "estimators_", np.empty((0, 1))).shape[0]


def _leaves(gbr, x_train, x_eval, fn: str, n_stages: int | None = None) -> _Leaves:
    """Validate once at the door and map every point to its leaf in every tree."""
    xgb = _xgb.is_xgboost(gbr)
    _xgb.check(gbr, fn) if xgb else _check_model(gbr, fn)
    n_features = gbr.n_features_in_
    x_train = _as_2d(x_train, n_features, fn, "x_train")
    same = x_eval is None or x_eval is x_train
    if not same:
        x_eval = _as_2d(x_eval, n_features, fn, "x_eval")
    n_trees = _n_trees(gbr)
    if n_stages is None:
        n_stages = n_trees
    if not (0 <= int(n_stages) <= n_trees):
        raise ConfigError(f"{fn}(n_stages={n_stages}): the model has {n_trees} trees; use 0..{n_trees}")
    n_stages = int(n_stages)
    if xgb:
        train, evl, counts = _xgb.leaves(gbr, x_train, None if same else x_eval, n_stages, fn)
        return _Leaves(train, evl, counts, _xgb.learning_rate(gbr, fn))
    nodes_train = gbr.apply(x_train)[:, :n_stages].astype(np.int64) if n_stages else None
    nodes_eval = None
    if not same and n_stages:
        nodes_eval = gbr.apply(x_eval)[:, :n_stages].astype(np.int64)
    n = x_train.shape[0]
    train = np.empty((n, n_stages), dtype=np.int64)
    evl = None if same else np.empty((x_eval.shape[0], n_stages), dtype=np.int64)
    counts = []
    for t in range(n_stages):
        tree = gbr.estimators_[t, 0].tree_
        table, fitted = _leaf_table(tree)
        train[:, t] = table[nodes_train[:, t]]
        cnt = np.bincount(train[:, t], minlength=len(fitted))
        if not np.array_equal(cnt, fitted):
            raise ShapeError(
                f"{fn}(x_train=...): tree {t} holds {fitted.tolist()[:8]}... training points per "
                f"leaf but x_train puts {cnt.tolist()[:8]}... there; pass exactly the x the model "
                "was fitted on (the columns of S then follow the order of its rows)")
        if not np.array_equal(tree.weighted_n_node_samples[tree.children_left == -1], fitted):
            raise UnsupportedModelError(
                f"{fn}(gbr=...): tree {t} was fitted with sample weights; the tree kernel "
                "then weights points unequally, which this smoother does not model")
        if evl is not None:
            evl[:, t] = table[nodes_eval[:, t]]
        counts.append(cnt)
    return _Leaves(train, evl, counts, float(gbr.learning_rate))


def _init_prediction(gbr, x: np.ndarray) -> np.ndarray:
    """h_0(x), float64 (n,): zeros for init='zero', else the fitted init estimator's predict.

    scikit-learn casts inputs to float32 before fitting and calling the init estimator
    (and the trees); so do we, or a non-constant init would differ in the 7th digit.
    """
    if _xgb.is_xgboost(gbr):
        return np.full(x.shape[0], _xgb.base_score(gbr, "init"), dtype=np.float64)
    if isinstance(gbr.init_, str) and gbr.init_ == "zero":
        return np.zeros(x.shape[0], dtype=np.float64)
    return np.asarray(gbr.init_.predict(x.astype(np.float32)), dtype=np.float64).reshape(-1)


def _chunks(counts: list[np.ndarray], max_trees: int | None) -> list[tuple[int, int]]:
    """Consecutive tree ranges [a, b) whose leaves fit the dense budget (or one deep tree)."""
    out, a, leaves = [], 0, 0
    for t, cnt in enumerate(counts):
        L = len(cnt)
        full = (leaves + L > _DENSE_LEAVES) or (max_trees is not None and t - a >= max_trees)
        if t > a and full:
            out.append((a, t))
            a, leaves = t, 0
        leaves += L
    if a < len(counts):
        out.append((a, len(counts)))
    return out


def _one_hot(leaves: np.ndarray, offsets: list[int], n_cols: int) -> torch.Tensor:
    """(rows, n_cols) float64 with a 1 in each tree's leaf column; ``leaves``: (rows, b)."""
    z = torch.zeros(leaves.shape[0], n_cols, dtype=torch.float64)
    rows = torch.arange(leaves.shape[0])
    for i, offset in enumerate(offsets):
        z[rows, torch.from_numpy(leaves[:, i] + offset)] = 1.0
    return z


def _advance(lv: _Leaves, a: int, b: int, state_train: torch.Tensor,
             state_eval: torch.Tensor | None, target: torch.Tensor | None) -> None:
    """Apply trees a..b−1 to the states, in place.

    For every column j the update of tree t is ``v ← v + γ K_t (e_j − v_train)`` where
    ``e_j`` is column j of ``target`` (n × k; ``None`` means the identity, i.e. the
    smoother S) — rows of ``state_train`` (n × k) and ``state_eval`` (m × k) alike.
    """
    lr = lv.learning_rate
    n, k = state_train.shape
    counts = [torch.from_numpy(lv.counts[t]).to(torch.float64) for t in range(a, b)]
    sizes = [len(c) for c in counts]
    total = sum(sizes)
    offsets = np.cumsum([0] + sizes[:-1]).tolist()
    if total <= _DENSE_LEAVES:
        inv = torch.cat([1.0 / c for c in counts])                      # (N,)
        Z = _one_hot(lv.train[:, a:b], offsets, total)                    # (n, N)
        Zs = (Z * inv).T.contiguous()                                     # D⁻¹ Zᵀ (N, n)
        # P = D⁻¹ Zᵀ (E − S): segment means of the target minus those of the state
        P = -(Zs @ state_train)
        if target is None:
            P += Zs                                                       # D⁻¹ Zᵀ I (k == n)
        else:
            P += Zs @ target
        # trees inside the chunk act on each other: A_i = P_i − γ Σ_{j<i} C_ij A_j
        if b - a > 1:
            C = Zs @ Z                                                    # (N, N) leaf overlaps
            for i in range(1, b - a):
                o, L = offsets[i], sizes[i]
                P[o:o + L].addmm_(C[o:o + L, :o], P[:o], alpha=-lr)
        state_train.addmm_(Z, P, alpha=lr)
        if state_eval is not None:
            state_eval.addmm_(_one_hot(lv.eval[:, a:b], offsets, total), P, alpha=lr)
        return
    # sparse path: one deep tree (b == a + 1); segment means as a sparse (L, n) product
    import scipy.sparse as sp

    t = a
    cnt = lv.counts[t]
    leaf_np = lv.train[:, t]
    leaf = torch.from_numpy(leaf_np)
    mean_op = sp.csr_array((1.0 / cnt[leaf_np], (leaf_np, np.arange(n))), shape=(len(cnt), n))
    M = torch.from_numpy(np.ascontiguousarray(-(mean_op @ state_train.numpy())))     # (L, k)
    if target is None:
        M[leaf, torch.arange(n)] += torch.from_numpy(1.0 / cnt[leaf_np])
    else:
        M += torch.from_numpy(mean_op @ target.numpy())

    def gather_add(state: torch.Tensor, idx: torch.Tensor) -> None:
        for r in range(0, state.shape[0], _ROW_BLOCK):
            state[r:r + _ROW_BLOCK].add_(M.index_select(0, idx[r:r + _ROW_BLOCK]), alpha=lr)

    gather_add(state_train, leaf)
    if state_eval is not None:
        gather_add(state_eval, torch.from_numpy(lv.eval[:, t]))


def _run(gbr, x_train, x_eval, fn: str, *, n_stages: int | None, want_S: bool,
         max_trees: int | None = None) -> Iterator[tuple[int, np.ndarray | None, np.ndarray]]:
    """Yield ``(stages, S_eval, c_eval)`` after each chunk of trees (arrays updated in place)."""
    lv = _leaves(gbr, x_train, x_eval, fn, n_stages)
    x_train_np = _as_2d(x_train, gbr.n_features_in_, fn, "x_train")
    same = lv.eval is None
    n = lv.train.shape[0]
    c_train = torch.from_numpy(_init_prediction(gbr, x_train_np).copy()).reshape(n, 1)
    c_eval = None if same else torch.from_numpy(
        _init_prediction(gbr, _as_2d(x_eval, gbr.n_features_in_, fn, "x_eval")).copy()
    ).reshape(-1, 1)
    S_train = S_eval = None
    if want_S:
        S_train = torch.zeros(n, n, dtype=torch.float64)
        S_eval = None if same else torch.zeros(lv.eval.shape[0], n, dtype=torch.float64)
    zero = torch.zeros(n, 1, dtype=torch.float64)

    def out() -> tuple[np.ndarray | None, np.ndarray]:
        S = None if S_train is None else (S_train if same else S_eval).numpy()
        return S, (c_train if same else c_eval).numpy().reshape(-1)

    if lv.train.shape[1] == 0:
        yield (0, *out())
        return
    for a, b in _chunks(lv.counts, max_trees):
        if S_train is not None:
            _advance(lv, a, b, S_train, S_eval, None)
        _advance(lv, a, b, c_train, c_eval, zero)
        yield (b, *out())


def boosting_smoother(gbr, x_train, x_eval=None, *, n_stages: int | None = None) -> np.ndarray:
    """The smoother matrix of a squared-loss gradient-boosted ensemble.

    Row ``i`` is s_T(x_eval[i]): the weights with which the ensemble's prediction at
    ``x_eval[i]`` averages the training labels, so that
    ``gbr.predict(x_eval) == boosting_smoother(...) @ y_train + boosting_offset(...)``
    (exactly, up to float64 rounding; with ``init="zero"`` the offset is 0).

    Args:
        gbr: fitted ``sklearn.ensemble.GradientBoostingRegressor`` with
            ``loss="squared_error"``, ``subsample=1.0``, no early stopping, no sample weights;
            or a fitted ``xgboost.XGBRegressor`` with ``telescope.trees.xgb.PARITY``
            (NOTE [xgboost parity]: exact to float32 rounding only).
        x_train: (n_train, d) exactly the inputs ``gbr`` was fitted on (checked against the
            trees' leaf sample counts).
        x_eval: (n_eval, d) inputs to evaluate; ``None`` (or ``x_train`` itself) gives the
            training smoother and saves one n × n matrix.
        n_stages: use the first ``n_stages`` trees (default: all), like ``staged_predict``.

    Returns:
        float64 ndarray (n_eval, n_train).

    Cost: see NOTE [leaf-wise smoother] in this module: about 2·(n_train + n_eval)·n_train
    flops per tree leaf in GEMMs for shallow trees; memory one n_train × n_train float64
    matrix plus the (n_eval, n_train) output.
    """
    S = None
    for _, S, _ in _run(gbr, x_train, x_eval, "boosting_smoother", n_stages=n_stages, want_S=True):
        pass
    return S


def boosting_offset(gbr, x_train, x_eval=None, *, n_stages: int | None = None) -> np.ndarray:
    """The constant part c of the smoother: prediction = S @ y_train + c.

    c follows c_t(x) = c_{t−1}(x) − γ K_t(x, ·) c_{t−1}(x_train) from c_0 = h_0 (the init's
    prediction): 0 for ``init="zero"``, (1 − γ)^T · mean(y_train) for the default mean init.
    Returns float64 ndarray (n_eval,). Cost O(T · (n_train + n_eval)).
    """
    c = None
    for _, _, c in _run(gbr, x_train, x_eval, "boosting_offset", n_stages=n_stages, want_S=False):
        pass
    return c.copy()


def staged_boosting_smoother(gbr, x_train, x_eval=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(S_t, c_t)`` after every tree t = 1..T, like ``gbr.staged_predict``.

    The arrays are updated in place between iterations: copy them to keep them. Slower
    than :func:`boosting_smoother` for shallow trees (one pass over S per tree).
    """
    for _, S, c in _run(gbr, x_train, x_eval, "staged_boosting_smoother", n_stages=None,
                        want_S=True, max_trees=1):
        yield S, c


def tree_kernel(gbr, x_train, x_eval=None, *, tree: int):
    """The kernel of one tree as a sparse matrix, K_t(x, x_i) = 1{same leaf} / n_leaf.

    Returns a ``scipy.sparse.csr_array`` of shape (n_eval, n_train) with n_leaf(x) entries
    in row x; every row sums to 1. Memory O(Σ_x n_leaf(x)): meant for inspection of
    shallow trees, not for building smoothers (use :func:`boosting_smoother`).
    """
    import scipy.sparse as sp

    fn = "tree_kernel"
    n_trees = _n_trees(gbr)
    if not isinstance(tree, (int, np.integer)) or not (0 <= tree < max(n_trees, 1)):
        _xgb.check(gbr, fn) if _xgb.is_xgboost(gbr) else _check_model(gbr, fn)
        raise ConfigError(f"{fn}(tree={tree!r}): the model has {n_trees} trees; use an int in 0..{n_trees - 1}")
    lv = _leaves(gbr, x_train, x_eval, fn, int(tree) + 1)
    leaf_tr = lv.train[:, tree]
    leaf_ev = leaf_tr if lv.eval is None else lv.eval[:, tree]
    cnt = lv.counts[tree]
    n = leaf_tr.shape[0]
    # membership (L, n) sparse, then gather rows by the eval leaves
    member = sp.csr_array((np.ones(n), (leaf_tr, np.arange(n))), shape=(len(cnt), n))
    return sp.csr_array(sp.diags_array(1.0 / cnt[leaf_ev]) @ member[leaf_ev])


def tree_kernel_weight_norms(gbr, x_train, x_eval=None, *, n_stages: int | None = None) -> np.ndarray:
    """‖k_t(x)‖₂ for every tree t and evaluation point x: (n_stages, n_eval) float64.

    k_t(x) = [K_t(x, x_1), …, K_t(x, x_n)] has n_leaf(x) entries equal to 1/n_leaf(x),
    so ‖k_t(x)‖₂ = 1/√n_leaf(x) ∈ [1/√n, 1]. The learning rate γ is not included (it is
    constant and cancels in :func:`max_weight_norm_ratio`). Cost O(T · n_eval).
    """
    lv = _leaves(gbr, x_train, x_eval, "tree_kernel_weight_norms", n_stages)
    leaves = lv.train if lv.eval is None else lv.eval
    out = np.empty((leaves.shape[1], leaves.shape[0]), dtype=np.float64)
    for t, cnt in enumerate(lv.counts):
        out[t] = 1.0 / np.sqrt(cnt[leaves[:, t]])
    return out


def effective_parameters(S: np.ndarray) -> float:
    """p⁰ = (n_train / n_eval) · Σ_x ‖s(x)‖² for a smoother S of shape (n_eval, n_train).

    On the training smoother this is ‖S‖_F² (CJvdS23; digest Sec. 4.1).
    """
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] == 0:
        raise ShapeError(f"effective_parameters(S=...): expected a non-empty (n_eval, n_train) matrix, got {S.shape}")
    return float(S.shape[1] / S.shape[0] * np.einsum("ij,ij->", S, S))


def max_weight_norm_ratio(max_test, max_train) -> float:
    """R = mean_t max_test ‖k_t‖ / mean_t max_train ‖k_t‖ (digest Sec. 6.5).

    ``max_test`` and ``max_train``: (T,) the per-step (per-tree) maxima over the test and
    the training points. R > 1 means the kernel weights at test time exceed the largest
    seen on training points; for trees R ≤ 1 always.
    """
    a = np.asarray(max_test, dtype=np.float64).reshape(-1)
    b = np.asarray(max_train, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ShapeError(
            f"max_weight_norm_ratio(max_test, max_train): expected two equal, non-empty (T,) "
            f"vectors, got {a.shape} and {b.shape}")
    return float(a.mean() / b.mean())
