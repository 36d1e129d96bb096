"""XGBoost adapter: with the parity settings its trees are the same leaf-mean kernels.

Skips cleanly without the optional ``xgboost`` package (extra ``xgboost``)."""

import numpy as np
import pytest

from telescope.errors import ShapeError, UnsupportedModelError
from telescope.trees import (boosting_offset, boosting_smoother, staged_boosting_smoother, tree_kernel,
                             tree_kernel_weight_norms)
from telescope.trees.xgb import PARITY, is_xgboost

xgboost = pytest.importorskip("xgboost")


def _data(n=300, m=80, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + m, d))
    y = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * rng.normal(size=n + m) + 3.0
    return x[:n], y[:n], x[n:]


def _fit(x, y, **kw):
    params = dict(PARITY, n_estimators=25, max_depth=3, learning_rate=0.3, n_jobs=1, random_state=0)
    params.update(kw)
    return xgboost.XGBRegressor(**params).fit(x, y)


@pytest.mark.parametrize("tree_method", ["exact", "hist"])
def test_smoother_reproduces_predict_to_float32_rounding(tree_method):
    x, y, x_eval = _data()
    model = _fit(x, y, tree_method=tree_method)
    assert is_xgboost(model)
    S = boosting_smoother(model, x, x_eval)
    c = boosting_offset(model, x, x_eval)
    np.testing.assert_allclose(S @ y + c, model.predict(x_eval), rtol=0, atol=2e-5)
    S_tr = boosting_smoother(model, x)
    np.testing.assert_allclose(S_tr @ y + boosting_offset(model, x), model.predict(x), rtol=0, atol=2e-5)
    # base_score is estimated from y (≈ its mean): the constant part is (1 − η)^T-damped h_0 plus
    # the smoother's action on it, not 0
    assert np.all(np.abs(c) > 1e-6)


def test_staged_smoother_follows_every_round():
    x, y, x_eval = _data(n=150, m=30)
    model = _fit(x, y, n_estimators=6)
    booster = model.get_booster()
    for t, (S, c) in enumerate(staged_boosting_smoother(model, x, x_eval), start=1):
        ref = booster.predict(xgboost.DMatrix(x_eval), iteration_range=(0, t))
        np.testing.assert_allclose(S @ y + c, ref, rtol=0, atol=2e-5)


def test_kernel_rows_and_norms_are_the_leaf_means():
    x, y, x_eval = _data()
    model = _fit(x, y)
    K = tree_kernel(model, x, x_eval, tree=4).toarray()
    np.testing.assert_allclose(K.sum(1), 1.0, atol=1e-12)
    norms = tree_kernel_weight_norms(model, x, x_eval)
    assert norms.shape == (25, len(x_eval))
    np.testing.assert_allclose(np.linalg.norm(K, axis=1), norms[4], atol=1e-12)
    assert norms.max() <= 1.0 and norms.min() >= 1 / np.sqrt(len(x))


def test_non_parity_models_and_wrong_training_rows_are_refused():
    x, y, x_eval = _data(n=120, m=10)
    with pytest.raises(UnsupportedModelError, match="reg_lambda"):
        boosting_smoother(_fit(x, y, reg_lambda=1.0), x, x_eval)
    with pytest.raises(UnsupportedModelError, match="subsample"):
        boosting_smoother(_fit(x, y, subsample=0.5), x, x_eval)
    with pytest.raises(UnsupportedModelError, match="objective"):
        boosting_smoother(_fit(x, y, objective="reg:absoluteerror"), x, x_eval)
    with pytest.raises(ShapeError, match="fitted on"):
        boosting_smoother(_fit(x, y), x[::-1][:100], x_eval)
    w = np.ones(len(x))
    w[:10] = 3.0
    weighted = xgboost.XGBRegressor(**dict(PARITY, n_estimators=3, max_depth=2, n_jobs=1)).fit(x, y, sample_weight=w)
    with pytest.raises(ShapeError, match="sample weights"):
        boosting_smoother(weighted, x, x_eval)
