"""Tabular regression data from the Grinsztajn et al. (2022) benchmark, and irregular splits.

Files: ``<data_dir>/tabular/<name>.csv.gz``; the first column is an unnamed row index,
the last column is the target (see ``shared/data/README.md``). ``data_dir`` is the run's
``--data-dir``, else the environment variable ``TELESCOPE_DATA`` (else
``~/.cache/telescope``, see :func:`telescope.data.data_dir`).

# NOTE [tabular preprocessing]
The paper says only "standard preprocessing including log transformations of skewed
features and target rescaling". We fit every transform on the whole dataset (the
irregular examples are defined on the whole normalised dataset, digest Sec. 6.3):
a feature whose sample skewness exceeds ``skew_threshold`` in absolute value is
log-transformed (``log1p(x − min)`` for right skew, ``−log1p(max − x)`` for left skew),
then every feature is standardised; the target is standardised (z-score) and never
logged again (houses, house_sales, house_16H and california targets are already logs).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from telescope.data.core import data_dir as data_dir_of
from telescope.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# name -> OpenML id of the Grinsztajn-benchmark version (digest Sec. 6.2), where known.
OPENML_IDS: dict[str, int | None] = {
    "houses": 44138,
    "house_sales": 44144,
    "superconduct": 44148,
    "california": 44025,
    "house_16H": None,  # id not in our digest; the original OpenML dataset is 574
}
DATASETS = ("houses", "california", "house_sales", "house_16H", "superconduct",
            "Ailerons", "cpu_act", "elevators", "pol", "wine_quality")


def load_tabular(name: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Raw features (n, d) float64, target (n,) float64 and the feature names of ``name``."""
    if name not in DATASETS:
        raise ConfigError(f"load_tabular(name={name!r}): unknown dataset; choose one of: {', '.join(DATASETS)}")
    root = data_dir_of(data_dir)
    path = root / "tabular" / f"{name}.csv.gz"
    if not path.exists():
        oid = OPENML_IDS.get(name)
        where = (f"OpenML dataset {oid}" if oid else "the Grinsztajn et al. (2022) benchmark on OpenML "
                 "(suite 'regression on numerical features')")
        raise DataError(
            f"load_tabular(name={name!r}): missing {path}; expected the CSV (first column an unnamed "
            f"index, last column the target) gzip-compressed at <data_dir>/tabular/{name}.csv.gz; "
            f"get it from {where}" + (" (superconduct is not in the offline snapshot)" if name == "superconduct" else ""))
    import pandas as pd

    frame = pd.read_csv(path, index_col=0)
    values = frame.to_numpy(dtype=np.float64)
    return values[:, :-1], values[:, -1].copy(), [str(c) for c in frame.columns[:-1]]


def _skewness(x: np.ndarray) -> np.ndarray:
    c = x - x.mean(axis=0)
    m2 = (c ** 2).mean(axis=0)
    m3 = (c ** 3).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = m3 / m2 ** 1.5
    return np.where(m2 > 0, s, 0.0)


def preprocess(x: np.ndarray, y: np.ndarray, *, skew_threshold: float = 2.0, fit_rows: np.ndarray | None = None,
               scale_target: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Log-transform heavy-tailed features, standardise features and target.

    See NOTE [tabular preprocessing]. ``x`` (n, d), ``y`` (n,). The statistics (skewness,
    the log's offset, means, standard deviations) are fitted on the rows ``fit_rows``
    (indices; None: all rows) and applied to every row; the log is the signed
    ``sign(z)·log1p(|z|)`` of z = x − min (right skew) so that a row below the fitted
    minimum stays finite (for the fitted rows z ≥ 0: plain ``log1p``). ``scale_target=False``
    leaves y as it is (no target rescaling). Returns ``(x, y, info)`` with ``info["logged"]``
    the indices of log-transformed features and the target's mean and std (0 and 1 unscaled).
    """
    x = np.array(x, dtype=np.float64, copy=True)
    ref = slice(None) if fit_rows is None else np.asarray(fit_rows)
    skew = _skewness(x[ref])
    logged = []
    for j in np.flatnonzero(np.abs(skew) > skew_threshold):
        col = x[:, j]
        z = col - col[ref].min() if skew[j] > 0 else col[ref].max() - col
        signed = np.sign(z) * np.log1p(np.abs(z))
        x[:, j] = signed if skew[j] > 0 else -signed
        logged.append(int(j))
    std = x[ref].std(axis=0)
    x = (x - x[ref].mean(axis=0)) / np.where(std > 0, std, 1.0)
    y = np.asarray(y, dtype=np.float64)
    if not scale_target:
        return x, y.copy(), {"logged": logged, "y_mean": 0.0, "y_std": 1.0}
    y_mean, y_std = float(np.mean(y[ref])), float(np.std(y[ref]))
    y = (y - y_mean) / (y_std if y_std > 0 else 1.0)
    return x, y, {"logged": logged, "y_mean": y_mean, "y_std": y_std}


def quantile_gaussianise(x_ref: np.ndarray, *xs: np.ndarray, n_quantiles: int = 1000,
                         seed: int = 0) -> tuple[np.ndarray, ...]:
    """Map every feature to a standard normal through the quantiles of ``x_ref``: GOV22's
    network preprocessing (scikit-learn ``QuantileTransformer(output_distribution="normal")``).

    The transform is fitted on ``x_ref`` (n_ref, d) only, then applied to ``x_ref`` and to
    each of ``xs`` (m_k, d); returns ``(x_ref', *xs')``. Values outside ``x_ref``'s range
    map to the extreme quantiles (about ±5.2): like a tree, the network then sees a test
    feature beyond the training range as the training extreme. Fitting on all rows
    instead would let irregular rows keep their place beyond the training data.
    Cost O(d · (n_ref log n_ref + Σ m_k log n_quantiles)).
    """
    from sklearn.preprocessing import QuantileTransformer

    x_ref = np.asarray(x_ref, dtype=np.float64)
    qt = QuantileTransformer(output_distribution="normal", n_quantiles=min(n_quantiles, x_ref.shape[0]),
                             subsample=None, random_state=seed).fit(x_ref)
    return tuple(qt.transform(np.asarray(a, dtype=np.float64)) for a in (x_ref, *xs))


def irregularity(x: np.ndarray, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """|projection on the first principal component − its median| for each row of ``x`` (n, d): (n,).

    The centre, the component and the median are fitted on the rows ``fit_rows`` (indices;
    None: all rows) and applied to every row.
    """
    ref = slice(None) if fit_rows is None else np.asarray(fit_rows)
    mean = x[ref].mean(axis=0)
    _, _, vt = np.linalg.svd(x[ref] - mean, full_matrices=False)
    proj = (x - mean) @ vt[0]
    return np.abs(proj - np.median(proj[ref]))


@dataclass(frozen=True)
class IrregularSplit:
    """Row indices of one dataset: train / val / regular test pool / irregular pool.

    The four index arrays are disjoint. ``test(p)`` is the test set with a proportion ``p``
    of irregular examples: the first ``round((1 − p)·n_test)`` regular test rows and the
    first ``round(p·n_test)`` irregular rows, so test sets are nested in p.
    """

    train: np.ndarray
    val: np.ndarray
    test_regular: np.ndarray
    irregular: np.ndarray
    n_test: int

    def test(self, p: float) -> np.ndarray:
        k = int(round(p * self.n_test))
        return np.concatenate([self.test_regular[: self.n_test - k], self.irregular[:k]])


def irregular_split(x: np.ndarray, *, seed: int, irregular_frac: float = 0.1, n_val: int = 2000,
                    n_test: int = 4000, max_p: float = 0.5, max_train: int | None = None) -> IrregularSplit:
    """Split rows into train, validation, regular test and irregular test (digest Sec. 6.3).

    The ``ceil(irregular_frac · n)`` rows farthest from the median along the first
    principal component of ``x`` (already normalised) are irregular (deterministic).
    The rest is shuffled with ``seed`` into ``n_val`` validation rows, ``n_test`` regular
    test rows and the training rows (at most ``max_train`` of them when given). The
    irregular rows are shuffled with ``seed`` too; ``max_p · n_test`` of them must exist.
    """
    n = x.shape[0]
    n_irr = int(np.ceil(irregular_frac * n))
    if not (0 < irregular_frac < 1):
        raise ConfigError(f"irregular_split(irregular_frac={irregular_frac}): use a fraction in (0, 1)")
    need = int(round(max_p * n_test))
    if need > n_irr:
        raise ConfigError(
            f"irregular_split(max_p={max_p}, n_test={n_test}): needs {need} irregular rows but the "
            f"top {irregular_frac:.0%} of {n} rows are {n_irr}; lower max_p or n_test")
    order = np.argsort(-irregularity(x), kind="stable")
    irregular, regular = order[:n_irr], order[n_irr:]
    if n_val + n_test >= regular.size:
        raise ConfigError(
            f"irregular_split(n_val={n_val}, n_test={n_test}): only {regular.size} regular rows; "
            "lower n_val or n_test")
    rng = np.random.default_rng(seed)
    regular = rng.permutation(regular)
    irregular = rng.permutation(irregular)
    val, test_regular, train = regular[:n_val], regular[n_val:n_val + n_test], regular[n_val + n_test:]
    if max_train:
        train = train[:max_train]
    return IrregularSplit(train=train, val=val, test_regular=test_regular, irregular=irregular,
                          n_test=n_test)


def refit_on_train(x_raw: np.ndarray, y_raw: np.ndarray, split: IrregularSplit, *, seed: int,
                   skew_threshold: float = 2.0, scale_target: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, dict, IrregularSplit]:
    """The leak-free reading of NOTE [tabular preprocessing]: every statistic fitted on training rows.

    Keeps ``split.train`` (chosen by the all-rows fit) and refits on those rows alone the
    preprocessing (:func:`preprocess` with ``fit_rows``) and the irregularity score
    (:func:`irregularity` with ``fit_rows``). Among the other rows, the ``len(split.irregular)``
    with the largest refitted score are the irregular pool; the rest, shuffled with ``seed``,
    give the validation and regular test rows (as many as before). No test row, regular or
    irregular, enters any fitted statistic. Returns ``(x, y, info, split)``.
    """
    train = split.train
    x, y, info = preprocess(x_raw, y_raw, skew_threshold=skew_threshold, fit_rows=train, scale_target=scale_target)
    score = irregularity(x, fit_rows=train)
    pool = np.setdiff1d(np.arange(x.shape[0]), train)
    order = pool[np.argsort(-score[pool], kind="stable")]
    n_irr, n_val = len(split.irregular), len(split.val)
    if len(order) < n_irr + n_val + split.n_test:
        raise ConfigError(f"refit_on_train: {len(order)} rows outside training, fewer than the {n_irr} irregular + "
                          f"{n_val} validation + {split.n_test} test rows needed; lower n_val, n_test or max_train")
    rng = np.random.default_rng([seed, 3])
    irregular, regular = rng.permutation(order[:n_irr]), rng.permutation(order[n_irr:])
    return x, y, info, IrregularSplit(train=train, val=regular[:n_val], test_regular=regular[n_val:n_val + split.n_test],
                                      irregular=irregular, n_test=split.n_test)
