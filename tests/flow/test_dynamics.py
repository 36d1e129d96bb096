"""Closed-form gradient flow against discrete gradient descent with a tiny step."""

import math

import numpy as np
import pytest

from telescope.errors import ConfigError, ShapeError
from telescope.flow import (
    EmpiricalFlow,
    ProductTarget,
    funk_hecke_eigenvalues,
    gd_reference,
    inner_product_kernel,
    log_time_grid,
    oracle_learned_fraction,
    oracle_mse,
    sample_sphere,
)


def _small_problem(n=40, m=30, d=5, seed=0):
    rng = np.random.default_rng(seed)
    f = ProductTarget.parse("x1+x2*x3")
    x, xt = sample_sphere(n, d, rng), sample_sphere(m, d, rng)
    y = f(x) + 0.3 * rng.standard_normal(n)
    kernel = inner_product_kernel("exp")
    return kernel(x), kernel(xt, x), y, f(xt)


@pytest.mark.parametrize("nugget", [0.0, 0.7])
def test_empirical_closed_form_matches_discrete_gd(nugget):
    gram, cross, y, _ = _small_problem()
    lr, steps = 2e-3, 20000                      # t = lr·steps = 40, well into interpolation
    record = [0, 500, 5000, 20000]
    gd_train, gd_cross = gd_reference(gram + nugget * np.eye(len(y)), cross, y, lr, steps, record)
    flow = EmpiricalFlow(gram, y, nugget=nugget)
    t = lr * np.array(record)
    np.testing.assert_allclose(flow.train_predictions(t), gd_train, atol=2e-3)
    np.testing.assert_allclose(flow.predict(cross, t), gd_cross, atol=2e-3)
    np.testing.assert_allclose(flow.train_mse(t), np.mean((gd_train - y) ** 2, axis=1), atol=2e-3)
    # the gap is the O(lr) discretisation error: a 4x smaller step shrinks it about 4x
    gd_fine, _ = gd_reference(gram + nugget * np.eye(len(y)), cross, y, lr / 4, steps * 4, [steps * 4])
    err_coarse = np.abs(gd_train[-1] - flow.train_predictions([t[-1]])[0]).max()
    err_fine = np.abs(gd_fine[-1] - flow.train_predictions([t[-1]])[0]).max()
    assert err_fine < err_coarse / 3


@pytest.mark.parametrize("nugget", [0.0, 0.7])
def test_discrete_mode_equals_gradient_descent_exactly(nugget):
    gram, cross, y, _ = _small_problem()
    lr, record = 0.05, [0, 1, 7, 300, 4000]
    gd_train, gd_cross = gd_reference(gram + nugget * np.eye(len(y)), cross, y, lr, 4000, record)
    flow = EmpiricalFlow(gram, y, lr=lr).with_nugget(nugget)
    t = lr * np.array(record)
    np.testing.assert_allclose(flow.train_predictions(t), gd_train, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(flow.predict(cross, t), gd_cross, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(flow.train_mse(t), np.mean((gd_train - y) ** 2, axis=1), rtol=1e-9)
    with pytest.raises(ConfigError, match="lr"):
        EmpiricalFlow(gram, y, lr=100.0)


def test_empirical_flow_limits_and_consistency():
    gram, cross, y, f_test = _small_problem()
    flow = EmpiricalFlow(gram, y)
    # t = 0: nothing learned
    assert flow.train_mse([0.0])[0] == pytest.approx(np.mean(y ** 2), rel=1e-12)
    np.testing.assert_allclose(flow.predict(cross, [0.0]), 0.0, atol=1e-14)
    # t → ∞: the ridgeless interpolator H(x, X) 𝐇⁻¹ y
    t_inf = [1e12]
    np.testing.assert_allclose(flow.train_predictions(t_inf)[0], y, atol=1e-8)
    np.testing.assert_allclose(flow.predict(cross, t_inf)[0], cross @ np.linalg.solve(gram, y), rtol=1e-6)
    # train predictions = predictor evaluated at the training points
    t = [0.5, 7.0, 300.0]
    np.testing.assert_allclose(flow.predict(gram, t), flow.train_predictions(t), atol=1e-10)
    # test_mse is the mean squared error of predict
    np.testing.assert_allclose(flow.test_mse(cross, f_test, t),
                               np.mean((flow.predict(cross, t) - f_test) ** 2, axis=1), rtol=1e-12)


def test_nugget_shares_the_eigendecomposition():
    gram, cross, y, _ = _small_problem()
    t = [1.0, 30.0, 1e4]
    a = EmpiricalFlow(gram, y).with_nugget(2.5)
    b = EmpiricalFlow(gram + 2.5 * np.eye(len(y)), y)
    np.testing.assert_allclose(a.train_mse(t), b.train_mse(t), rtol=1e-9)
    np.testing.assert_allclose(a.predict(cross, t), b.predict(cross, t), rtol=1e-8, atol=1e-12)


def test_one_sample_edge_case():
    flow = EmpiricalFlow(np.array([[2.0]]), np.array([3.0]))
    np.testing.assert_allclose(flow.train_mse([0.0, 1.0]), [9.0, 9.0 * math.exp(-4.0)], rtol=1e-12)
    np.testing.assert_allclose(flow.predict(np.array([[1.0]]), [1.0])[0, 0], 0.5 * 3.0 * (1 - math.exp(-2.0)))


def _sphere_quadrature(nz=16, nphi=32):
    """Nodes and weights on S²(√3) exact for polynomials of degree < min(2nz, nphi)."""
    z, wz = np.polynomial.legendre.leggauss(nz)
    phi = 2 * np.pi * np.arange(nphi) / nphi
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - zz ** 2)
    pts = np.stack([r * np.cos(pp), r * np.sin(pp), zz], axis=-1).reshape(-1, 3) * math.sqrt(3)
    w = (wz[:, None] / 2 * np.ones(nphi)[None, :] / nphi).reshape(-1)
    return pts, w


@pytest.mark.parametrize("name", ["exp", "ntk_relu"])
def test_oracle_closed_form_matches_population_gd(name):
    """Population GD f ← f + η 𝕂(f* − f), with 𝕂 discretised by an exact quadrature of S², d = 3."""
    pts, w = _sphere_quadrature()
    kernel = inner_product_kernel(name)
    target = ProductTarget.parse("x1 + x2*x3")
    f_star = target(pts)
    assert np.sum(w * f_star ** 2) == pytest.approx(target.energies(3).sum(), rel=1e-12)
    hw = kernel(pts) * w[None, :]
    lam = funk_hecke_eigenvalues(kernel.h, 3, 3, nodes=400)
    eta, steps = 0.04, 600
    f = np.zeros_like(f_star)
    got, want = [], []
    for s in range(1, steps + 1):
        f = f + eta * hw @ (f_star - f)
        if s % 150 == 0:
            got.append(np.sum(w * (f_star - f) ** 2))
            want.append(oracle_mse(lam, target.energies(3, 3), [eta * s])[0])
    got, want = np.array(got), np.array(want)
    assert want[-1] < 0.5 * want[0]                     # the curve really moves over the window
    np.testing.assert_allclose(got, want, rtol=2e-2 if "relu" in name else 5e-3)


def test_oracle_mse_and_fraction():
    lam = np.array([1.0, 0.1, 0.01])
    e = np.array([0.0, 1.0, 2.0])
    t = np.array([0.0, 10.0])
    np.testing.assert_allclose(oracle_mse(lam, e, t, noise_var=0.5),
                               [3.5, math.exp(-2.0) + 2 * math.exp(-0.2) + 0.5], rtol=1e-12)
    np.testing.assert_allclose(oracle_learned_fraction(lam, [10.0])[0], 1 - np.exp(-lam * 10.0), rtol=1e-12)
    with pytest.raises(ConfigError, match="degree"):
        oracle_mse(lam[:2], e, t)


def test_log_time_grid():
    g = log_time_grid(1e7, 8)
    assert g.dtype == np.int64 and g[0] == 1 and g[-1] == 10 ** 7
    assert np.all(np.diff(g) > 0)
    assert len(g) == 57 - 2        # 1, 1.33, 1.78, 2.37 round to 1, 1, 2, 2
    with pytest.raises(ConfigError):
        log_time_grid(0.5)


def test_bad_shapes_raise():
    with pytest.raises(ShapeError, match="EmpiricalFlow"):
        EmpiricalFlow(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ShapeError, match="empty"):
        EmpiricalFlow(np.zeros((0, 0)), np.zeros(0))
    flow = EmpiricalFlow(np.eye(3), np.ones(3))
    with pytest.raises(ShapeError, match="predict"):
        flow.predict(np.zeros((2, 4)), [1.0])
    with pytest.raises(ConfigError, match="times"):
        flow.train_mse([-1.0])
