"""Feature-rank measures on activations of known rank, and the centred kernel–target alignment."""

import math

import pytest
import torch

from telescope.errors import ShapeError
from telescope.lens.rank import (centered_alignment, covariance_spectrum, effective_rank, feature_covariance,
                                 numerical_rank, tunnel_length)


def low_rank(n, d, r, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, r, generator=g, dtype=dtype) @ torch.randn(r, d, generator=g, dtype=dtype)


@pytest.mark.parametrize("r", [0, 1, 5, 17, 40])
def test_rank_of_constructed_activations(r):
    a = low_rank(300, 40, r) + 3.0  # a constant offset is removed by the covariance
    assert numerical_rank(a) == r
    assert numerical_rank(a, rtol=1e-6) == r


def test_rank_matches_the_authors_formula():
    a = low_rank(200, 30, 12) + 0.1 * low_rank(200, 30, 8, seed=9)
    expected = int(torch.linalg.matrix_rank(torch.cov(a.T)))
    assert numerical_rank(a) == expected == 20


def test_dead_relu_units_lower_the_next_layers_rank():
    # Layer l's pre-activation W h: if k of the w units in h are dead (always 0), rank <= w - k.
    g = torch.Generator().manual_seed(1)
    h = torch.relu(torch.randn(500, 32, generator=g, dtype=torch.float64))
    h[:, :7] = 0.0
    w = torch.randn(32, 32, generator=g, dtype=torch.float64)
    assert numerical_rank(h @ w.T) == 25
    assert numerical_rank(h @ w.T, rtol=1e-3) == 25
    # float32 rounding noise enters the covariance squared, far below a relative 1e-3
    assert numerical_rank((h.float() @ w.float().T).double(), rtol=1e-3) == 25


def test_relative_tolerance_counts_dominant_directions():
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    scales = torch.tensor([1.0] * 4 + [1e-3] * 16, dtype=torch.float64)
    a = torch.randn(5000, 20, generator=g, dtype=torch.float64) * scales @ q.T
    assert numerical_rank(a) == 20
    assert numerical_rank(a, rtol=1e-3) == 4


def test_effective_rank_of_equal_spectrum_and_limits():
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(5000, 6, generator=g, dtype=torch.float64))
    a = q * math.sqrt(5000)  # orthonormal columns, zero mean up to sampling: covariance ~ c·I on 6 dims
    a = a - a.mean(0)
    q2, _ = torch.linalg.qr(a)
    assert effective_rank(q2 @ torch.eye(6, 10, dtype=torch.float64)) == pytest.approx(6.0, rel=1e-6)
    assert effective_rank(torch.ones(10, 4, dtype=torch.float64)) == 0.0
    assert 1.0 <= effective_rank(low_rank(100, 10, 3)) <= 3.0 + 1e-9


def test_covariance_and_spectrum_shapes():
    a = low_rank(50, 1, 1)
    assert feature_covariance(a).shape == (1, 1)
    assert covariance_spectrum(low_rank(50, 7, 2)).shape == (7,)


def test_bad_inputs_raise_shape_errors():
    with pytest.raises(ShapeError, match="2-d tensor"):
        numerical_rank(torch.zeros(5))
    with pytest.raises(ShapeError, match="at least 2 samples"):
        numerical_rank(torch.zeros(1, 3))
    with pytest.raises(ShapeError, match="floating"):
        numerical_rank(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ShapeError, match="rtol"):
        numerical_rank(torch.zeros(4, 3), rtol=2.0)


def test_tunnel_length_counts_layers_below_threshold():
    assert tunnel_length([128, 100, 96, 95, 10], width=128) == 2
    assert tunnel_length({"1": 400, "2": 299}, width=400) == 1
    assert tunnel_length([], width=10) == 0


def test_alignment_of_the_target_kernel_is_one_and_of_noise_is_small():
    g = torch.Generator().manual_seed(4)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (200,), generator=g), 10).double()
    assert centered_alignment(y @ y.T, y) == pytest.approx(1.0, abs=1e-12)
    assert centered_alignment(5.0 * y @ y.T + 3.0, y) == pytest.approx(1.0, abs=1e-12)  # scale, shift
    z = torch.randn(200, 50, generator=g, dtype=torch.float64)
    assert abs(centered_alignment(z @ z.T, y)) < 0.1
    assert centered_alignment(torch.ones(200, 200, dtype=torch.float64), y) == 0.0


def test_alignment_matches_a_direct_formula():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    k = x @ x.T
    y = torch.randn(30, 2, generator=g, dtype=torch.float64)
    h = torch.eye(30, dtype=torch.float64) - 1.0 / 30
    kc, tc = h @ k @ h, h @ (y @ y.T) @ h
    expected = float((kc * tc).sum() / (kc.norm() * tc.norm()))
    assert centered_alignment(k, y) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ShapeError):
        centered_alignment(k[:, :3], y)
    with pytest.raises(ShapeError):
        centered_alignment(k, y[:5])
