"""Weight averaging and the spawning study: exact properties of the pieces, and a tiny run."""

import pytest
import torch
import torch.nn as nn

from telescope.experiments import lmc
from telescope.experiments.base import RunContext, resolve_config
from telescope.lens.averaging import (first_order_prediction, gradient_change_by_layer, interpolate,
                                      layer_groups, recompute_batchnorm)
from telescope.models import MLP
from telescope.models.convnets import SmallCNN
from telescope.store import MemorySink


def test_interpolation_endpoints_reproduce_children():
    a, b = MLP(6, 5, 2, 3).state_dict(), MLP(6, 5, 2, 3).state_dict()
    for alpha, ref in ((1.0, a), (0.0, b)):
        mixed = interpolate(a, b, alpha)
        assert all(torch.equal(mixed[k], ref[k]) for k in a)


def test_gradient_change_zero_for_identical_and_layers_sum_to_whole():
    torch.manual_seed(0)
    model = SmallCNN(1, 4, channels=(3, 4), image_size=8)
    pa = {k: v.detach().clone() for k, v in model.named_parameters()}
    pb = {k: v + 0.1 * torch.randn_like(v) for k, v in pa.items()}
    x, y = torch.randn(10, 1, 8, 8), torch.randint(0, 4, (10,))
    same = gradient_change_by_layer(model, pa, pa, x, y)
    assert all(v == 0.0 for v in same.values())
    change = gradient_change_by_layer(model, pa, pb, x, y)
    sizes = {layer: sum(pa[n].numel() for n in names) for layer, names in layer_groups(model).items()}
    weighted = sum(change[layer] * sizes[layer] for layer in sizes) / sum(sizes.values())
    assert change["all"] == pytest.approx(weighted, rel=1e-10)
    assert change["all"] > 0


def test_first_order_prediction_is_exact_for_a_linear_model():
    model = MLP(6, 1, 1, 3, squeeze=False).double()
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    target = {k: v + torch.randn_like(v) for k, v in base.items()}
    x = torch.randn(7, 6, dtype=torch.float64)
    pred = first_order_prediction(model, base, target, x)
    model.load_state_dict(target)
    assert torch.allclose(pred, model(x), atol=1e-12)


def test_batchnorm_statistics_are_recomputed_on_data():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    x = torch.randn(300, 3) * 2 + 1
    recompute_batchnorm(model, x, batch_size=300)
    with torch.no_grad():
        h = model[0](x)
    assert torch.allclose(model[1].running_mean, h.mean(0), atol=1e-5)
    assert model[1].momentum == 0.1


def test_linear_model_has_no_barrier_and_no_gradient_change(data_dir):
    cfg = resolve_config("lmc", lmc.Config, "tiny", overrides={"model": "linear", "steps": "30", "spawn_steps": "0,15"})
    sink = MemorySink()
    lmc.run(cfg, sink, RunContext(data_dir=data_dir))
    frame = sink.metrics()
    barrier = frame[frame["name"] == "barrier/loss_max"]["value"]
    assert len(barrier) == 2 and (barrier.abs() < 1e-6).all()
    grads = frame[frame["name"].str.startswith("grad_change/")]["value"]
    assert len(grads) > 0 and (grads.abs() < 1e-12).all()
    first_order = frame[frame["name"] == "wa/avg_vs_first_order"]["value"]
    assert (first_order < 1e-4).all()


def test_tiny_run_logs_barriers_and_gradient_changes(data_dir):
    cfg = resolve_config("lmc", lmc.Config, "tiny")
    sink = MemorySink()
    summary = lmc.run(cfg, sink, RunContext(data_dir=data_dir))
    names = set(sink.metrics()["name"])
    assert {"barrier/loss_half", "barrier/error_max", "grad_change/all", "wa/avg_vs_ensemble"} <= names
    assert "random/t=0/loss_barrier_max" in summary
