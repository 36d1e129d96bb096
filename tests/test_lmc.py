"""Weight averaging and the spawning study: exact properties of the pieces, and a tiny run."""

from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from telescope.experiments import lmc
from telescope.experiments.base import RunContext, resolve_config
from telescope.data.core import Split
from telescope.data.vision import match_shape
from telescope.errors import ConfigError
from telescope.measures import (first_order_prediction, gradient_change_by_kind, gradient_change_by_layer,
                                interpolate, layer_groups, layer_kinds, recompute_batchnorm)
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


def test_layer_kinds_and_kind_means_agree_with_the_whole_model():
    torch.manual_seed(0)
    model = SmallCNN(1, 4, channels=(3, 4), image_size=8, batchnorm=True)
    kinds = layer_kinds(model)
    assert kinds == {"features.0": "hidden", "features.1": "batchnorm", "features.4": "hidden",
                     "features.5": "batchnorm", "head": "output"}
    pa = {k: v.detach().clone() for k, v in model.named_parameters()}
    pb = {k: v + 0.1 * torch.randn_like(v) for k, v in pa.items()}
    change = gradient_change_by_layer(model, pa, pb, torch.randn(6, 1, 8, 8), torch.randint(0, 4, (6,)))
    by_kind = gradient_change_by_kind(model, change)
    assert by_kind["output"] == change["head"]
    sizes = {kind: sum(pa[n].numel() for layer, names in layer_groups(model).items() if kinds[layer] == kind
                       for n in names) for kind in by_kind}
    whole = sum(by_kind[k] * sizes[k] for k in by_kind) / sum(sizes.values())
    assert whole == pytest.approx(change["all"], rel=1e-10)


def test_match_shape_resizes_and_replicates_channels():
    x = torch.rand(3, 1, 28, 28)
    out = match_shape(x, 3, 32)
    assert out.shape == (3, 3, 32, 32)
    assert torch.equal(out[:, 0], out[:, 2])
    assert out.mean().item() == pytest.approx(x.mean().item(), abs=0.02)
    assert match_shape(out, 3, 32) is out


def _pretrained_cfg(**extra):
    overrides = {"dataset": "cifar10", "model": "cnn", "variants": "pretrained", "n_train": "256",
                 "n_eval": "100", "n_grad": "16", "steps": "30", "spawn_steps": "0,10", "pretrain_steps": "60",
                 **extra}
    return resolve_config("lmc", lmc.Config, "tiny", overrides=overrides)


def test_pretrained_init_transfers_features_and_keeps_a_fresh_head(data_dir):
    cfg = _pretrained_cfg()
    assert cfg.source() == "mnist"
    ctx = RunContext(data_dir=data_dir)
    state, source_error = lmc.pretrain(cfg, 0, 3, 32, ctx)
    assert source_error < 0.5                        # 10 classes: chance is 0.9
    assert state["head.weight"].shape[0] == 10
    model, facts = lmc.initial_model(cfg, "pretrained", 0, 3, 32, 2, ctx)
    random_model, _ = lmc.initial_model(cfg, "random", 0, 3, 32, 2, ctx)
    fine, rand = model.state_dict(), random_model.state_dict()
    for k in fine:
        if k.startswith("head."):
            assert torch.equal(fine[k], rand[k])     # the head: the random arm's fresh init
        else:
            assert torch.equal(fine[k], state[k])    # features: exactly the pretrained ones
            assert not torch.equal(fine[k], rand[k])
    assert facts["pretrain/source_error"] == source_error
    with pytest.raises(ConfigError, match="cannot transfer"):
        lmc.transfer(SmallCNN(3, 2, channels=(8, 32), image_size=32), state)


def test_pretrained_arm_runs_beside_the_random_arm(data_dir):
    cfg = _pretrained_cfg(variants="random,pretrained", finetune_spawn_steps="0", pretrain_steps="20")
    sink = MemorySink()
    summary = lmc.run(cfg, sink, RunContext(data_dir=data_dir))
    frame = sink.metrics()
    barriers = frame[frame["name"] == "barrier/loss_max"]
    assert sorted(barriers.groupby("variant")["step"].apply(tuple).items()) == [("pretrained", (0,)),
                                                                               ("random", (0, 10))]
    assert summary["pretrained/source_dataset"] == "mnist"
    assert 0.0 <= summary["pretrained/source_error"] < 0.9
    assert "pretrained/t=0/grad_change_kind/output" in summary


def test_pretraining_on_the_target_itself_is_refused():
    with pytest.raises(ConfigError, match="pretrain_dataset"):
        resolve_config("lmc", lmc.Config, "tiny", overrides={"variants": "pretrained", "pretrain_dataset": "mnist"})


def test_children_train_the_same_number_of_steps_at_every_spawn_step(data_dir):
    cfg = resolve_config("lmc", lmc.Config, "tiny", overrides={"spawn_steps": "0,5,30", "child_steps": "12"})
    sink = MemorySink()
    lmc.run(cfg, sink, RunContext(data_dir=data_dir))
    frame = sink.metrics()
    steps = frame[frame["name"] == "child/steps"].set_index("step")["value"]
    assert steps.to_dict() == {0: 12.0, 5: 12.0, 30: 12.0}
    # the paper's protocol (child_steps = 0): children end at T, so later spawns train fewer steps
    assert [cfg.steps - t for t in (0, 5, 30)] == [replace(cfg, child_steps=0).child_length(t) for t in (0, 5, 30)]


@pytest.mark.parametrize("model", ["mlp", "cnn-bn"])
def test_children_with_one_batch_order_are_identical_and_have_no_barrier(data_dir, model):
    overrides = {"model": model, "channels": "4,8", "n_train": "128", "n_eval": "64", "n_bn": "64", "bn_recompute": "false"}
    cfg = resolve_config("lmc", lmc.Config, "tiny", overrides=overrides)
    data, classes = lmc.classification("mnist", data_dir, n_train=cfg.n_train, n_test=cfg.n_eval, seed=0)
    torch.manual_seed(0)
    model_ = lmc.build_model(cfg, 1, 28, len(classes))
    parent = lmc.Trainer(cfg, model_, data, 0, "cpu")
    parent.train(5)
    a, b = lmc.train_pair(parent.spawn(0), (123, 123), 8)
    assert a.step_count == b.step_count == 13
    state_a, state_b = lmc.state_of(a.model), lmc.state_of(b.model)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    sink = MemorySink()
    with sink.unit("pair", variant="random", seed=0, pair=0) as unit:
        lmc.compare_children(cfg, model_, lmc.params_of(parent.model), state_a, state_b, data, "cpu", unit, 5)
    values = sink.metrics().set_index("name")["value"]
    assert values["barrier/error_max"] == 0.0 and values["barrier/error_half"] == 0.0
    assert abs(values["barrier/loss_max"]) < 1e-6
    assert values["wa/avg_vs_ensemble"] < 1e-5
    # another batch order gives other weights
    c, _ = lmc.train_pair(parent.spawn(0), (124, 124), 8)
    state_c = lmc.state_of(c.model)
    assert any(not torch.equal(state_c[k], state_a[k]) for k in state_a)


def test_summary_reports_mean_standard_error_and_count():
    import pandas as pd
    rows = [dict(step=0, split="test", name="barrier/error_max", value=v, variant="random", seed=s, pair=p)
            for (s, p), v in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [0.1, 0.3, 0.2, 0.4])]
    rows.append(dict(step=0, split="test", name="grad_change_kind/output", value=2.0, variant="random", seed=0, pair=-1))
    out = lmc.summarize(pd.DataFrame(rows))
    assert out["random/t=0/error_barrier_max"] == pytest.approx(0.25)
    assert out["random/t=0/error_barrier_max_se"] == pytest.approx(torch.tensor([0.1, 0.3, 0.2, 0.4]).std().item() / 2)
    assert out["random/t=0/error_barrier_max_n"] == 4
    assert out["random/t=0/grad_change_kind/output"] == 2.0 and "random/t=0/grad_change_kind/output_se" not in out


def test_paper_preset_has_the_papers_finetuning_arm():
    cfg = resolve_config("lmc", lmc.Config, "paper")
    assert set(cfg.variants) == {"random", "pretrained"}
    arm = cfg.arm("pretrained")
    assert (arm.steps, arm.milestones, arm.lr_drop) == (12800, (6400, 9600), 5.0)
    assert arm.spawn_steps == cfg.spawn_steps[:10] and arm.pairs == 3
    assert cfg.arm("random") is cfg and (cfg.steps, cfg.lr_drop) == (63000, 10.0)
    xs, ys = torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64)
    trainer = lmc.Trainer(arm, nn.Linear(2, 2), Split(xs, ys, xs, ys), 0, "cpu")
    assert [trainer.lr_at(s) for s in (0, 6399, 6400, 9600)] == pytest.approx([0.1, 0.1, 0.02, 0.004])
    with pytest.raises(ConfigError, match="finetune_steps"):
        resolve_config("lmc", lmc.Config, "paper", overrides={"finetune_spawn_steps": "0,20000"})


def test_captions_name_the_data_that_ran():
    assert lmc.describe_dataset("cifar10", ("cat", "dog")) == "CIFAR-10 cat/dog (2 classes)"
    assert lmc.describe_dataset("mnist", tuple("0123456789")) == "MNIST"
