"""Feature measures: rank on activations of known rank, layer features, the float64 copy, probes."""

import math

import pytest
import torch

from telescope.errors import ShapeError
from telescope.measures import (as_float64, covariance_spectrum, feature_covariance, feature_effective_rank,
                                layer_features, numerical_rank, probe_accuracy, tunnel_length)
from telescope.models import MLP


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
    assert feature_effective_rank(q2 @ torch.eye(6, 10, dtype=torch.float64)) == pytest.approx(6.0, rel=1e-6)
    assert feature_effective_rank(torch.ones(10, 4, dtype=torch.float64)) == 0.0
    assert 1.0 <= feature_effective_rank(low_rank(100, 10, 3)) <= 3.0 + 1e-9


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


def test_layer_features_are_the_linear_outputs():
    torch.manual_seed(1)
    model = MLP(6, 5, 3, 10).double()
    x = torch.randn(7, 6, dtype=torch.float64)
    feats = layer_features(model, x)
    assert [tuple(f.shape) for f in feats] == [(7, 5), (7, 5), (7, 10)]
    lin = model.linear_layers()
    assert torch.allclose(feats[0], lin[0](x))
    assert torch.allclose(feats[1], lin[1](torch.relu(feats[0])))
    assert torch.allclose(feats[2], model(x))


def test_float64_copy_leaves_the_model_alone():
    model = MLP(4, 3, 2, 10)
    copy64 = as_float64(model)
    assert copy64 is not model and next(copy64.parameters()).dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32
    model64 = model.double()
    assert as_float64(model64) is model64


def test_probe_separates_linearly_separable_classes():
    g = torch.Generator().manual_seed(3)
    y = torch.arange(400) % 10
    centers = 10.0 * torch.randn(10, 12, generator=g, dtype=torch.float64)
    x = centers[y] + torch.randn(400, 12, generator=g, dtype=torch.float64)
    assert probe_accuracy(x[:300], y[:300], x[300:], y[300:]) == 1.0
    noise = torch.randn(400, 12, generator=g, dtype=torch.float64)
    assert probe_accuracy(noise[:300], y[:300], noise[300:], y[300:]) < 0.35


def test_feature_effective_rank_is_the_kernel_effective_rank_of_the_covariance():
    from telescope.kernels import effective_rank

    a = low_rank(80, 9, 5) + 0.01 * low_rank(80, 9, 9, seed=2)
    expected = float(effective_rank(feature_covariance(a)))  # eigenvalues of the PSD covariance
    assert feature_effective_rank(a) == pytest.approx(expected, rel=1e-10)


def test_dead_units_counts_units_off_on_every_input_and_bounds_the_next_layers_rank():
    from telescope.measures import dead_units

    torch.manual_seed(3)
    z = torch.randn(50, 6, dtype=torch.float64)
    z[:, 1] = -z[:, 1].abs() - 0.1          # dead: negative everywhere
    z[:, 4] = 0.0                           # dead: exactly zero (ReLU gives 0)
    z[:, 5] = -z[:, 5].abs()
    z[7, 5] = 0.3                           # alive on one input only: not dead
    assert dead_units(z) == 2
    assert dead_units(torch.ones(3, 2)) == 0 and dead_units(-torch.ones(3, 2)) == 2
    # the next layer's pre-activations W relu(z) + b have default-tolerance rank d - dead
    nxt = torch.relu(z) @ torch.randn(6, 6, dtype=torch.float64) + 1.0
    assert numerical_rank(nxt) == 6 - dead_units(z)
    with pytest.raises(ShapeError, match="dead_units"):
        dead_units(torch.ones(5))
