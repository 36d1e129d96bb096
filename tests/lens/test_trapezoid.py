"""NOTE [trapezoid rule]: the lens's second-order companion f̂ is exact on a model quadratic in its
parameters (a two-layer linear network), where Euler's f̃ is not; it follows any optimizer; off by default."""

import pytest
import torch

from telescope import Lens


def _two_layer_linear(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7, bias=False), torch.nn.Linear(7, 3, bias=False)).double()


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_exact_on_a_model_quadratic_in_its_parameters(opt_name):
    model = _two_layer_linear()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    xt = torch.randn(9, 5, dtype=torch.float64)
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt_name == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1))
    lens = Lens(model, {"test": xt, "train": x}, second_order=True)
    for _ in range(30):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        lens.step(opt)
    err = lens.errors("test")
    assert err["trapezoid/abs_err"] < 1e-12                       # f(θ + Δ) − f(θ) = ½(∇f(θ) + ∇f(θ + Δ))·Δ
    assert err["telescope/abs_err"] > 1e-4                        # Euler misses ½ Δᵀ∇²f Δ every step
    p = lens.predictions("train", linearized=False)
    assert torch.allclose(p["trapezoid"], p["network"], atol=1e-12, rtol=0)


def test_second_order_agrees_with_euler_to_second_order_and_is_off_by_default():
    """On a non-quadratic model (tanh) one step of size h: |f̂ − f̃| = O(h²), the trapezoid error O(h³)."""
    torch.manual_seed(1)
    x = torch.randn(6, 4, dtype=torch.float64)
    plain = Lens(torch.nn.Linear(4, 1).double(), {"test": x})
    assert "trapezoid" not in plain.predictions("test") and "trapezoid/abs_err" not in plain.errors("test")
    gaps, errs = [], []
    for h in (1e-2, 1e-3):
        torch.manual_seed(2)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
        lens = Lens(model, {"test": x}, second_order=True)
        opt = torch.optim.SGD(model.parameters(), lr=h)
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        lens.step(opt)
        p = lens.predictions("test", linearized=False)
        gaps.append(float((p["trapezoid"] - p["telescope"]).abs().max()))
        errs.append(float((p["trapezoid"] - p["network"]).abs().max()))
    assert 50 < gaps[0] / gaps[1] < 200            # O(h²): 10× smaller h, ~100× smaller gap
    assert errs[0] / errs[1] > 500                 # O(h³)
