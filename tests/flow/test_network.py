"""The bridge network: exact initial tangent kernel, zero initial output, infinite-width limit."""

import math

import numpy as np
import pytest
import torch

from telescope.errors import ConfigError, ShapeError
from telescope.flow import TwoLayerReLU, inner_product_kernel, sample_sphere


def _reference_tangent_kernel(net, x1, x2):
    """⟨∇θ f(x1), ∇θ f(x2)⟩ from autograd Jacobians (slow, obviously correct)."""
    params = dict(net.named_parameters())

    def f(p, x):
        return torch.func.functional_call(net, p, (x,))

    j1 = torch.func.jacrev(f)(params, torch.as_tensor(x1))
    j2 = torch.func.jacrev(f)(params, torch.as_tensor(x2))
    return sum((j1[k].reshape(len(x1), -1) @ j2[k].reshape(len(x2), -1).T) for k in params).detach().numpy()


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_closed_form_tangent_kernel_matches_autograd(scale):
    gen = torch.Generator().manual_seed(0)
    net = TwoLayerReLU(6, 40, scale=scale, generator=gen)
    with torch.no_grad():                 # leave the symmetric init so every term is exercised
        net.a.add_(0.3 * torch.randn(40, generator=gen, dtype=torch.float64))
    rng = np.random.default_rng(0)
    x1, x2 = sample_sphere(7, 6, rng), sample_sphere(5, 6, rng)
    np.testing.assert_allclose(net.tangent_kernel(x1, x2), _reference_tangent_kernel(net, x1, x2),
                               rtol=1e-10, atol=1e-12)


def test_symmetric_init_has_zero_output():
    net = TwoLayerReLU(5, 64, generator=torch.Generator().manual_seed(1))
    x = torch.as_tensor(sample_sphere(9, 5, np.random.default_rng(1)))
    assert torch.max(torch.abs(net(x))).item() < 1e-12


def test_wide_tangent_kernel_tends_to_the_relu_ntk_profile():
    d = 8
    x = sample_sphere(6, d, np.random.default_rng(2))
    want = inner_product_kernel("ntk_relu")(x)
    errs = []
    for width in (200, 200000):
        net = TwoLayerReLU(d, width, generator=torch.Generator().manual_seed(2))
        errs.append(np.abs(net.tangent_kernel(x) - want).max())
    assert errs[1] < 0.015 and errs[1] < errs[0] / 10     # Monte-Carlo error ∝ width^{-1/2}


def test_bad_arguments():
    with pytest.raises(ConfigError, match="even"):
        TwoLayerReLU(3, 5)
    with pytest.raises(ConfigError, match="scale"):
        TwoLayerReLU(3, 4, scale=0.0)
    with pytest.raises(ShapeError):
        TwoLayerReLU(3, 4)(torch.zeros(2, 4, dtype=torch.float64))
    assert math.isfinite(TwoLayerReLU(3, 4).tangent_kernel(np.ones((1, 3)))[0, 0])
