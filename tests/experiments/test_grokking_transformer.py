"""grokking-transformer (issue 20): the tiny preset logs every metric the issue lists, the lens
stays far closer to the network than the linearization, the sketch's self-check holds, figures."""

import json
import math

import pytest

from telescope.errors import ConfigError
from telescope.experiments import get
from telescope.experiments import grokking_transformer as G
from telescope.experiments.base import RunContext, config_to_dict, resolve_config
from telescope.store import MemorySink

NAMES = {"loss", "mse", "error", "smoother/p_eff", "smoother/p_eff_se", "smoother/residual", "ntk/alignment",
         "ntk/distance"}


def test_validation_and_registry():
    assert get("grokking-transformer").config_cls is G.Config
    with pytest.raises(ConfigError, match="heads=3 must divide d_model=8"):
        resolve_config("grokking-transformer", G.Config, "tiny", overrides={"heads": 3})
    with pytest.raises(ConfigError, match="train_fraction"):
        resolve_config("grokking-transformer", G.Config, "tiny", overrides={"train_fraction": 0.01})
    paper = resolve_config("grokking-transformer", G.Config, "paper")
    assert (paper.p, paper.train_fraction, paper.lr, paper.weight_decay, paper.d_model) == (113, 0.3, 1e-3, 1.0, 128)


@pytest.fixture(scope="module")
def tiny():
    cfg = resolve_config("grokking-transformer", G.Config, "tiny")
    sink = MemorySink()
    return cfg, sink, G.run(cfg, sink, RunContext())


def test_tiny_logs_the_issue_metrics(tiny):
    cfg, sink, s = tiny
    frame = sink.metrics()
    for split in ("train", "test"):
        assert NAMES <= set(frame[frame["split"] == split]["name"])
    assert {"telescope/abs_err", "linearized/abs_err", "trapezoid/abs_err"} <= set(frame[frame["split"] == "test"]["name"])
    assert {"weight_norm", "embedding/effective_rank", "adam/sharpness_ratio"} <= set(
        frame[frame["split"] == "train"]["name"])
    assert frame["step"].max() == cfg.steps
    at0 = frame[frame["step"] == 0]
    assert (at0[at0["name"] == "smoother/p_eff"]["value"] == 0).all()                   # s_0 = 0
    assert (at0[at0["name"] == "ntk/distance"]["value"].abs() < 1e-12).all()           # K_0 vs K_0
    rank = frame[frame["name"] == "embedding/effective_rank"]["value"]
    assert ((rank >= 1) & (rank <= cfg.d_model)).all()
    json.dumps(s, allow_nan=False)


def test_tiny_telescoping_error_far_below_linearized_and_self_check(tiny):
    cfg, sink, s = tiny
    frame = sink.metrics()
    later = frame[(frame["step"] > 1) & (frame["split"] == "test")]     # after one step f̃ = f_lin
    tel = later[later["name"] == "telescope/abs_err"].set_index("step")["value"]
    lin = later[later["name"] == "linearized/abs_err"].set_index("step")["value"]
    assert (tel < 0.5 * lin).all() and tel.iloc[-1] < 0.1 * lin.iloc[-1] and lin.max() > 1e-3
    res = frame[frame["name"] == "smoother/residual"]["value"]
    assert res.max() < 10 * max(tel.max(), 1e-6)                  # s·y + c follows f̃
    assert 0 < s["max_ratio_telescope_to_linearized"] < 0.5
    assert math.isclose(s["final_telescope_abs_err"], tel.iloc[-1])


def test_tiny_figures(tiny, tmp_path):
    from telescope.plots import module_for

    cfg, sink, s = tiny
    figs = module_for("grokking-transformer").figures(sink.metrics(), config_to_dict(cfg), s, tmp_path)
    assert len(figs) == 2
    for fig in figs:
        assert (tmp_path / fig.filename).stat().st_size > 10_000
    assert "p_train" in figs[0].caption and "alignment" in figs[1].caption


def test_tiny_summary_ratios_and_sharpness(tiny):
    """The summary's ratio keys read the logged curves; the sharpness ratio is positive and logged after
    step 0 only (Adam has no second moments before its first step)."""
    cfg, sink, s = tiny
    frame = sink.metrics()
    test = frame[frame["split"] == "test"]
    tel = test[test["name"] == "telescope/abs_err"].set_index("step")["value"]
    lin = test[test["name"] == "linearized/abs_err"].set_index("step")["value"]
    assert math.isclose(s["final_linearized_over_telescope"], lin.iloc[-1] / tel.iloc[-1])
    assert s["step_10x_lost"] is None or s["step_10x_lost"] in set(tel.index)
    sharp = frame[frame["name"] == "adam/sharpness_ratio"].set_index("step")["value"]
    assert sharp.index.min() > 0 and (sharp > 0).all() and math.isclose(s["max_sharpness_ratio"], sharp.max())
    assert s["last_valid_step_test"] == cfg.steps         # the tiny run's self-check holds throughout


def test_cross_entropy_runs_the_lens_alone_and_its_figures(tmp_path):
    """loss=cross_entropy (Nanda's loss): the lens's errors are logged, the smoother is refused at the door,
    the sharpness ratio (squared losses only) is not logged, and the figures draw without it."""
    from telescope.plots import module_for

    with pytest.raises(ConfigError, match="smoother=false"):
        resolve_config("grokking-transformer", G.Config, "tiny", overrides={"loss": "cross_entropy"})
    cfg = resolve_config("grokking-transformer", G.Config, "tiny",
                         overrides={"loss": "cross_entropy", "smoother": "false", "steps": "8", "centred": "true",
                                    "alpha": "0.5"})
    sink = MemorySink()
    s = G.run(cfg, sink, RunContext())
    names = set(sink.metrics()["name"])
    assert {"telescope/abs_err", "trapezoid/abs_err", "linearized/abs_err"} <= names
    assert "adam/sharpness_ratio" not in names and "smoother/p_eff" not in names
    assert s["step_near_edge"] is None and s["max_sharpness_ratio"] is None and s["last_valid_step_test"] is None
    at0 = sink.metrics().query("step == 0 and name == 'loss'")["value"]
    assert (abs(at0 - math.log(cfg.p)) < 1e-6).all()          # centred: logits 0 at init, loss log p
    figs = module_for("grokking-transformer").figures(sink.metrics(), config_to_dict(cfg), s, tmp_path)
    assert all((tmp_path / f.filename).stat().st_size > 10_000 for f in figs)


def test_sgd_runs_without_the_sharpness_ratio():
    """optimizer=sgd (the comparison docs/grokking-transformer.md reports): the lens and the sketch follow it;
    the sharpness ratio, an Adam quantity, is not logged."""
    cfg = resolve_config("grokking-transformer", G.Config, "tiny", overrides={"optimizer": "sgd", "lr": "0.1",
                                                                            "weight_decay": "0.001", "steps": "8"})
    sink = MemorySink()
    s = G.run(cfg, sink, RunContext())
    names = set(sink.metrics()["name"])
    assert {"telescope/abs_err", "smoother/p_eff"} <= names and "adam/sharpness_ratio" not in names
    assert s["last_valid_step_test"] == cfg.steps
