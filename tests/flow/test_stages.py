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


def test_three_stages_detected_in_order_with_windows_near_the_time_scales():
    t = np.logspace(0, 7, 57)
    train, test, oracle = _model_curves(t)
    report = detect_stages(t, train, test, oracle, noise_var=0.09)
    assert report.in_order
    assert [w.stage for w in report.windows] == [1, 2, 3]
    s2, s3 = report.window(2), report.window(3)
    assert report.window(1).start == 1.0 and s3.end == 1e7
    # the rule fires a constant factor (~0.3) before the time scales that drive it
    assert 0.1 * 3e3 < s2.start < 3e3
    assert 0.1 * 4e4 < s3.start < 4e4
    assert report.window(1).end < s2.start <= s2.end < s3.start


def test_noise_is_subtracted_from_the_training_error():
    """Train error includes σ², test error (clean targets) does not: compare like with like."""
    t = np.logspace(0, 7, 57)
    train, test, oracle = _model_curves(t, noise=1.5)
    fair = detect_stages(t, train, test, oracle, noise_var=1.5)
    naive = detect_stages(t, train, test, oracle, noise_var=0.0)
    assert fair.in_order and fair.window(2).start < 3e3
    # ignoring σ² the training error looks "not yet fitted" for longer: stage 2 is found late
    assert naive.window(2).start > 1.5 * fair.window(2).start


def test_out_of_order_or_missing_stages_are_reported():
    t = np.logspace(0, 7, 57)
    train, test, oracle = _model_curves(t)
    # an oracle that pulls away before any memorisation: label 0, not in order
    early = detect_stages(t, test + 0.09, test, 0.2 * test, noise_var=0.09)
    assert not early.in_order and np.all(early.labels == 0)
    # a run that stops inside stage 2 has no stage 3
    short = t <= 1e4
    report = detect_stages(t[short], train[short], test[short], oracle[short], noise_var=0.09)
    assert not report.in_order and report.window(3) is None and report.window(2) is not None


def test_detect_stages_validates_inputs():
    with pytest.raises(ShapeError):
        detect_stages([1, 2], [1, 2], [1], [1, 2])
    with pytest.raises(ConfigError, match="threshold"):
        detect_stages([1], [1], [1], [1], threshold=1.5)


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
    assert 0.9 * harmonic_dim(d, 2) * 2 < pred["oracle_next"] < 1.1 * harmonic_dim(d, 2) * 2   # ≈ B(d,2)/(h''(0)/2)


def test_predicted_boundaries_without_a_higher_degree():
    lam = funk_hecke_eigenvalues(np.exp, 50, 2)
    pred = predicted_boundaries(lam, np.array([0.0, 1.0]), 50, 500, math.e)
    assert pred["oracle_next"] == math.inf and math.isnan(pred["k_next"])
