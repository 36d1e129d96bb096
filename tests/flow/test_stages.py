"""Stage detection on curves and the theory's predicted boundaries."""

import math

import numpy as np
import pytest

from telescope.errors import ConfigError, ShapeError
from telescope.flow import detect_stages, funk_hecke_eigenvalues, harmonic_dim, predicted_boundaries


def _model_curves(t, n_over_kappa=3e3, t_next=4e4, noise=0.09):
    """Stylised three-stage curves: degree 1 learned at t ~ 200, interpolation at n/κ, degree 2 at t_next."""
    deg1 = np.exp(-2 * t / 200)
    oracle = deg1 + np.exp(-2 * t / t_next)
    test = deg1 + 1.0
    train = (deg1 + 1.0 + noise) * np.exp(-2 * t / n_over_kappa)
    return train, test, oracle


def test_three_stages_detected_in_order_when_the_time_scales_are_far_apart():
    t = np.logspace(0, 8, 81)
    train, test, oracle = _model_curves(t, n_over_kappa=1e3, t_next=1e6)
    report = detect_stages(t, train, test, oracle, noise_var=0.09)
    assert report.in_order
    assert [w.stage for w in report.windows] == [1, 2, 3]
    s1, s2, s3 = report.window(1), report.window(2), report.window(3)
    assert s1.start == 1.0 and s3.end == 1e8
    # a plateau starts once the step is 90 % done: e^{-2t/τ} = 0.1 at t = τ·ln(10)/2 ≈ 1.15 τ
    assert 1e3 < s2.start < 1.6e3
    assert 1e6 < s3.start < 1.6e6
    # stage 1 ends when degree 1 (τ = 200) is learned enough for the train-test gap to pass 10 %
    assert s1.end < 200 and s1.end < s2.start <= s2.end < s3.start
    # between the windows: transitions (label 0), never a stage out of order
    assert set(report.labels[(t > s1.end) & (t < s2.start)]) == {0}
    assert report.bootstrap_gap < 0.01


def test_a_stage_two_gap_above_the_tolerance_is_not_called_a_stage():
    """Scales only 13x apart (the quick preset's d = 200): test and oracle differ by > 10 % once
    the training set is fitted, so there is no clean stage 2, and the gap is reported."""
    t = np.logspace(0, 7, 141)
    train, test, oracle = _model_curves(t, n_over_kappa=3e3, t_next=4e4)
    report = detect_stages(t, train, test, oracle, noise_var=0.09)
    assert report.window(2) is None and not report.in_order
    assert report.window(1) is not None and report.window(3) is not None
    # the gap when fitted is what the oracle has learned of degree 2 by then: 1 − e^{−2 t_fit / t_next}
    i = int(np.flatnonzero(report.memorisation_gap >= 0.9)[0])
    expected = (test[i] - oracle[i]) / test[i]
    assert report.bootstrap_gap == pytest.approx(expected, rel=1e-12)
    assert 0.1 < report.bootstrap_gap < 0.3
    # a looser tolerance (the old rule called gaps up to ½ "together") would call it stage 2
    assert detect_stages(t, train, test, oracle, noise_var=0.09, tol=0.3).window(2) is not None


def test_noise_is_subtracted_from_the_training_error():
    """Train error includes σ², test error (clean targets) does not: compare like with like."""
    t = np.logspace(0, 8, 81)
    train, test, oracle = _model_curves(t, n_over_kappa=1e3, t_next=1e6, noise=1.5)
    fair = detect_stages(t, train, test, oracle, noise_var=1.5)
    naive = detect_stages(t, train, test, oracle, noise_var=0.0)
    assert fair.in_order and fair.window(1).start == 1.0
    # ignoring σ² the training error looks far above the test error: no stage 1 at the start
    assert np.all(naive.labels[t < 100] == 0)


def test_out_of_order_or_missing_stages_are_reported():
    t = np.logspace(0, 8, 81)
    train, test, oracle = _model_curves(t, n_over_kappa=1e3, t_next=1e6)
    # an oracle that pulls away before any memorisation: never a stage, no bootstrap gap
    early = detect_stages(t, test + 0.09, test, 0.05 * test, noise_var=0.09)
    assert not early.in_order and np.all(early.labels == 0) and math.isnan(early.bootstrap_gap)
    # a run that stops inside stage 2 has no stage 3
    short = t <= 1e5
    report = detect_stages(t[short], train[short], test[short], oracle[short], noise_var=0.09)
    assert not report.in_order and report.window(3) is None and report.window(2) is not None
    # stage 3 before stage 2 is out of order
    swapped = np.concatenate([np.full(3, 3), np.full(3, 2)])
    assert not np.all(np.diff(swapped) >= 0)


def test_detect_stages_validates_inputs():
    with pytest.raises(ShapeError):
        detect_stages([1, 2], [1, 2], [1], [1, 2])
    with pytest.raises(ConfigError, match="tol"):
        detect_stages([1], [1], [1], [1], tol=0.5)
    with pytest.raises(ConfigError, match="noise_var"):
        detect_stages([1], [1], [1], [1], noise_var=-1.0)


def test_predicted_boundaries_for_exp():
    d, n = 200, 2000
    lam = funk_hecke_eigenvalues(np.exp, d, 3)
    energies = np.array([0.0, 1.0, d / (d + 2)])
    pred = predicted_boundaries(lam, energies, d, n, math.e)
    assert pred["l"] == 1 and pred["k_next"] == 2
    assert pred["d^1"] == 200 and pred["d^2"] == 40000
    kappa = math.e - lam[0] - d * lam[1]
    assert pred["kappa_gt_l"] == pytest.approx(kappa, rel=1e-12)
    assert pred["kappa_gt_l"] == pytest.approx(math.e - 2, abs=0.01)     # digest b.3: κ_{>1} ≈ e − 2
    assert pred["interpolate"] == pytest.approx(n / kappa)
    assert pred["learn_deg1"] == pytest.approx(1 / lam[1]) and 190 < pred["learn_deg1"] < 210   # ≈ d
    assert pred["oracle_next"] == pytest.approx(1 / lam[2])
    assert pred["plateau"] == pytest.approx(d / (d + 2))   # ‖P_{>1} f‖² = ‖P_2 f‖²
    assert 0.9 * harmonic_dim(d, 2) * 2 < pred["oracle_next"] < 1.1 * harmonic_dim(d, 2) * 2   # ≈ B(d,2)/(h''(0)/2)


def test_predicted_boundaries_without_a_higher_degree():
    lam = funk_hecke_eigenvalues(np.exp, 50, 2)
    pred = predicted_boundaries(lam, np.array([0.0, 1.0]), 50, 500, math.e)
    assert pred["oracle_next"] == math.inf and math.isnan(pred["k_next"])
