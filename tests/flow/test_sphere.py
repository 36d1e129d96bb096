"""Spherical harmonics, Funk–Hecke eigenvalues and product targets on S^{d−1}(√d)."""

import math

import numpy as np
import pytest

from telescope.errors import ConfigError, ShapeError
from telescope.flow import (
    ProductTarget,
    funk_hecke_eigenvalues,
    harmonic_dim,
    inner_product_kernel,
    sample_sphere,
)

# h^{(k)}(0)/k! for k = 0..4 (derived by hand from the closed forms; see inner_product.py)
TAYLOR = {
    "exp": [1.0, 1.0, 0.5, 1 / 6, 1 / 24],
    "rf_relu": [1 / (2 * math.pi), 0.25, 1 / (4 * math.pi), 0.0, 1 / (48 * math.pi)],
    "ntk_relu": [1 / (2 * math.pi), 0.5, 3 / (4 * math.pi), 0.0, 5 / (48 * math.pi)],
}


def test_harmonic_dim_values():
    assert [harmonic_dim(30, k) for k in range(3)] == [1, 30, 464]
    assert harmonic_dim(40, 2) == 819
    assert [harmonic_dim(3, k) for k in range(5)] == [1, 3, 5, 7, 9]     # 2k + 1 on S²


def test_sample_sphere_radius_and_moments():
    x = sample_sphere(20000, 7, np.random.default_rng(0))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), math.sqrt(7), rtol=1e-12)
    np.testing.assert_allclose(np.mean(x ** 2, axis=0), 1.0, atol=0.05)


@pytest.mark.parametrize("name", sorted(TAYLOR))
def test_taylor_coefficients_of_the_profiles(name):
    """The hand-derived series (used below) match the closed-form profiles near t = 0."""
    h = inner_product_kernel(name).h
    t = np.linspace(-0.2, 0.2, 9)
    series = sum(c * t ** k for k, c in enumerate(TAYLOR[name]))
    np.testing.assert_allclose(h(t), series, atol=3e-5)   # next terms are O(t^5) ~ 3e-4 * coefficient


@pytest.mark.parametrize("name", sorted(TAYLOR))
def test_trace_identity(name):
    """Σ_k λ_{d,k} B(d,k) = h(1) (the kernel's diagonal), summed far enough."""
    h = inner_product_kernel(name).h
    d, kmax = 5, 150     # ReLU profiles are not smooth at t = ±1: the tail beyond 150 holds ~2e-3
    lam = funk_hecke_eigenvalues(h, d, kmax, nodes=600)
    total = sum(lam[k] * harmonic_dim(d, k) for k in range(kmax + 1))
    assert total == pytest.approx(float(h(np.array(1.0))), abs=3e-3 if "relu" in name else 1e-8)


@pytest.mark.parametrize("name", sorted(TAYLOR))
def test_eigenvalues_times_multiplicity_tend_to_taylor_coefficients(name):
    """λ_{d,k}·B(d,k) → h^{(k)}(0)/k!, with an error that shrinks like 1/d."""
    h = inner_product_kernel(name).h
    errs = {}
    for d in (200, 2000):
        lam = funk_hecke_eigenvalues(h, d, 4)
        scaled = np.array([lam[k] * harmonic_dim(d, k) for k in range(5)])
        errs[d] = np.abs(scaled - TAYLOR[name])
    assert np.all(errs[2000] < 2e-3)
    big = errs[200] > 1e-6
    assert np.all(errs[2000][big] < errs[200][big] / 5)


def test_eigenvalues_match_gram_spectrum_on_s2():
    """Independent check of normalisation and multiplicity: the spectrum of 𝐇/n clusters at λ_{3,k}."""
    d, n = 3, 1500
    x = sample_sphere(n, d, np.random.default_rng(1))
    kernel = inner_product_kernel("exp")
    mu = np.sort(np.linalg.eigvalsh(kernel(x)))[::-1] / n
    lam = funk_hecke_eigenvalues(kernel.h, d, 2)
    np.testing.assert_allclose(mu[0], lam[0], rtol=0.05)
    np.testing.assert_allclose(mu[1:4], lam[1], rtol=0.1)
    np.testing.assert_allclose(mu[4:9], lam[2], rtol=0.15)
    assert mu[9] < 0.5 * lam[2]


def test_product_target_parse_and_energies():
    f = ProductTarget.parse("x1 + 0.5*x2*x3 + 2 x4x5x6")
    assert f.degrees() == [1, 2, 3]
    d = 6
    e = f.energies(d)
    np.testing.assert_allclose(e, [0.0, 1.0, 0.25 * d / (d + 2), 4 * d * d / ((d + 2) * (d + 4))], rtol=1e-14)
    x = sample_sphere(400000, d, np.random.default_rng(2))
    for k in (1, 2, 3):
        assert np.mean(f.degree_part(x, k) ** 2) == pytest.approx(e[k], rel=0.03)
    # different degrees are orthogonal, so the energies add up to E f²
    assert np.mean(f(x) ** 2) == pytest.approx(e.sum(), rel=0.03)


def test_product_target_is_an_eigenfunction_of_the_kernel_operator():
    """P_k f is a degree-k harmonic: E_x'[H(x, x') f(x')] = λ_{d,k} f(x) (Monte Carlo)."""
    d = 4
    f = ProductTarget.parse("x2*x3")
    kernel = inner_product_kernel("exp")
    rng = np.random.default_rng(3)
    xs = sample_sphere(200000, d, rng)
    x = sample_sphere(5, d, rng)
    lam = funk_hecke_eigenvalues(kernel.h, d, 2)
    np.testing.assert_allclose(kernel(x, xs) @ f(xs) / len(xs), lam[2] * f(x), atol=0.01)


@pytest.mark.parametrize("text", ["x1*x1", "", "y1", "x0", "x1+x1", "x1 + + x2"])
def test_product_target_rejects_bad_text(text):
    with pytest.raises(ConfigError, match="ProductTarget.parse"):
        ProductTarget.parse(text)


def test_bad_inputs_raise_readable_errors():
    with pytest.raises(ConfigError, match="d >= 3"):
        funk_hecke_eigenvalues(np.exp, 2, 3)
    with pytest.raises(ConfigError, match="raise d"):
        ProductTarget.parse("x1+x9").energies(5)
    with pytest.raises(ShapeError):
        ProductTarget.parse("x1").degree_part(np.zeros(3), 1)
    with pytest.raises(ConfigError, match="unknown kernel"):
        inner_product_kernel("rbf")
    with pytest.raises(ShapeError):
        inner_product_kernel("exp")(np.zeros((2, 3)), np.zeros((2, 4)))
