"""Tabular data: preprocessing and the irregular split (paper App. C.2)."""

import numpy as np
import pytest

from telescope.data.tabular import (irregular_split, irregularity, load_tabular, preprocess,
                                   quantile_gaussianise, refit_on_train)
from telescope.errors import ConfigError, DataError


def _x(n=3000, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[:, 0] = rng.lognormal(sigma=1.5, size=n)       # heavy-tailed
    return x


def test_preprocess_logs_heavy_tails_and_standardises():
    x = _x()
    y = np.random.default_rng(1).normal(3.0, 2.0, size=len(x))
    xs, ys, info = preprocess(x, y)
    assert info["logged"] == [0]
    np.testing.assert_allclose(xs.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(xs.std(0), 1, atol=1e-12)
    np.testing.assert_allclose(ys.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(ys.std(), 1, atol=1e-12)
    assert abs(((xs[:, 0] - xs[:, 0].mean()) ** 3).mean()) < 2.0   # no longer heavy-tailed (was > 2)


def test_quantile_gaussianise_is_fitted_on_the_reference_rows_only():
    x = _x(n=2000)
    ref, new = x[:1500], x[1500:]
    ref_q, new_q, wide_q = quantile_gaussianise(ref, new, np.vstack([ref.min(0) - 10, ref.max(0) + 10]))
    # reference rows become standard normal per feature (heavy tail included)
    np.testing.assert_allclose(ref_q.mean(0), 0, atol=0.02)
    np.testing.assert_allclose(ref_q.std(0), 1, atol=0.05)
    # monotone per feature, on rows it was not fitted on
    for j in range(x.shape[1]):
        o = np.argsort(new[:, j])
        assert np.all(np.diff(new_q[o, j]) >= 0)
    # beyond the reference range: the reference extreme (GOV22 networks see no extrapolation)
    np.testing.assert_allclose(wide_q[0], ref_q.min(0))
    np.testing.assert_allclose(wide_q[1], ref_q.max(0))
    assert wide_q[1].min() > 5 and wide_q[0].max() < -5


def test_irregular_split_is_deterministic_disjoint_and_sized():
    x, _, _ = preprocess(_x(), np.zeros(3000))
    kw = dict(irregular_frac=0.1, n_val=500, n_test=800, max_p=0.375)
    a, b = irregular_split(x, seed=3, **kw), irregular_split(x, seed=3, **kw)
    c = irregular_split(x, seed=4, **kw)
    for name in ("train", "val", "test_regular", "irregular"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.train, c.train)
    np.testing.assert_array_equal(np.sort(a.irregular), np.sort(c.irregular))   # irregularity has no seed
    assert len(a.irregular) == 300 and len(a.val) == 500 and len(a.test_regular) == 800
    assert len(a.train) == 3000 - 300 - 500 - 800
    every = np.concatenate([a.train, a.val, a.test_regular, a.irregular])
    assert len(np.unique(every)) == len(every) == 3000
    # the irregular rows are the farthest from the median along the first PC
    dist = irregularity(x)
    assert dist[a.irregular].min() >= dist[np.concatenate([a.train, a.val, a.test_regular])].max()
    irr = set(a.irregular.tolist())
    previous = set()
    for p in (0.0, 0.125, 0.25, 0.375):
        t = a.test(p)
        assert len(t) == 800 and len(np.unique(t)) == 800
        assert sum(int(i) in irr for i in t) == round(p * 800)
        assert not set(t.tolist()) & set(a.train.tolist())
        irr_now = {int(i) for i in t if int(i) in irr}
        assert previous <= irr_now                       # nested in p
        previous = irr_now
    assert len(irregular_split(x, seed=3, max_train=100, **kw).train) == 100


def test_preprocess_fitted_on_some_rows_uses_their_statistics_only():
    x = _x()
    y = np.random.default_rng(1).normal(3.0, 2.0, size=len(x))
    rows = np.arange(0, 3000, 2)
    xs, ys, info = preprocess(x, y, fit_rows=rows)
    np.testing.assert_allclose(xs[rows].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(xs[rows].std(0), 1, atol=1e-12)
    np.testing.assert_allclose(ys[rows].std(), 1, atol=1e-12)
    # the other rows do not enter: changing them leaves the fitted rows' values unchanged
    x2, y2 = x.copy(), y.copy()
    x2[1::2] *= 50.0
    y2[1::2] += 100.0
    xs2, ys2, _ = preprocess(x2, y2, fit_rows=rows)
    np.testing.assert_array_equal(xs2[rows], xs[rows])
    np.testing.assert_array_equal(ys2[rows], ys[rows])
    # a row below the fitted minimum of a logged feature stays finite and keeps its order
    x3 = x.copy()
    x3[1, 0] = x[rows, 0].min() - 5.0
    xs3, _, _ = preprocess(x3, y, fit_rows=rows)
    assert np.isfinite(xs3).all() and xs3[1, 0] < xs3[rows, 0].min()
    # no target rescaling
    _, y_raw, info = preprocess(x, y, scale_target=False)
    np.testing.assert_array_equal(y_raw, y)
    assert (info["y_mean"], info["y_std"]) == (0.0, 1.0)


def test_refit_on_train_keeps_every_test_row_out_of_the_fitted_statistics():
    x_raw = _x()
    y_raw = np.random.default_rng(2).normal(size=len(x_raw))
    xs, _, _ = preprocess(x_raw, y_raw)
    kw = dict(irregular_frac=0.1, n_val=300, n_test=400, max_p=0.5, max_train=1000)
    sp = irregular_split(xs, seed=1, **kw)
    x, y, _, new = refit_on_train(x_raw, y_raw, sp, seed=1)
    np.testing.assert_array_equal(new.train, sp.train)
    assert (len(new.val), len(new.test_regular), len(new.irregular)) == (300, 400, len(sp.irregular))
    every = np.concatenate([new.train, new.val, new.test_regular, new.irregular])
    assert len(np.unique(every)) == len(every)
    # the irregular rows are the farthest of the held-out rows under the train-fitted score
    score = irregularity(x, fit_rows=new.train)
    assert score[new.irregular].min() >= score[np.concatenate([new.val, new.test_regular])].max()
    # held-out rows do not move the training rows' features, targets or the score's fit
    far = np.setdiff1d(np.arange(len(x_raw)), new.train)
    x_raw2 = x_raw.copy()
    x_raw2[far] *= 3.0
    x2, y2, _, _ = refit_on_train(x_raw2, y_raw, sp, seed=1)
    np.testing.assert_array_equal(x2[new.train], x[new.train])
    np.testing.assert_array_equal(y2[new.train], y[new.train])


def test_irregular_split_refuses_impossible_sizes():
    x = _x(n=500)
    with pytest.raises(ConfigError, match="irregular rows"):
        irregular_split(x, seed=0, n_val=50, n_test=400, max_p=0.5)
    with pytest.raises(ConfigError, match="regular rows"):
        irregular_split(x, seed=0, n_val=300, n_test=200, max_p=0.1)


def test_missing_file_names_the_file_and_the_openml_id(tmp_path):
    with pytest.raises(DataError, match=r"tabular/houses\.csv\.gz.*OpenML dataset 44138"):
        load_tabular("houses", tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_tabular("nope", tmp_path)


def test_houses_split_has_the_papers_sizes(data_dir):
    if not (data_dir / "tabular" / "houses.csv.gz").exists():
        pytest.skip(f"houses.csv.gz not in {data_dir}/tabular")
    x, y, names = load_tabular("houses", data_dir)
    assert x.shape == (20640, 8) and names[0] == "median_income"
    assert 9.0 < y.min() and y.max() < 13.2           # already a log price: not logged again
    xs, ys, info = preprocess(x, y)
    sp = irregular_split(xs, seed=0)
    assert len(sp.irregular) == 2064 and len(sp.val) == 2000 and len(sp.test_regular) == 4000
    assert len(sp.train) == 20640 - 2064 - 2000 - 4000
    assert len(sp.test(0.5)) == 4000
