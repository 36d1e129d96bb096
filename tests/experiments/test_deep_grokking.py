"""Deep grokking: α scaling, the measurements on a small net, and the tiny preset end to end."""

import math

import pytest
import torch

from telescope.errors import ConfigError
from telescope.experiments import deep_grokking as dg
from telescope.experiments import get
from telescope.experiments.base import RunContext, resolve_config
from telescope.measures import weight_norm
from telescope.models import MLP, scale_init
from telescope.store import MemorySink




def test_alpha_scaling_touches_every_parameter():
    torch.manual_seed(0)
    model = MLP(20, 16, 5, 10)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    scale_init(model, 8.0)
    names = [k for k, _ in model.named_parameters()]
    assert len(names) == 10 and sum(k.endswith("bias") for k in names) == 5  # 5 weights, 5 biases
    for k, v in model.named_parameters():
        assert torch.equal(v, 8.0 * before[k]), k


def test_last_hidden_ntk_matches_the_closed_form():
    # f = W_L relu(z) + b_L, z = W_{L-1} h + b_{L-1}: the kernel of (W_{L-1}, b_{L-1}) is
    # K(x, x') = Σ_i ||W_L[:, i]||² relu'(z_i(x)) relu'(z_i(x')) (h(x)·h(x') + 1).
    torch.manual_seed(2)
    model = MLP(8, 6, 4, 10).double()
    x = torch.randn(9, 8, dtype=torch.float64)
    lin = model.linear_layers()
    h = x
    for layer in lin[:-2]:
        h = torch.relu(layer(h))
    d = (lin[-2](h) > 0).double()
    w2 = (lin[-1].weight ** 2).sum(0)
    expected = ((d * w2) @ d.T) * (h @ h.T + 1.0)
    kernel = dg.last_hidden_ntk(model, x)
    assert torch.allclose(kernel, expected, rtol=1e-10, atol=1e-12)


def test_last_hidden_ntk_of_a_float32_net_is_the_reference_kernel_in_float64():
    from telescope.kernels import empirical_ntk

    torch.manual_seed(6)
    model = scale_init(MLP(12, 7, 5, 10), 3.0)  # float32 model: a float64 copy is differentiated
    x = torch.rand(11, 12)
    kernel = dg.last_hidden_ntk(model, x)
    ref = empirical_ntk(model.double(), x.double(), params=["7.weight", "7.bias"], implementation="reference")
    assert kernel.dtype == torch.float64 and not kernel.requires_grad
    assert torch.allclose(kernel, ref, rtol=1e-10, atol=1e-9 * float(ref.abs().max()))


def test_balanced_subset_has_n_over_10_per_class(data_dir):
    cfg = dg.Config()
    data = dg.load_data(cfg, 200, data_dir)
    assert torch.equal(torch.bincount(data.y_train, minlength=10), torch.full((10,), 20))
    assert data.x_train.shape == (200, 784) and 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    assert data.x_test.shape == (cfg.n_test, 784) and data.x_test_full.shape == (10000, 784)
    assert not torch.equal(data.y_train[:10], data.y_train.sort().values[:10])  # shuffled
    again = dg.load_data(cfg, 200, data_dir)
    assert torch.equal(again.x_train, data.x_train)


def test_bad_configs_are_rejected():
    exp = get("deep-grokking")
    with pytest.raises(ConfigError, match="subset"):
        resolve_config("deep-grokking", exp.config_cls, "tiny", overrides={"subset": "random"})
    with pytest.raises(ConfigError, match="multiple of 10"):
        resolve_config("deep-grokking", exp.config_cls, "tiny", overrides={"n_trains": "305"})
    with pytest.raises(ConfigError, match="depths"):
        resolve_config("deep-grokking", exp.config_cls, "tiny", overrides={"depths": "1"})
    with pytest.raises(ConfigError, match="pool='train\\+test' with dataset='digits'"):
        resolve_config("deep-grokking", exp.config_cls, "tiny", overrides={"pool": "train+test"})
    with pytest.raises(ConfigError, match="n_test=2000 > test_keep=1000"):
        resolve_config("deep-grokking", exp.config_cls, "multistage", overrides={"test_keep": "1000"})


def test_multistage_preset_trains_on_7000_disjoint_from_its_test_images(data_dir):
    exp = get("deep-grokking")
    cfg = resolve_config("deep-grokking", exp.config_cls, "multistage")
    assert cfg.n_trains == (7000,) and cfg.pool == "train+test"
    data = dg.load_data(cfg, 7000, data_dir)
    assert len(data.y_train) == 7000 and len(data.y_test_full) == cfg.test_keep
    train_rows = {r.numpy().tobytes() for r in data.x_train}
    assert not any(r.numpy().tobytes() in train_rows for r in data.x_test_full)


def test_double_descent_and_rebound_read_off_constructed_curves():
    import numpy as np

    # falls 100 -> 60, rises to 90 (first surge), falls to 30 (second surge)
    r = np.array([100, 80, 60, 70, 90, 85, 50, 30, 30], dtype=float)
    assert dg._down_up_down(r) == (40.0, 30.0, 60.0)
    assert dg._down_up_down(np.array([5.0, 4.0, 3.0, 3.0])) == (0.0, 0.0, 0.0)  # monotone: no double descent
    # an early transient rise, then one long fall and a partial recovery: no first drop, so no double descent
    assert dg._down_up_down(np.array([13.0, 17.0, 9.0, 3.0, 2.0, 5.0])) == (0.0, 0.0, 0.0)
    assert dg._max_rebound(np.array([10.0, 8.0, 6.0, 5.0])) == 0.0
    assert dg._max_rebound(np.array([10.0, 8.0, 10.0, 5.0])) == pytest.approx(0.25)  # 8 -> 10: a slingshot


def test_tiny_preset_end_to_end():
    exp = get("deep-grokking")
    cfg = resolve_config("deep-grokking", exp.config_cls, "tiny")
    sink = MemorySink()
    summary = exp.run(cfg, sink, RunContext())
    frame = sink.metrics()
    depth = cfg.depths[0]
    names = set(frame["name"])
    expected = {"accuracy", "error", "loss", "mse", "weight_norm", "weight_norm/last_layer", "tunnel_length",
                "tunnel_length_rel", "ntk/alignment"}
    expected |= {f"{m}/{layer}" for m in ("feature_rank", "feature_rank_rel", "feature_rank_f32tol",
                                          "effective_rank", "probe_accuracy")
                 for layer in range(1, depth + 1)}
    expected |= {f"dead_units/{layer}" for layer in range(1, depth)}
    assert expected <= names, expected - names
    assert f"dead_units/{depth}" not in names  # the output layer has no ReLU
    # the authors' rank of layer l+1 is bounded by the live units of layer l (NOTE [feature rank tolerance])
    wide = frame[frame["split"] == "test"].pivot_table(index="step", columns="name", values="value")
    for layer in range(1, depth):
        assert (wide[f"feature_rank/{layer + 1}"] <= cfg.width - wide[f"dead_units/{layer}"]).all()
        # a looser tolerance never counts more directions
        assert (wide[f"feature_rank_f32tol/{layer}"] <= wide[f"feature_rank/{layer}"]).all()
    # one unit per run: the headline values also appear without the unit prefix (for sweep tables)
    assert summary["fit_step"] == summary[f"n={cfg.n_trains[0]}/depth={depth}/wd={cfg.weight_decays[0]:g}/"
                                          f"seed={cfg.seed}/fit_step"]
    assert summary["rank_final/second_last"] == summary[f"n={cfg.n_trains[0]}/depth={depth}/"
                                                        f"wd={cfg.weight_decays[0]:g}/seed={cfg.seed}/rank_final/"
                                                        f"{depth - 1}"]
    prefix = f"n={cfg.n_trains[0]}/depth={depth}/wd={cfg.weight_decays[0]:g}/seed={cfg.seed}"
    # the net fits its training set and generalizes; ranks stay within their bounds
    assert summary[f"{prefix}/final_train_accuracy"] >= 0.95
    assert summary[f"{prefix}/final_test_accuracy"] > 0.8
    assert 0 < summary[f"{prefix}/fit_step"] <= cfg.steps
    ranks = frame[frame["name"].str.startswith("feature_rank/")]
    assert ranks["value"].between(0, cfg.width).all()
    out_rank = frame[frame["name"] == f"feature_rank/{depth}"]["value"]
    assert out_rank.max() <= 10
    align = frame[frame["name"] == "ntk/alignment"]["value"]
    assert align.between(-1, 1).all() and len(align) == len(set(dg.log_steps(cfg.steps, cfg.probe_points)))
    # a weight norm logged at step 0 equals the α-scaled initial norm (the net was scaled)
    torch.manual_seed(cfg.seed)
    ref = scale_init(MLP(64, cfg.width, depth, 10), cfg.alpha)
    assert summary[f"{prefix}/weight_norm_init"] == pytest.approx(weight_norm(ref.parameters()), rel=1e-6)


def test_transition_reads_fit_rise_and_rank_drop_from_curves():
    import numpy as np
    import pandas as pd

    steps = np.array([0, 10, 100, 1000, 2000, 4000, 8000, 16000])
    train = [0.1, 0.2, 0.5, 0.97, 1.0, 1.0, 1.0, 1.0]
    test = [0.1, 0.1, 0.12, 0.15, 0.16, 0.3, 0.8, 0.9]      # midpoint (0.15 + 0.9)/2 = 0.525 at 8000
    rank = [100, 100, 100, 100, 100, 90, 40, 20]           # midpoint 60, first reached at 8000
    wn = 50.0 * np.exp(-steps / 8000.0)                     # a pure exponential: no kink
    rows = []
    for i, s in enumerate(steps):
        rows += [(s, "train", "accuracy", train[i]), (s, "test", "accuracy", test[i]),
                 (s, "train", "weight_norm", wn[i])]
        for layer in (1, 2):
            for name in ("feature_rank", "feature_rank_rel", "effective_rank"):
                rows.append((s, "test", f"{name}/{layer}", rank[i] if layer == 1 else 100.0))
    frame = pd.DataFrame(rows, columns=["step", "split", "name", "value"])
    out = dg.transition(frame, depth=2)
    assert out["fit_step"] == 1000 and out["test_accuracy_at_fit"] == 0.15
    assert out["grok_step"] == 8000
    assert out["rank_drop_step/1"] == 8000 and out["rank_at_fit/1"] == 100 and out["rank_final/1"] == 20
    assert math.isnan(out["rank_drop_step/2"])  # a flat layer did not drop
    assert out["weight_norm_slope_ratio"] == pytest.approx(1.0, rel=1e-9)
    assert out["weight_norm_at_grok"] == pytest.approx(50.0 * math.exp(-1.0))


def test_sweep_report_overlays_the_grid_points(tmp_path):
    from telescope.report import build_report
    from telescope.sweeps import SweepSpec, parse_grid, run_sweep

    spec = SweepSpec("deep-grokking", "tiny", parse_grid(["depths=3;4"]), seeds=1,
                     sets={"steps": "150", "probe_points": "0", "ntk_points": "0"})
    sweep = run_sweep(spec, tmp_path, workers=1)
    assert sweep.ok
    page = build_report(sweep.path).read_text(encoding="utf-8")
    figures = sweep.path / "figures"
    assert (figures / "deep_grokking_sweep_curves.png").exists()
    assert (figures / "deep_grokking_sweep_times.png").exists()
    assert "Grid points overlaid" in page and "Transition times against depths" in page
    # the per-run single-unit keys line up across depths in the sweep table
    table = __import__("pandas").read_csv(sweep.path / "table.csv")
    assert set(table.loc[table["metric"] == "final_test_accuracy", "depths"].astype(str)) == {"3", "4"}
