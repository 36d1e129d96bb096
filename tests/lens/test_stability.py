"""adam_sharpness: λ_max(γ·a·J diag(1/φ) Jᵀ) against a hand computation on a model linear in its
parameters (J = [x, 1]), the stability threshold, and refusals."""

import pytest
import torch

from telescope.errors import ConfigError, ShapeError
from telescope.lens import adam_sharpness, adam_stability_threshold
from telescope.lens import stability


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
    with pytest.raises(ShapeError, match="non-empty"):
        opt = torch.optim.Adam(model.parameters())
        model(x).sum().backward()
        opt.step()
        adam_sharpness(model, opt, x[:0])


def _stepped(model, x, y, steps=3):
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.9, 0.98), eps=1e-7, weight_decay=0.5)
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return opt


def _reference(model, opt, x, loss):
    """λ_max of γ·a·J diag(1/φ) Jᵀ with J the full (|B|k × p) Jacobian from jacrev of the flattened outputs."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    jac = torch.func.jacrev(lambda prm: torch.func.functional_call(model, prm, (x,)).reshape(-1))(params)
    J = torch.cat([jac[n].reshape(jac[n].shape[0], -1) for n in params], 1).double()
    group = opt.param_groups[0]
    phi = torch.cat([(opt.state[p]["exp_avg_sq"].reshape(-1) / (1 - group["betas"][1] ** float(opt.state[p]["step"])))
                     .sqrt() + group["eps"] for p in model.parameters()]).double()
    out = model(x)
    a = {"mse": 2.0 / out.numel(), "half_mse": 1.0 / out.numel(), "sum": 2.0}[loss]
    return float(torch.linalg.eigvalsh(group["lr"] * a * J @ torch.diag(1 / phi) @ J.T)[-1])


@pytest.mark.parametrize("loss", ["mse", "sum"])
def test_multi_output_dense_and_matrix_free_match_the_full_jacobian(loss, monkeypatch):
    """k = 3 outputs: A is |B|k × |B|k; the dense path and the Lanczos path agree with jacrev."""
    torch.manual_seed(1)
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    opt = _stepped(model, x, y)
    want = _reference(model, opt, x, loss)
    dense = adam_sharpness(model, opt, x, loss=loss)["sharpness"]
    monkeypatch.setattr(stability, "DENSE_ROWS", 0)
    free = adam_sharpness(model, opt, x, loss=loss)["sharpness"]
    assert dense == pytest.approx(want, rel=1e-10)
    assert free == pytest.approx(want, rel=1e-8)


def test_matrix_free_on_a_transformer_in_eval_mode(monkeypatch):
    """The modular-arithmetic transformer (attention, embeddings, layer norms), evaluated in eval mode
    where PyTorch's fused attention has no forward-mode derivative (NOTE [fused fast path])."""
    from telescope.models.transformer import ModularTransformer, modular_tokens

    gen = torch.Generator().manual_seed(0)
    x, c, _, _ = modular_tokens(5, 0.6, generator=gen)
    model = ModularTransformer(5, 8, 2, 16, layer_norm=True, generator=gen, dtype=torch.float64)
    y = torch.nn.functional.one_hot(c, 5).double()
    opt = _stepped(model, x, y)
    model.eval()
    want = _reference(model, opt, x, "mse")
    monkeypatch.setattr(stability, "DENSE_ROWS", 0)
    assert adam_sharpness(model, opt, x)["sharpness"] == pytest.approx(want, rel=1e-8)
