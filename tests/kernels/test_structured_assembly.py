"""The structured path's capture (one k-batched backward to the layer outputs) and its in-place
assembly (row tiles, block upper triangle of a Gram, mirrored) against ``jacobian`` / ``reference``."""

from __future__ import annotations

import logging

import pytest
import torch
from ntk_models import build
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from telescope.kernels import empirical_ntk, empirical_ntk_by_layer
from telescope.kernels import structured

OUTPUTS = ["trace", "full", "diagonal"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return ((a - b).abs().max() / b.abs().max()).item()


def as_matrices(K: torch.Tensor, output: str) -> torch.Tensor:
    """The Gram as a batch of square matrices: (1, n·k, n·k) full, (1, n, n) trace, (k, n, n) diagonal."""
    if output == "full":
        n, _, k, _ = K.shape
        return K.permute(0, 2, 1, 3).reshape(1, n * k, n * k)
    if output == "trace":
        return K[None]
    return K.permute(2, 0, 1)


def small_mlp(widths: list[int], k: int, d: int = 20) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(d, w), nn.ReLU()]
        d = w
    return nn.Sequential(*layers, nn.Linear(d, k))


def small_cnn(k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 6 * 6, k),
    )


# The workloads of docs/benchmarks-ntk.md at small sizes, float32: (model, per-example shape)
TABLE = {
    "mlp 2 layers, k=1": (lambda: small_mlp([16, 16], 1), (20,)),
    "mlp 2 layers, k=10": (lambda: small_mlp([16, 16], 10), (20,)),
    "mlp 4 layers, k=1": (lambda: small_mlp([16] * 4, 1), (20,)),
    "mlp wide, k=1": (lambda: small_mlp([64, 64], 1), (20,)),
    "cnn conv-conv-linear, k=10": (lambda: small_cnn(10), (3, 6, 6)),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_float32_table_workloads_match_jacobian(name):
    make, shape = TABLE[name]
    torch.manual_seed(0)
    model = make()
    x1, x2 = torch.randn(9, *shape), torch.randn(4, *shape)
    for x2_ in (None, x2):
        for output in OUTPUTS:
            a = empirical_ntk(model, x1, x2_, output=output, implementation="structured")
            b = empirical_ntk(model, x1, x2_, output=output, implementation="jacobian")
            assert a.dtype == torch.float32
            assert rel_err(a, b) < 2e-6, (output, x2_ is None)


@pytest.mark.parametrize("budget", [None, 4096, 64])
@pytest.mark.parametrize("name", ["mlp_tanh_bias", "cnn", "two_heads", "tokens", "sequence"])
def test_gram_is_exactly_symmetric_in_every_tiling(name, budget):
    # budget None: one or four row tiles; 4096 / 64 bytes: tiles of a few rows / one row
    model, x1, _ = build(name)
    x1 = torch.cat([x1, x1.flip(0), x1[:1]])  # 2n + 1 examples: tiles of unequal height
    for output in OUTPUTS:
        K = empirical_ntk(model, x1, output=output, implementation="structured", memory_budget=budget)
        M = as_matrices(K, output)
        assert torch.equal(M, M.transpose(1, 2)), output
        R = empirical_ntk(model, x1, output=output, implementation="jacobian")
        assert rel_err(K, R) < 1e-12


@pytest.mark.parametrize("budget", [4096, 64])
@pytest.mark.parametrize("name", ["mlp_tanh_bias", "cnn", "two_heads"])
def test_cross_kernel_row_tiles_match_reference(name, budget):
    model, x1, x2 = build(name)
    R = empirical_ntk(model, x1, x2, output="full", implementation="reference")
    for output in OUTPUTS:
        K = empirical_ntk(model, x1, x2, output=output, implementation="structured", memory_budget=budget)
        ref = {"full": R, "trace": R.diagonal(dim1=2, dim2=3).sum(-1), "diagonal": R.diagonal(dim1=2, dim2=3)}
        assert rel_err(K, ref[output]) < 1e-12, output


@pytest.mark.parametrize(
    "name,params", [("mlp_tanh_bias", ["2.bias", "4.weight"]), ("cnn", ["2.weight", "5.bias"]),
                    ("two_heads", ["trunk.bias", "head_b.weight"])],
)
def test_parameter_subset_multi_output_all_modes(name, params):
    model, x1, x2 = build(name)
    for x2_ in (None, x2):
        R = empirical_ntk(model, x1, x2_, output="full", implementation="reference", params=params)
        assert R.shape[-1] > 1  # a multi-output model
        for output in OUTPUTS:
            K = empirical_ntk(model, x1, x2_, output=output, implementation="structured", params=params,
                              memory_budget=256)
            ref = {"full": R, "trace": R.diagonal(dim1=2, dim2=3).sum(-1), "diagonal": R.diagonal(dim1=2, dim2=3)}
            assert rel_err(K, ref[output]) < 1e-12, output


def test_full_kernel_is_a_view_of_product_order_storage():
    # NOTE [in-place assembly]: (n1, n2, k, k) is a view of (n1, k, n2, k), so the kernel as
    # one (n1·k, n2·k) matrix is a free reshape; trace is contiguous; diagonal a view of (k, n1, n2)
    model, x1, x2 = build("two_heads")
    full = empirical_ntk(model, x1, x2, output="full", implementation="structured")
    assert full.permute(0, 2, 1, 3).is_contiguous()
    assert empirical_ntk(model, x1, x2, output="trace", implementation="structured").is_contiguous()
    diag = empirical_ntk(model, x1, x2, output="diagonal", implementation="structured")
    assert diag.permute(2, 0, 1).is_contiguous()


class _NoVmapScale(torch.autograd.Function):
    """y = s·x whose backward branches on the incoming gradient in Python (a host read): not
    vmappable, so the k-batched backward raises and the structured path takes k passes."""

    @staticmethod
    def forward(ctx, x, s):
        ctx.save_for_backward(s)
        return x * s

    @staticmethod
    def backward(ctx, grad):
        (s,) = ctx.saved_tensors
        if grad.abs().max().item() >= 0:  # always true; .item() of a batched tensor raises under vmap
            return grad * s, None
        return None, None


class _NoVmapNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)
        self.register_buffer("s", torch.tensor(1.5))

        self.plain = False  # True: the same function by plain ops, for the reference

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc2(h * self.s if self.plain else _NoVmapScale.apply(h, self.s))


def test_batched_backward_falls_back_to_k_passes(caplog):
    torch.manual_seed(0)
    model = _NoVmapNet().double()
    x1, x2 = torch.randn(5, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    with caplog.at_level(logging.INFO, logger="telescope.kernels.structured"):
        K = empirical_ntk(model, x1, x2, output="full", implementation="structured")
    assert any("batched backward failed" in r.getMessage() for r in caplog.records)
    model.plain = True
    R = empirical_ntk(model, x1, x2, output="full", implementation="reference")
    assert rel_err(K, R) < 1e-12


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.shapes.append((str(func), tuple(out.shape)))
        return out


def test_capture_forms_no_weight_gradient():
    # widths chosen so that no activation-sized tensor has a weight's shape
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 11), nn.Tanh(), nn.Linear(11, 13), nn.Tanh(), nn.Linear(13, 3)).double()
    x = torch.randn(5, 7, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    modules = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    with _Recorder() as rec:
        calls = structured._capture(model, modules, names, set(names), x)
    weight_shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}
    weight_shapes |= {s[::-1] for s in weight_shapes}
    products = [(f, s) for f, s in rec.shapes if "mm" in f]
    assert products  # the recorder saw the forward and backward products
    assert not [(f, s) for f, s in products if s in weight_shapes]
    for name, m in modules.items():
        (call,) = calls[name]
        assert call.G.shape == (3, 5, m.out_features)  # (k, n, d_out): all outputs at once


class _DeadBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.unused = nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        self.unused(x)  # called, its output never reaches f: a zero kernel part
        return self.fc(x)


def test_module_whose_output_never_reaches_f_has_zero_part():
    torch.manual_seed(0)
    model = _DeadBranch().double()
    x1, x2 = torch.randn(4, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    parts = empirical_ntk_by_layer(model, x1, x2, output="full", implementation="structured")
    assert torch.equal(parts["unused"], torch.zeros_like(parts["unused"]))
    R = empirical_ntk(model, x1, x2, output="full", implementation="reference")
    assert rel_err(parts["fc"], R) < 1e-12
