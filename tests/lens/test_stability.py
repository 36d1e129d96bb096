"""adam_sharpness: λ_max(γ·a·J diag(1/φ) Jᵀ) against a hand computation on a model linear in its
parameters (J = [x, 1]), the stability threshold, and refusals."""

import pytest
import torch

from telescope.errors import ConfigError, ShapeError
from telescope.lens import adam_sharpness, adam_stability_threshold


@pytest.mark.parametrize("opt_cls,loss", [(torch.optim.Adam, "mse"), (torch.optim.AdamW, "half_mse"),
                                          (torch.optim.AdamW, "sum")])
def test_matches_hand_computation_on_a_linear_model(opt_cls, loss):
    torch.manual_seed(0)
    n, d = 12, 5
    x, y = torch.randn(n, d, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    model = torch.nn.Linear(d, 1).double()
    opt = opt_cls(model.parameters(), lr=0.03, betas=(0.8, 0.95), eps=1e-6)
    for _ in range(3):
        opt.zero_grad()
        ((model(x).squeeze(-1) - y) ** 2).mean().backward()
        opt.step()
    got = adam_sharpness(model, opt, x, loss=loss)
    J = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)          # ∂f/∂(W, b)
    st_w, st_b = opt.state[model.weight], opt.state[model.bias]
    step = float(st_w["step"])
    phi = torch.cat([st_w["exp_avg_sq"].reshape(-1), st_b["exp_avg_sq"].reshape(-1)]) / (1 - 0.95 ** step)
    phi = phi.sqrt() + 1e-6
    a = {"mse": 2.0 / n, "half_mse": 1.0 / n, "sum": 2.0}[loss]
    A = 0.03 * a * J @ torch.diag(1 / phi) @ J.T
    want = float(torch.linalg.eigvalsh(A)[-1])
    assert got["sharpness"] == pytest.approx(want, rel=1e-10)
    assert got["threshold"] == pytest.approx(2 * 1.8 / 0.2)
    assert got["ratio"] == pytest.approx(want / 18.0, rel=1e-10)


def test_threshold_and_refusals():
    assert adam_stability_threshold(0.9) == pytest.approx(38.0)
    assert adam_stability_threshold(0.0) == pytest.approx(2.0)        # plain gradient descent: γλ < 2
    with pytest.raises(ConfigError, match="β1"):
        adam_stability_threshold(1.0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="Adam"):
        adam_sharpness(model, torch.optim.SGD(model.parameters(), lr=0.1), x)
    with pytest.raises(ConfigError, match="not taken a step"):
        adam_sharpness(model, torch.optim.Adam(model.parameters()), x)
    with pytest.raises(ShapeError, match="scalar output"):
        wide = torch.nn.Linear(3, 2)
        opt = torch.optim.Adam(wide.parameters())
        wide(x).sum().backward()
        opt.step()
        adam_sharpness(wide, opt, x)
