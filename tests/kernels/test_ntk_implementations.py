"""Every implementation agrees with the reference oracle to 1e-8 relative in float64."""

from __future__ import annotations

import functools

import pytest
import torch
from ntk_models import MODELS, build

from telescope.kernels import empirical_ntk, empirical_ntk_by_layer

IMPLEMENTATIONS = ["jacobian", "ntk_vp", "structured", "auto"]
OUTPUTS = ["trace", "full", "diagonal"]
PARAM_SUBSETS = {
    "mlp_tanh_bias": [["0.weight"], ["2.bias", "4.weight"], ["0.bias"]],
    "cnn": [["0.weight"], ["2.weight", "5.bias"]],
    "two_heads": [["trunk.weight", "head_b.weight"]],
    "reused": [["mid.weight"], ["inp.weight", "out.bias"]],
    "tokens": [["emb.weight"]],
    "sequence": [["proj.bias", "norm.weight"]],
}


@functools.cache
def reference(name: str, symmetric: bool, params: tuple[str, ...] | None) -> torch.Tensor:
    model, x1, x2 = build(name)
    return empirical_ntk(
        model, x1, None if symmetric else x2, output="full", implementation="reference",
        params=None if params is None else list(params),
    )


def reduce(full: torch.Tensor, output: str) -> torch.Tensor:
    if output == "full":
        return full
    diag = torch.diagonal(full, dim1=2, dim2=3)
    return diag.sum(-1) if output == "trace" else diag


def assert_close(K: torch.Tensor, R: torch.Tensor) -> None:
    assert K.shape == R.shape
    assert K.dtype == torch.float64
    scale = R.abs().max()
    assert scale > 0
    err = (K - R).abs().max() / scale
    assert err <= 1e-8, f"relative error {err:.3e}"


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", MODELS)
def test_agrees_with_reference(name, implementation):
    model, x1, x2 = build(name)
    for symmetric in (True, False):
        R = reference(name, symmetric, None)
        for output in OUTPUTS:
            K = empirical_ntk(
                model, x1, None if symmetric else x2, output=output, implementation=implementation
            )
            assert_close(K, reduce(R, output))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "name,params", [(n, tuple(p)) for n, subsets in PARAM_SUBSETS.items() for p in subsets]
)
def test_param_subsets_agree_with_reference(name, params, implementation):
    model, x1, x2 = build(name)
    for symmetric in (True, False):
        R = reference(name, symmetric, params)
        for output in OUTPUTS:
            K = empirical_ntk(
                model, x1, None if symmetric else x2, output=output,
                implementation=implementation, params=list(params),
            )
            assert_close(K, reduce(R, output))


def test_subset_kernel_differs_from_whole():
    # guards against params being silently ignored
    whole = reference("mlp_tanh_bias", True, None)
    first = reference("mlp_tanh_bias", True, ("0.weight",))
    assert (whole - first).abs().max() > 1e-3 * whole.abs().max()


@pytest.mark.parametrize("implementation", ["reference", *IMPLEMENTATIONS])
@pytest.mark.parametrize("name", ["mlp_relu_nobias", "cnn", "two_heads", "tokens"])
def test_gram_is_symmetric_psd(name, implementation):
    model, x1, _ = build(name)
    full = empirical_ntk(model, x1, output="full", implementation=implementation)
    n, _, k, _ = full.shape
    M = full.permute(0, 2, 1, 3).reshape(n * k, n * k)
    assert torch.equal(M, M.T) or (M - M.T).abs().max() <= 1e-12 * M.abs().max()
    assert torch.linalg.eigvalsh((M + M.T) / 2).min() >= -1e-10 * M.abs().max()
    trace = empirical_ntk(model, x1, output="trace", implementation=implementation)
    assert torch.linalg.eigvalsh((trace + trace.T) / 2).min() >= -1e-10 * trace.abs().max()


@pytest.mark.parametrize("implementation", ["jacobian", "ntk_vp", "structured"])
def test_small_memory_budget_chunks_exactly(implementation):
    # a budget far below one example's Jacobian forces chunks of one example
    model, x1, x2 = build("mlp_tanh_bias")
    for x2_ in (None, x2):
        R = reduce(reference("mlp_tanh_bias", x2_ is None, None), "full")
        K = empirical_ntk(model, x1, x2_, output="full", implementation=implementation, memory_budget=64)
        assert_close(K, R)


@pytest.mark.parametrize("implementation", ["jacobian", "structured"])
@pytest.mark.parametrize("group_by", ["module", "parameter"])
@pytest.mark.parametrize("name", ["mlp_tanh_bias", "cnn", "reused", "sequence"])
def test_by_layer_parts_sum_to_whole_and_match_subsets(name, group_by, implementation):
    model, x1, x2 = build(name)
    parts = empirical_ntk_by_layer(
        model, x1, x2, output="full", implementation=implementation, group_by=group_by
    )
    R = reference(name, False, None)
    assert_close(sum(parts.values()), R)
    names = [n for n, _ in model.named_parameters()]
    if group_by == "parameter":
        assert list(parts) == names
    for key, part in parts.items():
        group = [n for n in names if n == key or n.rsplit(".", 1)[0] == key]
        assert_close(part, reference(name, False, tuple(group)))


def test_by_layer_keys_for_sequential():
    model, x1, _ = build("mlp_tanh_bias")
    parts = empirical_ntk_by_layer(model, x1, params=["0.weight", "4.bias"])
    assert list(parts) == ["0", "4"]
    assert parts["0"].shape == (5, 5)


def test_float32_structured_matches_jacobian():
    model, x1, x2 = build("cnn")
    model = model.float()
    x1, x2 = x1.float(), x2.float()
    for output in OUTPUTS:
        a = empirical_ntk(model, x1, x2, output=output, implementation="structured")
        b = empirical_ntk(model, x1, x2, output=output, implementation="jacobian")
        assert a.dtype == torch.float32
        assert ((a - b).abs().max() / b.abs().max()) < 1e-5


def test_model_is_left_untouched():
    model, x1, x2 = build("two_heads")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for implementation in IMPLEMENTATIONS:
        K = empirical_ntk(model, x1, x2, implementation=implementation)
        assert not K.requires_grad
    for n, p in model.named_parameters():
        assert p.grad is None
        assert torch.equal(p, before[n])
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())
