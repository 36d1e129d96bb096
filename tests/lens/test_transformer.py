"""The lens on transformers (issue 20): closed-form products for nn.Embedding, nn.LayerNorm and
nn.Linear on sequences against explicit per-example Jacobians (vmap(jacrev), the reference) in
float64; Lens and the sketch on PyTorch's own nn.TransformerEncoderLayer in eval mode (its fused
fast path has no forward-mode derivative, NOTE [fused fast path]); a clear error for a layer
without a forward-mode derivative."""

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call, jacrev, vmap

from telescope.errors import UnsupportedModelError
from telescope.kernels import empirical_ntk
from telescope.kernels.fastpath import no_fused_fastpath
from telescope.lens import Lens, SmootherSpec, smoother_of
from telescope.lens.products import JacobianProducts, Prepared
from telescope.models.transformer import ModularTransformer, modular_tokens

F64 = torch.float64
TOL = 1e-10


class StockTransformer(nn.Module):
    """Embedding (with a padding token) → PyTorch's TransformerEncoderLayer (batch first, dropout 0)
    → LayerNorm → Linear read-out at the last position: a new user's model from the issue."""

    def __init__(self, vocab=7, d=8, k=5, padding_idx=None):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=padding_idx, dtype=F64)
        self.layer = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=True, dtype=F64)
        self.norm = nn.LayerNorm(d, dtype=F64)
        self.out = nn.Linear(d, k, dtype=F64)

    def forward(self, tokens):
        return self.out(self.norm(self.layer(self.embed(tokens)))[:, -1])


def trainable(model):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return names, [params[n].numel() for n in names], params


def reference_jacobian(model, params, x):
    """(n·k, p) per-example Jacobian by vmap(jacrev) on the general path, written out here."""
    def f(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).reshape(-1)

    with no_fused_fastpath():
        jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    n = x.shape[0]
    return torch.cat([jac[nm].reshape(n, -1, params[nm].numel()) for nm in params], 2).reshape(-1, sum(
        p.numel() for p in params.values()))


MODELS = {
    "modular-ln": lambda: (ModularTransformer(5, d_model=8, heads=2, layer_norm=True, dtype=F64), 5,
                           lambda g: modular_tokens(5, 0.5, generator=g)[0]),
    "modular": lambda: (ModularTransformer(5, d_model=8, heads=2, dtype=F64), 5,
                        lambda g: modular_tokens(5, 0.5, generator=g)[0]),
    "stock-padding": lambda: (StockTransformer(padding_idx=0), 5,
                              lambda g: torch.randint(0, 7, (12, 3), generator=g)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_token_products_equal_explicit_jacobian_products(name):
    torch.manual_seed(0)
    model, k, data = MODELS[name]()
    names, sizes, params = trainable(model)
    for p in model.parameters():                                # the products must use `params`
        p.data.add_(0.1)
    g = torch.Generator().manual_seed(1)
    x, x2 = data(g)[:9], data(g)[:4]
    x[0, 0] = 0                                                # a padding token where there is one
    prod = JacobianProducts(model, names, sizes, k, F64)
    J, J2 = reference_jacobian(model, params, x), reference_jacobian(model, params, x2)
    side, side2 = prod.side(params, x), prod.side(params, x2)
    kinds = {prod.units[i].kind for i in side.feats}
    assert {"embedding", "linear"} <= kinds and ("norm" not in dict(model.named_modules())
                                                 or "layernorm" in kinds)
    if name.startswith("modular"):
        assert prod.fully_structured and side.runs == []        # every parameter in closed form
    p = J.shape[1]
    for L in (2, 40):                                          # activations first and the row forms
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
    lr = {nm: 0.1 * (i + 1) for i, nm in enumerate(names)}
    gamma = torch.cat([torch.full((s,), lr[nm], dtype=F64) for nm, s in zip(names, sizes)])
    assert torch.allclose(prod.kernel(side, side2, lr), (J * gamma) @ J2.T, atol=TOL, rtol=0)
    assert torch.allclose(prod.apply_vector(side.rows(2, 7), v), (J @ v)[2 * k:7 * k], atol=TOL, rtol=0)


def test_padding_rows_get_no_gradient():
    model = StockTransformer(padding_idx=0)
    names, sizes, params = trainable(model)
    x = torch.tensor([[0, 1, 2], [3, 0, 4]])
    J = JacobianProducts(model, names, sizes, 5, F64)._piece(
        JacobianProducts(model, names, sizes, 5, F64).side(params, x), "embed.weight")
    assert J.shape == (10, 7 * 8)
    assert J.view(10, 7, 8)[:, 0].abs().max() == 0 and J.view(10, 7, 8)[:, 1].abs().max() > 0


def test_lens_on_stock_transformer_in_eval_mode_is_exact_telescoping():
    """The issue's failing case: Lens on nn.TransformerEncoderLayer. f̃ must equal
    f_0 + Σ_s J(θ_{s−1})·Δθ_s with J from the reference, and the user's fast-path setting survives."""
    torch.manual_seed(0)
    model = StockTransformer()
    x = torch.randint(0, 7, (10, 3))
    y = torch.randn(10, 5, dtype=F64)
    lens = Lens(model, {"test": x})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    names = lens.parameter_names
    expect = lens.f0.clone().reshape(-1)
    for _ in range(4):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        lens.step(opt)
        delta = torch.cat([(dict(model.named_parameters())[n].detach() - before[n]).reshape(-1) for n in names])
        expect += reference_jacobian(model, {n: before[n] for n in names}, x) @ delta
    assert torch.allclose(lens.f_tilde.reshape(-1), expect, atol=TOL, rtol=0)
    err = lens.errors("test")
    assert 0 < err["telescope/abs_err"] < err["linearized/abs_err"]
    assert torch.backends.mha.get_fastpath_enabled()             # restored after every lens call


@pytest.mark.parametrize("model_fn", [lambda: StockTransformer(),
                                      lambda: ModularTransformer(5, d_model=8, heads=2, layer_norm=True,
                                                                 dtype=F64)])
def test_sketch_on_transformers_structured_equals_jacrev(model_fn):
    def trajectory(jacobians):
        torch.manual_seed(0)
        model = model_fn()
        g = torch.Generator().manual_seed(3)
        x = modular_tokens(5, 0.6, generator=g)[0][:12]
        x_test = modular_tokens(5, 0.6, generator=g)[2][:5]
        y = torch.randn(12, 5, dtype=F64)
        spec = SmootherSpec(x, y, loss="mse", method="sketch", probes=4, jacobian_method=jacobians)
        lens = Lens(model, {"test": x_test}, smoother=spec)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1.0)
        for _ in range(5):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            lens.step(opt, batch=torch.arange(12))
        return smoother_of(lens)

    fast, ref = trajectory("auto"), trajectory("jacrev")
    assert fast.products.structured and not ref.products.structured
    assert float(ref.R.abs().max()) > 1e-3
    assert torch.allclose(fast.R, ref.R, atol=TOL, rtol=0)
    assert torch.allclose(fast.f_tilde, ref.f_tilde, atol=TOL, rtol=0)


class BagModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(7, 4, mode="mean", dtype=F64)
        self.out = nn.Linear(4, 2, dtype=F64)

    def forward(self, tokens):
        return self.out(self.bag(tokens))


def test_layer_without_forward_mode_derivative_is_named_at_construction():
    with pytest.raises(UnsupportedModelError, match=r"Lens\(probes\['test'\]\): module 'bag' \(EmbeddingBag\) "
                                                    r"calls _embedding_bag, which has no forward-mode derivative"):
        Lens(BagModel(), {"test": torch.randint(0, 7, (4, 3))})
    assert torch.backends.mha.get_fastpath_enabled()


def test_no_fused_fastpath_restores_settings_and_ntk_vp_agrees_with_reference():
    torch.manual_seed(0)
    model = StockTransformer().eval()
    x = torch.randint(0, 7, (4, 3))
    with pytest.raises(RuntimeError):
        with no_fused_fastpath():
            assert not torch.backends.mha.get_fastpath_enabled()
            raise RuntimeError("boom")
    assert torch.backends.mha.get_fastpath_enabled()
    with no_fused_fastpath():          # the line kernels/ntk.py takes at merge, around every implementation
        ref = empirical_ntk(model, x, output="full", implementation="reference")
        for implementation in ("ntk_vp", "jacobian", "structured"):
            K = empirical_ntk(model, x, output="full", implementation=implementation)
            assert torch.allclose(K, ref, atol=TOL, rtol=0), implementation


def test_empirical_ntk_on_stock_transformer_needs_no_wrapping_by_the_caller():
    """Issue 20: `empirical_ntk(..., implementation="ntk_vp")` on PyTorch's own encoder layer in eval
    mode failed with a raw forward-AD NotImplementedError; the kernels now turn the fused path off
    themselves (NOTE [fused fast path]) and restore the caller's setting."""
    torch.manual_seed(0)
    model = StockTransformer().eval()
    x = torch.randint(0, 7, (4, 3))
    with no_fused_fastpath():
        ref = empirical_ntk(model, x, output="full", implementation="reference")
    for implementation in ("ntk_vp", "jacobian", "structured", "auto"):
        K = empirical_ntk(model, x, output="full", implementation=implementation)
        assert torch.allclose(K, ref, atol=TOL, rtol=0), implementation
        assert torch.backends.mha.get_fastpath_enabled()
