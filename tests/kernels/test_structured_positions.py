"""NOTE [structured kernel]: a module applied at T > 1 positions is contracted either over per-example
gradient rows or over the T² position pairs; both forms equal the Jacobian kernel in float64, for
every output mode, on token and sequence models and on the modular-arithmetic transformer, and the
cost rule picks the position pairs for the transformer's few tokens and rows for convolution patches."""

import pytest
import torch

from telescope.kernels import empirical_ntk
from telescope.kernels import structured
from telescope.kernels.fastpath import no_fused_fastpath
from telescope.models.transformer import ModularTransformer, modular_tokens

from ntk_models import build


def _transformer():
    gen = torch.Generator().manual_seed(0)
    x, _, xt, _ = modular_tokens(5, 0.5, generator=gen)
    model = ModularTransformer(5, 8, 2, 16, layer_norm=True, generator=gen, dtype=torch.float64)
    return model, x[:6], xt[:4]


@pytest.mark.parametrize("name", ["tokens", "sequence", "transformer"])
@pytest.mark.parametrize("form", ["positions", "rows"])
@pytest.mark.parametrize("output", ["full", "trace", "diagonal"])
@pytest.mark.parametrize("gram", [True, False])
def test_both_forms_equal_the_jacobian_kernel(name, form, output, gram, monkeypatch):
    model, x1, x2 = _transformer() if name == "transformer" else build(name)
    x2 = None if gram else x2
    with no_fused_fastpath():
        want = empirical_ntk(model, x1, x2, output=output, implementation="jacobian")
        monkeypatch.setattr(structured, "_positional", lambda *args: form == "positions")
        got = empirical_ntk(model, x1, x2, output=output, implementation="structured")
    assert torch.allclose(got, want, atol=1e-11, rtol=1e-10)


def test_the_cost_rule():
    # the paper transformer's MLP input layer (d_in 128 + bias, d_out 512, T = 3, k = 113, trace): positions
    assert structured._positional(3, 129, 512, 113, "trace")
    # a 3×3 conv over 16×16 patches (T = 256, d_in 27 + 1, d_out 16, k = 10): rows
    assert not structured._positional(256, 28, 16, 10, "full")
