"""ModularTransformer's laziness knob (Kumar et al. Fig. 6b): centred logits are zero at initialisation,
α scales the logits and the Jacobian, and the centring follows each pair, not its position in the batch."""

import pytest
import torch

from telescope.errors import ConfigError
from telescope.models.transformer import ModularTransformer, modular_tokens


def _pair(alpha, centred):
    gen = torch.Generator().manual_seed(3)
    return ModularTransformer(7, 8, 2, 16, generator=gen, dtype=torch.float64, alpha=alpha, centred=centred)


def test_centred_is_zero_at_init_and_alpha_scales_the_jacobian():
    x, _, xt, _ = modular_tokens(7, 0.5, generator=torch.Generator().manual_seed(0))
    plain, lazy = _pair(1.0, False), _pair(0.3, True)
    assert lazy(xt).abs().max() == 0 and lazy(x[torch.randperm(x.shape[0])]).abs().max() == 0
    params = {n: p.detach() for n, p in plain.named_parameters()}
    j_plain = torch.func.jacrev(lambda prm: torch.func.functional_call(plain, prm, (x,)))(params)
    j_lazy = torch.func.jacrev(lambda prm: torch.func.functional_call(lazy, prm, (x,)))(params)
    for name in params:
        assert torch.allclose(j_lazy[name], 0.3 * j_plain[name], atol=1e-12)
    with torch.no_grad():                                     # after a change of weights: α·(g(θ) − g(θ₀))
        for m in (plain, lazy):
            m.unembed.weight.add_(0.1)
        assert torch.allclose(lazy(x), 0.3 * (plain(x) - _pair(1.0, False)(x)), atol=1e-12)


def test_alpha_must_be_positive():
    with pytest.raises(ConfigError, match="alpha=0"):
        ModularTransformer(5, 8, 2, alpha=0.0)
