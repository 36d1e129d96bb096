"""grokking-mnist and grokking-control: tiny presets end to end (digits, seconds), the
metric names the figures read, figures written, and fact 13's direction on the tiny scale."""

import math

import pytest
import torch

from telescope.experiments import get
from telescope.experiments.base import RunContext, config_to_dict, resolve_config
from telescope.plots import module_for
from telescope.store import MemorySink


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_tiny(name, **overrides):
    exp = get(name)
    cfg = resolve_config(name, exp.config_cls, "tiny", overrides=overrides)
    sink = MemorySink()
    summary = exp.run(cfg, sink, RunContext())
    return cfg, sink.metrics(), summary


def test_tiny_presets_log_what_the_figures_need_and_control_uses_fewer_parameters(tmp_path):
    cfg, frame, summary = run_tiny("grokking-mnist")
    names = set(zip(frame["split"], frame["name"]))
    for split in ("train", "test"):
        for name in ("error", "mse", "smoother/p_eff", "smoother/residual"):
            assert (split, name) in names
    assert ("test", "telescope/abs_err") in names
    assert frame["step"].max() == cfg.steps
    assert set(frame["alpha"]) == {6.0}
    large = summary["alpha=6/output=linear/final_p_train"]
    # the smoother is a faithful account of f̃: residual of the order of the telescoping error
    assert summary["alpha=6/output=linear/final_residual_test"] < 3 * summary[
        "alpha=6/output=linear/final_telescope_abs_err"] + 1e-3
    figs = module_for("grokking-mnist").figures(frame, config_to_dict(cfg), summary, tmp_path)
    assert all((tmp_path / f.filename).stat().st_size > 5000 for f in figs)

    cfg_c, frame_c, summary_c = run_tiny("grokking-control")
    assert set(frame_c["output"]) == {"linear", "sigmoid"}
    assert set(frame_c["alpha"]) == {1.0}
    p_lin = summary_c["alpha=1/output=linear/final_p_train"]
    p_sig = summary_c["alpha=1/output=sigmoid/final_p_train"]
    assert all(math.isfinite(v) for v in (p_lin, p_sig, large))
    assert p_sig < p_lin < large        # fact 13: standard init uses fewer parameters, the sigmoid fewest
    figs = module_for("grokking-control").figures(frame_c, config_to_dict(cfg_c), summary_c, tmp_path)
    assert [f.filename for f in figs] == ["grokking_control.png", "grokking_overview.png"]


def test_config_validation():
    exp = get("grokking-mnist")
    from telescope.errors import ConfigError
    with pytest.raises(ConfigError, match="output"):
        resolve_config("grokking-mnist", exp.config_cls, "tiny", overrides={"outputs": "softmax"})
    with pytest.raises(ConfigError, match="n_probe"):
        resolve_config("grokking-mnist", exp.config_cls, "tiny", overrides={"n_probe": "1000"})
