"""`telescope run kernel-stages`: three stages, the speed/generalisation split, the neural bridge."""

import dataclasses
import json

import pytest

from telescope.errors import ConfigError
from telescope.experiments import get
from telescope.experiments import kernel_stages as ks
from telescope.experiments.base import RunContext, resolve_config
from telescope.plots import module_for
from telescope.store import MemorySink


@pytest.fixture(scope="module")
def tiny():
    config = resolve_config("kernel-stages", ks.Config, "tiny")
    sink = MemorySink()
    summary = ks.run(config, sink, RunContext())
    return config, sink, summary


def test_tiny_run_shows_stages_one_and_three_but_no_clean_stage_two(tiny):
    """d = 100, n = 1000: n/κ and 1/λ_{d,2} are only 7x apart, so when the training set is fitted
    the oracle has already learned a third of degree 2 — no clean stage 2 (NOTE [stage detection])."""
    config, _, summary = tiny
    assert not summary["stages_in_order"] and not summary["exp/stages_in_order"]
    assert "exp/stage2_start" not in summary
    assert summary["exp/stage1_start"] == 1 and summary["exp/stage3_end"] == config.t_max
    assert summary["exp/stage1_end"] < summary["exp/t_fitted"] < summary["exp/stage3_start"]
    assert 0.2 < summary["exp/bootstrap_gap"] < 0.5
    # the training set is fitted (90 %) ~1.15 n/κ_{>1}; stage 3 starts ~1.15/λ_{d,2}
    assert 1.0 < summary["exp/t_fitted"] / summary["exp/predicted/interpolate"] < 2.5
    assert 1.0 < summary["exp/stage3_start"] / summary["exp/predicted/oracle_next"] < 2.5
    # stage 3: training error gone, oracle gone, test frozen near ‖P_2 f‖² ≈ 1
    assert summary["exp/end/train"] < 1e-6 and summary["exp/end/oracle"] < 1e-6
    assert 0.6 < summary["exp/end/test"] < 1.3
    assert summary["exp/stage3_test_change"] < 0.05
    assert json.dumps(summary, allow_nan=False)


def test_tiny_metrics_are_long_and_plottable_on_a_log_axis(tiny):
    config, sink, _ = tiny
    frame = sink.metrics()
    assert {"step", "split", "name", "value", "study", "kernel", "nugget"} <= set(frame.columns)
    assert (frame["step"] >= 1).all()
    stages = frame[frame["study"] == "stages"]
    for split in ("train", "test", "oracle"):
        rows = stages[(stages["split"] == split) & (stages["name"] == "mse")]
        assert rows["step"].is_monotonic_increasing and rows["step"].iloc[-1] == config.t_max
    # degree 1 is learned by both worlds; degree 2 only by the oracle (n ≪ d²)
    last = stages[stages["step"] == stages["step"].max()].set_index(["split", "name"])["value"]
    assert last[("oracle", "learned/deg1")] > 0.99 and last[("test", "learned/deg1")] > 0.8
    assert last[("oracle", "learned/deg2")] > 0.99 and last[("test", "learned/deg2")] < 0.3


def test_faster_training_is_not_better_generalisation(tiny):
    _, _, summary = tiny
    assert summary["speed/faster_fit_worse_test"]
    fits = [v for k, v in sorted(summary.items()) if k.startswith("speed/") and k.endswith("t_fit")]
    assert len(fits) == 3


def test_bridge_network_follows_its_tangent_kernel_flow(tiny):
    _, _, summary = tiny
    # lazy (α = 4) net vs the exact discrete-GD closed form of its own initial tangent kernel
    assert summary["bridge/train_max_gap"] < 0.01
    assert summary["bridge/test_max_gap"] < 0.01
    # online SGD vs the infinite-width oracle: finite width (256) and SGD noise leave more slack
    assert summary["bridge/online_vs_oracle_max_gap"] < 0.25


def test_laziness_controls_the_bridge_gap():
    """A larger output scale α keeps the network closer to its initial-kernel flow."""
    base = dataclasses.replace(resolve_config("kernel-stages", ks.Config, "tiny"), d=10, n=50,
                               nuggets=(), bridge_steps=150)
    gaps = {}
    for scale in (0.5, 4.0):
        summary = ks.run(dataclasses.replace(base, bridge_scale=scale), MemorySink())
        gaps[scale] = summary["bridge/train_max_gap"]
    assert gaps[4.0] < gaps[0.5] / 5


def test_quick_setting_reproduces_the_digest_numbers():
    """d = 200, n = 2000, exp kernel, f = x1 + x2x3, σ = 0.3 (digest b.7): within sampling noise."""
    config = dataclasses.replace(ks.Config(), kernels=("exp",), nuggets=(), bridge=False)
    sink = MemorySink()
    summary = ks.run(config, sink)
    frame = sink.metrics()
    reference = {1000: (0.45, 1.01, 0.94), 10000: (0.001, 0.97, 0.60), 100000: (0.0, 0.96, 0.007)}
    for t, (train, test, oracle) in reference.items():
        at = frame[frame["step"] == t].set_index("split")
        at = at[at["name"] == "mse"]["value"]
        assert at["train"] == pytest.approx(train, abs=0.08)
        assert at["test"] == pytest.approx(test, abs=0.1)
        assert at["oracle"] == pytest.approx(oracle, abs=0.02)     # deterministic up to quadrature
    # at this size the deep bootstrap is not clean: test − oracle ≈ 0.17 of the test error at the fit
    assert 0.1 < summary["exp/bootstrap_gap"] < 0.3 and not summary["exp/stages_in_order"]
    assert abs(summary["exp/plateau_excess"]) < 0.1


def test_resume_skips_finished_units(tiny):
    config, sink, summary = tiny
    before = len(sink.metrics())
    again = ks.run(config, sink, RunContext())
    assert len(sink.metrics()) == before
    assert again == summary


@pytest.mark.parametrize("key,value,match", [
    ("kernels", "rbf", "unknown kernel"), ("d", "2", "d=2"), ("bridge_width", "7", "even"),
    ("target", "x1+x500*x2", "raise d"), ("nuggets", "-1", "nuggets"), ("stage_tol", "0.5", "stage_tol"),
])
def test_bad_config_is_rejected(key, value, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config("kernel-stages", ks.Config, "tiny", overrides={key: value})


def test_too_large_bridge_step_is_explained():
    config = dataclasses.replace(resolve_config("kernel-stages", ks.Config, "tiny"), d=10, n=30,
                                 nuggets=(), bridge_lr=50.0)
    with pytest.raises(ConfigError, match="lower bridge_lr"):
        ks.run(config, MemorySink())


def test_registry_and_figures(tiny, tmp_path):
    config, sink, summary = tiny
    assert get("kernel-stages").config_cls is ks.Config
    figures = module_for("kernel-stages").figures(sink.metrics(), dataclasses.asdict(config), summary, tmp_path)
    names = [f.filename for f in figures]
    assert names == ["kernel_stages_curves.png", "kernel_stages_degrees.png", "kernel_stages_speed.png",
                     "kernel_stages_bridge.png"]
    for f in figures:
        assert (tmp_path / f.filename).stat().st_size > 10_000 and "This run" in f.caption
