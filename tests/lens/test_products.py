"""Structured Jacobian products (lens/products.py) against explicit per-example Jacobians, and the
smoother with structured products against the smoother with vmap(jacrev) rows, in float64."""

import logging

import pytest
import torch
import torch.nn as nn

from telescope.lens import Lens, SmootherSpec, smoother_of
from telescope.lens.products import JacobianMethod, JacobianProducts, Prepared
from telescope.models import MLP
from telescope.train import squared_loss

F64 = torch.float64
TOL = 1e-10




class Mixed(nn.Module):
    """Layers the products treat in closed form, next to a part they must not: a LayerNorm with
    affine parameters and a Linear on (n, T, d) inputs (closed form, NOTE [token and sequence
    layers]), a Linear applied twice (Jacobian rows), a frozen weight with a trained bias, an
    in-place ReLU on a Linear output."""

    def __init__(self, d=5, h=6, k=1):
        super().__init__()
        self.inp = nn.Linear(d, h, dtype=F64)
        self.norm = nn.LayerNorm(h, dtype=F64)
        self.twice = nn.Linear(h, h, dtype=F64)
        self.seq = nn.Linear(2, 3, bias=False, dtype=F64)
        self.frozen = nn.Linear(h, h, dtype=F64)
        self.frozen.weight.requires_grad_(False)
        self.out = nn.Linear(h + 3, k, dtype=F64)
        self.k = k

    def forward(self, x):
        z = torch.relu_(self.inp(x))                           # in-place on the Linear output
        z = self.norm(z)
        z = torch.tanh(self.twice(torch.tanh(self.twice(z))))
        z = torch.tanh(self.frozen(z))
        s = torch.tanh(self.seq(x[:, :4].reshape(-1, 2, 2))).mean(1)     # (n, T=2, 2) -> (n, 3)
        out = self.out(torch.cat([z, s], 1))
        return out.squeeze(-1) if self.k == 1 else out


def trainable(model):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return names, [params[n].numel() for n in names], params


def explicit_jacobian(model, params, x, k):
    ref = JacobianProducts(model, *trainable(model)[:2], k, F64, method="jacrev")
    side = ref.side(params, x)
    assert len(side.runs) == 1 and not side.feats                       # all parameters in one run
    return side.runs[0][2]                                                # (n·k, p)


MODELS = {
    "mlp-k1": lambda: (MLP(5, 7, 3).to(F64), 1),
    "mlp-k3": lambda: (MLP(5, 7, 3, d_out=3).to(F64), 3),
    "mixed-k1": lambda: (Mixed(k=1), 1),
    "mixed-k2": lambda: (Mixed(k=2), 2),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_products_equal_explicit_jacobian_products(name):
    torch.manual_seed(0)
    model, k = MODELS[name]()
    names, sizes, params = trainable(model)
    for p in model.parameters():                                # the products must use `params`, not the model's
        p.data.add_(0.3)
    x, x2 = torch.randn(9, 5, dtype=F64), torch.randn(4, 5, dtype=F64)
    prod = JacobianProducts(model, names, sizes, k, F64)
    J, J2 = explicit_jacobian(model, params, x, k), explicit_jacobian(model, params, x2, k)
    side, side2 = prod.side(params, x), prod.side(params, x2)
    assert side.feats, "some Linear layers use the closed form"
    p = J.shape[1]
    # L = 2: "activations first" (L ≤ k·in) and δᵀ(a ⊗ E) (L < out); L = 40: the row forms
    for L in (2, 40):
        D = torch.randn(p, L, dtype=F64)
        out = torch.randn(9 * k, L, dtype=F64)
        expect = out + J @ D
        prod.apply(side, Prepared(D), out)
        assert torch.allclose(out, expect, atol=TOL, rtol=0)
        E = torch.randn(4 * k, L, dtype=F64)
        G = torch.full((p, L), float("nan"), dtype=F64)
        prod.transpose_apply(side2, E, G)
        assert torch.allclose(G, J2.T @ E, atol=TOL, rtol=0)
    v = torch.randn(p, dtype=F64)
    assert torch.allclose(prod.apply_vector(side, v), J @ v, atol=TOL, rtol=0)
    lr = {nm: 0.1 * (i + 1) for i, nm in enumerate(names)}                # a different γ per parameter
    gamma = torch.cat([torch.full((s,), lr[nm], dtype=F64) for nm, s in zip(names, sizes)])
    assert torch.allclose(prod.kernel(side, side2, lr), (J * gamma) @ J2.T, atol=TOL, rtol=0)
    # sides of different forms (closed form on one, jacrev rows on the other) still give the kernel
    ref = JacobianProducts(model, names, sizes, k, F64, method="jacrev")
    assert torch.allclose(prod.kernel(side, ref.side(params, x2), lr), (J * gamma) @ J2.T, atol=TOL, rtol=0)


def test_plan_closed_form_for_linear_layers_jacrev_rows_for_the_rest(caplog):
    model = Mixed(k=1)
    names, sizes, params = trainable(model)
    with caplog.at_level(logging.INFO, logger="telescope.lens.products"):
        prod = JacobianProducts(model, names, sizes, 1, F64)
        side = prod.side(params, torch.randn(3, 5, dtype=F64))
    closed = {prod.units[i].module_name for i in side.feats}
    assert closed == {"inp", "frozen", "out", "norm", "seq"}  # relu_ on inp's output acts on a copy
    assert prod.units[[u.module_name for u in prod.units].index("frozen")].weight is None
    assert "twice" in prod.reasons and "norm" not in prod.reasons and "seq" not in prod.reasons
    in_rows = {nm for lo, hi, _ in side.runs for nm in names if lo <= prod.offsets[nm][0] < hi}
    assert in_rows == {"twice.weight", "twice.bias"}
    text = caplog.text
    assert "'twice'" in text and "called 2 times" in text
    assert "changed in place downstream; capturing copies" in text and prod._clone_outputs
    # only nn.Linear is structured; an MLP has no rows at all
    mlp = MLP(4, 5, 2).to(F64)
    n2, s2, p2 = trainable(mlp)
    prod = JacobianProducts(mlp, n2, s2, 1, F64)
    side = prod.side(p2, torch.randn(3, 4, dtype=F64))
    assert len(side.feats) == 2 and side.runs == []


# ---------------------------------------------------------------------------- the smoother
OPTIMIZERS = {
    "sgd-kernel": lambda ps: torch.optim.SGD(ps, lr=0.05),
    "momentum-wd": lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9, weight_decay=0.01),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.003, weight_decay=0.1),
}


def trajectory(opt_name, k, method, jacobians, model_fn=None, steps=15, probe_train=False, **kw):
    torch.manual_seed(0)
    n, d, m = 20, 5, 9
    x, x_test = torch.randn(n, d, dtype=F64), torch.randn(m, d, dtype=F64)
    y = torch.randn(n, dtype=F64) if k == 1 else torch.randn(n, k, dtype=F64)
    model = (model_fn or (lambda: MLP(d, 10, 3, d_out=k).to(F64)))()
    spec = SmootherSpec(x, y, loss="mse", method=method, probes=6, chunk_size=7, jacobian_method=jacobians, **kw)
    probes = {"test": x_test, **({"x_train": x} if probe_train else {})}
    lens = Lens(model, probes, smoother=spec)
    tracker = smoother_of(lens)
    opt = OPTIMIZERS[opt_name]([p for p in model.parameters() if p.requires_grad])
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, n, (6,), generator=gen)
        opt.zero_grad()
        squared_loss("mse")(model(x[idx]), y[idx]).backward()
        lens.step(opt, batch=idx)
    return tracker


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("method", ["exact", "sketch"])
@pytest.mark.parametrize("k", [1, 2])
def test_smoother_with_structured_products_equals_jacrev(opt_name, method, k):
    fast, ref = (trajectory(opt_name, k, method, jac) for jac in ("auto", "jacrev"))
    assert fast.products.structured and not ref.products.structured
    assert fast.path == ref.path == ("kernel" if opt_name == "sgd-kernel" else "general")
    assert float(ref.R[:, :-1].abs().max()) > 1e-3                         # the smoother moved
    assert torch.allclose(fast.R, ref.R, atol=TOL, rtol=0)
    assert torch.allclose(fast.f_tilde, ref.f_tilde, atol=TOL, rtol=0)
    for name, buf in ref.buffers.items():
        assert torch.allclose(fast.buffers[name], buf, atol=TOL, rtol=0)


@pytest.mark.parametrize("opt_name", ["sgd-kernel", "adamw"])
def test_smoother_on_model_with_unsupported_layers_falls_back_and_matches(opt_name, caplog):
    with caplog.at_level(logging.INFO, logger="telescope.lens.products"):
        fast = trajectory(opt_name, 2, "exact", "auto", model_fn=lambda: Mixed(k=2))
    ref = trajectory(opt_name, 2, "exact", "jacrev", model_fn=lambda: Mixed(k=2))
    assert "vmap(jacrev) rows" in caplog.text and "'twice'" in caplog.text
    assert fast.products.structured
    assert torch.allclose(fast.R, ref.R, atol=TOL, rtol=0)
    assert torch.allclose(fast.f_tilde, ref.f_tilde, atol=TOL, rtol=0)
    # and a lens's own f̃ (a JVP) agrees with the smoother's on the training points
    twin = trajectory(opt_name, 2, "exact", "auto", model_fn=lambda: Mixed(k=2), probe_train=True)
    lens_f = twin.lens.predictions("x_train", linearized=False)["telescope"].reshape(-1).to(F64)
    assert fast.f_tilde.shape == lens_f.shape
    assert torch.allclose(fast.f_tilde, lens_f, atol=TOL, rtol=0)


def test_unknown_jacobian_method_is_refused():
    from telescope.errors import ConfigError
    with pytest.raises(ConfigError, match="jacobian_method='forward'.*auto, jacrev"):
        trajectory("adamw", 1, "exact", "forward", steps=1)
    # the attribute of the tracker (set before the first step) is still accepted, and checked
    tracker = trajectory("adamw", 1, "exact", "auto", steps=0)
    tracker.jacobian_method = "jacrev"
    assert tracker.jacobian_method is JacobianMethod.JACREV
    with pytest.raises(ConfigError, match="jacobian_method = 'forward'"):
        tracker.jacobian_method = "forward"
