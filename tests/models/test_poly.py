"""The committee machine: closed-form kernel and gradient against autograd, the exact loss
decomposition against Gaussian quadrature, and the modular-arithmetic model's data."""

import itertools

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from telescope.errors import ConfigError, ShapeError
from telescope.models import build
from telescope.models.modular import ModularQuadraticMLP, modular_addition
from telescope.models.poly import CommitteeMachine, gaussian_quadratic_task


def _model(centred=True, eps=0.3, alpha=1.7, seed=0, d=4, n=7):
    g = torch.Generator().manual_seed(seed)
    return CommitteeMachine(d, n, epsilon=eps, alpha=alpha, centred=centred, generator=g)


def _moved(model, seed=1, size=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.weight.add_(size * torch.randn(model.weight.shape, generator=g, dtype=model.weight.dtype))
    return model


@pytest.mark.parametrize("centred", [True, False])
def test_closed_form_kernel_equals_autograd(centred):
    model = _moved(_model(centred))
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(5, 4, generator=g, dtype=torch.float64)
    x2 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    params = {"weight": model.weight.detach()}
    buffers = {"weight0": model.weight0}

    def f(p, x):
        return functional_call(model, (p, buffers), (x,))

    j1 = jacrev(f)(params, x1)["weight"].reshape(5, -1)
    j2 = jacrev(f)(params, x2)["weight"].reshape(3, -1)
    torch.testing.assert_close(model.tangent_kernel(x1, x2), j1 @ j2.T, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.tangent_kernel(x1), j1 @ j1.T, rtol=1e-12, atol=1e-14)
    # K₀ from the stored initial weights
    j0 = jacrev(f)({"weight": model.weight0.clone()}, x1)["weight"].reshape(5, -1)
    torch.testing.assert_close(model.tangent_kernel(x1, weight=model.weight0), j0 @ j0.T, rtol=1e-12, atol=1e-14)


def test_mse_gradient_equals_autograd():
    model = _moved(_model(centred=True))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.randn(9, generator=g, dtype=torch.float64)
    loss = ((model(x) - y) ** 2).mean()
    (grad,) = torch.autograd.grad(loss, model.weight)
    with torch.no_grad():
        mine = model.mse_gradient(x, model(x) - y)
    torch.testing.assert_close(mine, grad, rtol=1e-12, atol=1e-14)


def test_centred_output_is_zero_at_init_and_matches_sufficient_statistics():
    model = _model(centred=True)
    x = torch.randn(6, 4, dtype=torch.float64)
    assert model(x).abs().max() == 0
    _moved(model)
    wbar, m = model.sufficient_statistics()
    explicit = model.alpha * (x @ wbar) + 0.5 * model.alpha * model.epsilon * ((x @ m) * x).sum(1)
    torch.testing.assert_close(model(x), explicit, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("centred", [True, False])
def test_loss_decomposition_is_the_exact_population_loss(centred):
    """Gauss–Hermite with 3 nodes per axis integrates the degree-4 loss exactly."""
    d = 3
    model = _moved(_model(centred, d=d, n=5), size=0.8)
    beta = torch.tensor([0.7, -1.3, 0.4], dtype=torch.float64)
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)
    weights = weights / np.sqrt(2 * np.pi)
    pts = torch.tensor(list(itertools.product(nodes, repeat=d)), dtype=torch.float64) / np.sqrt(d)
    w = torch.tensor([np.prod(c) for c in itertools.product(weights, repeat=d)], dtype=torch.float64)
    y = 0.5 * (pts @ beta) ** 2
    with torch.no_grad():
        exact = float((w * (model(pts) - y) ** 2).sum())
    dec = model.loss_decomposition(beta)
    assert abs(dec["variance"] + dec["misalignment"] + dec["linear"] - exact) < 1e-10
    assert dec["total"] == pytest.approx(exact, abs=1e-10)
    # at init the centred predictor is zero: no linear power, the loss is E[y²]
    fresh = _model(centred=True, d=d, n=5)
    assert fresh.loss_decomposition(beta)["linear"] == 0.0


def test_feature_alignment_and_relative_change():
    model = _model(centred=True, d=4, n=3)
    beta = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert model.relative_change() == 0.0
    with torch.no_grad():
        model.weight.copy_(torch.outer(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64), beta))
    assert model.feature_alignment(beta) == pytest.approx(4.0)     # M ∝ ββᵀ gives D


def test_bad_inputs_raise_readable_errors():
    model = _model()
    with pytest.raises(ShapeError, match="expected \\(n, 4\\)"):
        model(torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ConfigError, match="alpha"):
        CommitteeMachine(3, 2, epsilon=0.1, alpha=0.0)
    with pytest.raises(ShapeError, match="beta"):
        model.loss_decomposition(torch.zeros(3, dtype=torch.float64))


def test_registry_builds_both_models():
    assert isinstance(build("committee", d_in=3, width=2, epsilon=0.1), CommitteeMachine)
    assert isinstance(build("modular_quadratic", p=5, width=4), ModularQuadraticMLP)


def test_gaussian_task_statistics():
    g = torch.Generator().manual_seed(0)
    x, y, xt, yt, beta = gaussian_quadratic_task(20, 4000, 10, generator=g)
    assert x.shape == (4000, 20) and y.shape == (4000,) and beta.shape == (20,)
    assert float(x.var()) == pytest.approx(1 / 20, rel=0.05)
    torch.testing.assert_close(y, 0.5 * (x @ beta) ** 2)


def test_modular_addition_task_and_model():
    g = torch.Generator().manual_seed(0)
    x, y, xt, yt = modular_addition(7, 0.8, generator=g, dtype=torch.float64)
    assert x.shape == (39, 14) and xt.shape == (10, 14) and y.shape == (39, 7)
    a, b = x[:, :7].argmax(1), x[:, 7:].argmax(1)
    assert torch.equal(y.argmax(1), (a + b) % 7)
    assert x.sum(1).eq(2).all() and y.sum(1).eq(1).all()
    pairs = {(int(i), int(j)) for i, j in zip(a, b)} | {(int(i), int(j)) for i, j in
                                                         zip(xt[:, :7].argmax(1), xt[:, 7:].argmax(1))}
    assert len(pairs) == 49                                            # a partition of all pairs
    m = ModularQuadraticMLP(7, 6, scale=2.0, generator=g, dtype=torch.float64)
    h = x @ m.w1.T
    torch.testing.assert_close(m(x), 4.0 * (h ** 2) @ m.w2.T / (14 * 6))
    with pytest.raises(ConfigError):
        modular_addition(7, 1.0, generator=g)


def test_directional_derivative_equals_jvp():
    from torch.func import jvp

    model = _moved(_model(centred=True))
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    v = torch.randn(model.weight.shape, generator=g, dtype=torch.float64)
    buffers = {"weight0": model.weight0}
    _, tangent = jvp(lambda w: functional_call(model, ({"weight": w}, buffers), (x,)),
                     (model.weight.detach(),), (v,))
    torch.testing.assert_close(model.directional_derivative(x, v), tangent, rtol=1e-12, atol=1e-14)
