"""Edge cases and refusals at the door of empirical_ntk."""

from __future__ import annotations

import logging

import pytest
import torch
from ntk_models import build
from torch import nn

from telescope.errors import ConfigError, ShapeError, UnsupportedModelError
from telescope.kernels import Implementation, empirical_ntk, empirical_ntk_by_layer


def mlp():
    return build("mlp_tanh_bias")


@pytest.mark.parametrize("implementation", ["reference", "jacobian", "ntk_vp", "structured"])
def test_one_example(implementation):
    model, x1, x2 = mlp()
    K = empirical_ntk(model, x1[:1], output="full", implementation=implementation)
    R = empirical_ntk(model, x1, output="full", implementation="reference")
    assert K.shape == (1, 1, 3, 3)
    torch.testing.assert_close(K[0, 0], R[0, 0], rtol=1e-10, atol=0)
    cross = empirical_ntk(model, x1[:1], x2, implementation=implementation)
    assert cross.shape == (1, 3)


@pytest.mark.parametrize("implementation", ["reference", "jacobian", "ntk_vp", "structured"])
def test_one_output_all_modes_coincide(implementation):
    model, x1, x2 = build("one_output")
    assert model(x1).shape == (4,)
    full = empirical_ntk(model, x1, x2, output="full", implementation=implementation)
    trace = empirical_ntk(model, x1, x2, output="trace", implementation=implementation)
    diag = empirical_ntk(model, x1, x2, output="diagonal", implementation=implementation)
    assert full.shape == (4, 3, 1, 1) and diag.shape == (4, 3, 1) and trace.shape == (4, 3)
    torch.testing.assert_close(full[..., 0, 0], trace, rtol=1e-12, atol=0)
    torch.testing.assert_close(diag[..., 0], trace, rtol=1e-12, atol=0)


def test_trace_equals_inner_product_of_gradients_by_hand():
    # f(x) = w·x + b: the kernel is x·x' + 1, exactly
    model = nn.Linear(3, 1).double()
    x = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], dtype=torch.float64)
    expected = x @ x.T + 1
    for implementation in ["reference", "jacobian", "ntk_vp", "structured"]:
        K = empirical_ntk(model, x, implementation=implementation)
        assert torch.equal(K, expected)


def test_empty_batch_gives_empty_kernel():
    model, x1, x2 = mlp()
    assert empirical_ntk(model, x1[:0], x2, output="full").shape == (0, 3, 3, 3)
    assert empirical_ntk(model, x1, x2[:0]).shape == (5, 0)
    with pytest.raises(ShapeError, match="both empty"):
        empirical_ntk(model, x1[:0])


def test_empty_params_is_a_clear_error():
    model, x1, _ = mlp()
    with pytest.raises(ConfigError, match=r"params=\[\] differentiates nothing.*0\.weight"):
        empirical_ntk(model, x1, params=[])


def test_unknown_param_lists_valid_names():
    model, x1, _ = mlp()
    with pytest.raises(ConfigError, match=r"unknown parameter name\(s\) \['0\.w'\].*'0\.weight', '0\.bias'"):
        empirical_ntk(model, x1, params=["0.w"])
    with pytest.raises(ConfigError, match="list of parameter names"):
        empirical_ntk(model, x1, params="0.weight")


def test_frozen_model_needs_explicit_params():
    model, x1, _ = mlp()
    model.requires_grad_(False)
    with pytest.raises(ConfigError, match="requires_grad=False"):
        empirical_ntk(model, x1)
    # naming frozen parameters explicitly is fine
    K = empirical_ntk(model, x1, params=["0.weight"], implementation="structured")
    model.requires_grad_(True)
    R = empirical_ntk(model, x1, params=["0.weight"], implementation="reference")
    torch.testing.assert_close(K, R, rtol=1e-10, atol=0)


def test_default_params_skip_frozen():
    model, x1, _ = mlp()
    model[0].requires_grad_(False)
    K = empirical_ntk(model, x1, implementation="structured")
    R = empirical_ntk(model, x1, params=["2.weight", "2.bias", "4.weight", "4.bias"], implementation="reference")
    torch.testing.assert_close(K, R, rtol=1e-10, atol=0)


def test_batchnorm_in_train_mode_is_refused():
    model, x1, _ = build("batchnorm_eval")
    model.train()
    model[3].eval()  # dropout off: the BatchNorm alone must be refused
    with pytest.raises(UnsupportedModelError, match=r"'1' \(BatchNorm1d\).*model\.eval\(\)"):
        empirical_ntk(model, x1)


def test_active_dropout_is_refused():
    model, x1, _ = build("batchnorm_eval")
    model[3].train()
    with pytest.raises(UnsupportedModelError, match=r"'3' \(Dropout, p=0\.5\).*model\.eval\(\)"):
        empirical_ntk(model, x1)


def test_batchnorm_without_running_stats_is_refused_even_in_eval():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, track_running_stats=False)).double().eval()
    with pytest.raises(UnsupportedModelError, match="batch statistics"):
        empirical_ntk(model, torch.zeros(2, 2, dtype=torch.float64))


def test_bad_inputs():
    model, x1, x2 = mlp()
    with pytest.raises(ConfigError, match=r"output='gram' is not one of \['trace', 'full', 'diagonal'\]"):
        empirical_ntk(model, x1, output="gram")
    with pytest.raises(ConfigError, match="implementation='fast' is not one of"):
        empirical_ntk(model, x1, implementation="fast")
    with pytest.raises(ShapeError, match=r"x1 has dtype torch\.float32.*x1\.to\(torch\.float64\)"):
        empirical_ntk(model, x1.float())
    with pytest.raises(ShapeError, match=r"same per-example shape, got \(4,\) and \(5,\)"):
        empirical_ntk(model, x1, torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ShapeError, match="0-d tensor"):
        empirical_ntk(model, torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ConfigError, match="memory_budget must be a positive"):
        empirical_ntk(model, x1, memory_budget=0)
    with pytest.raises(ConfigError, match="group_by='layer'"):
        empirical_ntk_by_layer(model, x1, group_by="layer")
    with pytest.raises(ConfigError, match="must be a torch.nn.Module"):
        empirical_ntk(lambda x: x, x1)


def test_tuple_output_is_refused():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x), x

    with pytest.raises(UnsupportedModelError, match="returned tuple"):
        empirical_ntk(Pair().double(), torch.zeros(3, 2, dtype=torch.float64))


def test_implementation_enum_accepted():
    model, x1, _ = mlp()
    a = empirical_ntk(model, x1, implementation=Implementation.STRUCTURED)
    b = empirical_ntk(model, x1, implementation="structured")
    assert torch.equal(a, b)


def test_structured_logs_fallbacks(caplog):
    model, x1, _ = build("reused")
    with caplog.at_level(logging.INFO, logger="telescope.kernels.structured"):
        empirical_ntk(model, x1, implementation="structured")
    text = caplog.text
    assert "'mid'" in text and "shared" in text
    assert "'inp'" not in text


def test_module_called_twice_falls_back_at_runtime(caplog):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(torch.tanh(self.fc(x)))

    model = Twice().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    with caplog.at_level(logging.INFO, logger="telescope.kernels.structured"):
        K = empirical_ntk(model, x, output="full", implementation="structured")
    assert "called 2 times" in caplog.text
    R = empirical_ntk(model, x, output="full", implementation="reference")
    torch.testing.assert_close(K, R, rtol=1e-10, atol=1e-14)


def test_auto_prefers_structured_unless_mostly_fallback(caplog):
    model, x1, _ = mlp()
    with caplog.at_level(logging.DEBUG, logger="telescope.kernels.ntk"):
        empirical_ntk(model, x1, output="full")
    assert "chose 'structured'" in caplog.text
    caplog.clear()
    norm_net = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.Linear(2, 8)).double()
    norm_net[1].weight.data.normal_()
    with caplog.at_level(logging.DEBUG, logger="telescope.kernels.ntk"):
        empirical_ntk(norm_net, torch.randn(3, 2, dtype=torch.float64), params=["1.weight", "1.bias"], output="full")
    assert "chose 'ntk_vp'" in caplog.text
