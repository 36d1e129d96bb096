"""The boosting smoother reproduces GradientBoostingRegressor exactly (paper Eq. 9)."""

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor

import telescope.trees.boosting as boosting
from telescope.errors import ConfigError, ShapeError, UnsupportedModelError
from telescope.trees import (
    boosting_offset,
    boosting_smoother,
    effective_parameters,
    max_weight_norm_ratio,
    staged_boosting_smoother,
    tree_kernel,
    tree_kernel_weight_norms,
)


def _data(n=120, m=30, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.2 * rng.normal(size=n)
    return x, y, rng.normal(size=(m, d))


def _fit(x, y, **kw):
    kw = {"n_estimators": 25, "learning_rate": 0.3, "max_depth": 3, "random_state": 0, **kw}
    return GradientBoostingRegressor(**kw).fit(x, y)


def _reference_smoother(gbr, x, x_eval, n_stages):
    """The obviously correct version: dense co-membership kernels, S ← S + γ K (I − S)."""
    lt, le = gbr.apply(x), gbr.apply(x_eval)
    n = x.shape[0]
    S = np.zeros((n, n))
    Se = np.zeros((x_eval.shape[0], n))
    for t in range(n_stages):
        Kt = (lt[:, t][:, None] == lt[:, t][None, :]).astype(float)
        Kt /= Kt.sum(1, keepdims=True)
        Ke = (le[:, t][:, None] == lt[:, t][None, :]).astype(float)
        Ke /= Ke.sum(1, keepdims=True)
        Se = Se + gbr.learning_rate * Ke @ (np.eye(n) - S)
        S = S + gbr.learning_rate * Kt @ (np.eye(n) - S)
    return Se


@pytest.fixture(params=[4, 256, 100_000], ids=["sparse-path", "chunks", "one-chunk"])
def leaf_budget(request, monkeypatch):
    """Force each implementation path: 4 sends every tree down the sparse path."""
    monkeypatch.setattr(boosting, "_DENSE_LEAVES", request.param)
    return request.param


@pytest.mark.parametrize("init", ["zero", None], ids=["init-zero", "init-mean"])
@pytest.mark.parametrize("depth", [2, None], ids=["depth2", "deep"])
def test_staged_smoother_reproduces_staged_predict(init, depth, leaf_budget):
    x, y, xe = _data()
    gbr = _fit(x, y, init=init, max_depth=depth)
    stages = 0
    for (S, c), pred in zip(staged_boosting_smoother(gbr, x, xe), gbr.staged_predict(xe), strict=True):
        assert np.abs(S @ y + c - pred).max() < 1e-10
        if init == "zero":
            assert np.all(c == 0)
        stages += 1
    assert stages == gbr.n_estimators_
    for (S, c), pred in zip(staged_boosting_smoother(gbr, x), gbr.staged_predict(x), strict=True):
        assert np.abs(S @ y + c - pred).max() < 1e-10


@pytest.mark.parametrize("init", ["zero", None], ids=["init-zero", "init-mean"])
def test_chunked_smoother_matches_reference_at_every_stage(init, leaf_budget):
    x, y, xe = _data(n=80, m=20)
    gbr = _fit(x, y, init=init, n_estimators=12, max_depth=3)
    for t in range(0, 13):
        S = boosting_smoother(gbr, x, xe, n_stages=t)
        np.testing.assert_allclose(S, _reference_smoother(gbr, x, xe, t), rtol=0, atol=1e-12)
        c = boosting_offset(gbr, x, xe, n_stages=t)
        expected = 0.0 if init == "zero" else (1 - gbr.learning_rate) ** t * y.mean()
        np.testing.assert_allclose(c, expected, rtol=0, atol=1e-12)
    S_train = boosting_smoother(gbr, x)
    np.testing.assert_allclose(S_train, _reference_smoother(gbr, x, x, 12), rtol=0, atol=1e-12)
    np.testing.assert_allclose(S_train @ y + boosting_offset(gbr, x), gbr.predict(x), rtol=0, atol=1e-10)


def test_general_init_estimator_goes_into_the_offset():
    from sklearn.linear_model import LinearRegression

    x, y, xe = _data()
    gbr = _fit(x, y, init=LinearRegression())
    S, c = boosting_smoother(gbr, x, xe), boosting_offset(gbr, x, xe)
    np.testing.assert_allclose(S @ y + c, gbr.predict(xe), rtol=0, atol=1e-10)


def test_single_tree_is_a_projection_with_as_many_effective_parameters_as_leaves():
    x, y, _ = _data()
    gbr = _fit(x, y, n_estimators=1, learning_rate=1.0, init="zero", max_depth=3)
    S = boosting_smoother(gbr, x)
    np.testing.assert_allclose(S @ S, S, atol=1e-12)
    assert effective_parameters(S) == pytest.approx(gbr.estimators_[0, 0].get_n_leaves(), abs=1e-10)
    assert np.trace(S) == pytest.approx(gbr.estimators_[0, 0].get_n_leaves(), abs=1e-10)


def test_tree_kernel_rows_sum_to_one_and_norms_are_bounded():
    x, y, xe = _data()
    far = np.vstack([xe, 50 * xe])            # far outside the training data too
    gbr = _fit(x, y, max_depth=None, n_estimators=10)
    n = x.shape[0]
    norms = tree_kernel_weight_norms(gbr, x, far)
    assert norms.shape == (10, far.shape[0])
    assert norms.min() >= 1 / np.sqrt(n) - 1e-15 and norms.max() <= 1 + 1e-15
    for t in (0, 9):
        K = tree_kernel(gbr, x, far, tree=t)
        assert K.shape == (far.shape[0], n)
        np.testing.assert_allclose(K.sum(axis=1), 1.0, atol=1e-12)
        assert K.min() >= 0 and K.max() <= 1
        dense = K.toarray()
        np.testing.assert_allclose(np.linalg.norm(dense, axis=1), norms[t], atol=1e-12)
    # R_GBT ≤ 1: every test point's leaf holds training points
    train_norms = tree_kernel_weight_norms(gbr, x)
    assert max_weight_norm_ratio(norms.max(axis=1), train_norms.max(axis=1)) <= 1.0
    assert max_weight_norm_ratio(train_norms.max(axis=1), train_norms.max(axis=1)) == 1.0


def test_zero_stages_give_the_init():
    x, y, xe = _data()
    gbr = _fit(x, y)
    assert np.all(boosting_smoother(gbr, x, xe, n_stages=0) == 0)
    np.testing.assert_allclose(boosting_offset(gbr, x, xe, n_stages=0), y.mean())


def test_bad_inputs_get_teaching_errors():
    x, y, xe = _data()
    gbr = _fit(x, y)
    with pytest.raises(ShapeError, match="x_train"):
        boosting_smoother(gbr, x[:-5], xe)
    with pytest.raises(ShapeError, match=r"\(n, 4\)"):
        boosting_smoother(gbr, x, xe[:, :3])
    with pytest.raises(ConfigError, match="n_stages"):
        boosting_smoother(gbr, x, xe, n_stages=26)
    with pytest.raises(UnsupportedModelError, match="subsample"):
        boosting_smoother(_fit(x, y, subsample=0.5), x, xe)
    with pytest.raises(UnsupportedModelError, match="loss"):
        boosting_smoother(_fit(x, y, loss="absolute_error"), x, xe)
    with pytest.raises(UnsupportedModelError, match="sample weights"):
        w = np.ones(len(y))
        w[:10] = 3.0
        boosting_smoother(GradientBoostingRegressor(n_estimators=3).fit(x, y, sample_weight=w), x, xe)
    with pytest.raises(ConfigError, match="not fitted"):
        boosting_smoother(GradientBoostingRegressor(), x, xe)
    with pytest.raises(UnsupportedModelError, match="GradientBoostingRegressor"):
        boosting_smoother(object(), x, xe)
    with pytest.raises(ShapeError):
        max_weight_norm_ratio([1.0, 2.0], [1.0])
