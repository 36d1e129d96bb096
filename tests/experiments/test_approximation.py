import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from telescope.experiments import approximation as ap, base
from telescope.store import MemorySink

TINY = ap.Config(**ap.Config.PRESETS["tiny"])
TWO_LRS = dataclasses.replace(TINY, sgd_lrs=(0.01, 0.04))     # matched steps 60 and 15


@pytest.fixture(scope="module")
def two_lr_run():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sink = MemorySink()
        summary = ap.run(TWO_LRS, sink, base.RunContext())
    finally:
        torch.set_num_threads(threads)
    return summary, sink.metrics()


def test_matched_steps_keep_gamma_t_fixed():
    assert ap.matched_step(0.003, 0.003, 2000) == 2000
    assert ap.matched_step(0.003, 0.01, 2000) == 600 and ap.matched_step(0.003, 0.03, 2000) == 200
    quick = base.resolve_config("approximation", ap.Config, "quick")
    assert [quick.matched_step("adamw", lr) for lr in quick.adamw_lrs] == [2000, 600, 200]
    assert TINY.matched_step("sgd", TINY.sgd_lrs[0]) == TINY.steps        # one γ: nothing new is logged


def test_fixed_gamma_t_summary_reads_the_matched_steps(two_lr_run):
    summary, frame = two_lr_run
    test = frame[(frame["split"] == "test") & (frame["setting"] == "sgd")]
    for lr, t in ((0.01, 60), (0.04, 15)):
        assert summary[f"sgd/fixed_gT/lr={lr:g}/step"] == t
        for name in ("telescope/abs_err", "linearized/abs_err"):
            row = test[(test["lr"] == lr) & (test["step"] == t) & (test["name"] == name)]
            assert len(row) == 1
            key = f"sgd/fixed_gT/lr={lr:g}/{name.replace('/', '_')}"
            assert summary[key] == row["value"].iloc[0]
    tel = [summary[f"sgd/fixed_gT/lr={lr:g}/telescope_abs_err"] for lr in (0.01, 0.04)]
    lin = [summary[f"sgd/fixed_gT/lr={lr:g}/linearized_abs_err"] for lr in (0.01, 0.04)]
    assert summary["sgd/fixed_gT/telescope_slope"] == pytest.approx(np.log(tel[1] / tel[0]) / np.log(4))
    assert summary["sgd/fixed_gT/linearized_spread"] == pytest.approx(max(lin) / min(lin))
    assert summary["sgd/fixed_gT/gamma_T"] == pytest.approx(0.01 * TINY.steps)
    assert "adamw/fixed_gT/telescope_slope" not in summary                  # one γ: no slope
    # the larger γ gives the larger telescoping error at the same γ·t (fact 4's direction)
    assert tel[1] > tel[0]


def test_slope_is_one_when_the_error_is_proportional_to_gamma():
    rows = []
    for lr in (0.001, 0.004, 0.016):
        t = ap.matched_step(0.001, lr, 1600)
        for name, value in (("telescope/abs_err", 3.0 * lr), ("linearized/abs_err", 0.2)):
            rows.append(dict(step=t, split="test", name=name, value=value, setting="sgd", lr=lr, seed=0))
            rows.append(dict(step=1600, split="test", name=name, value=value, setting="sgd", lr=lr, seed=0))
        for name in ("error", "telescope/error", "linearized/error"):
            rows.append(dict(step=1600, split="test", name=name, value=0.1, setting="sgd", lr=lr, seed=0))
    summary = ap.summarize(pd.DataFrame(rows), 1600)
    assert summary["sgd/fixed_gT/telescope_slope"] == pytest.approx(1.0, abs=1e-12)
    assert summary["sgd/fixed_gT/linearized_spread"] == pytest.approx(1.0, abs=1e-12)
    assert [summary[f"sgd/fixed_gT/lr={lr:g}/step"] for lr in (0.001, 0.004, 0.016)] == [1600, 400, 100]


def test_figures_label_each_panel_and_plot_fixed_gamma_t(two_lr_run, tmp_path):
    from telescope.plots import approximation as plots

    summary, frame = two_lr_run
    figs = plots.figures(frame, base.config_to_dict(TWO_LRS), summary, tmp_path)
    names = [f.filename for f in figs]
    assert names == ["approximation_error.png", "approximation_accuracy.png", "approximation_fixed_gamma_t.png"]
    for f in figs:
        assert (tmp_path / f.filename).stat().st_size > 5000
    error, accuracy, fixed = (f.caption for f in figs)
    assert "one seed, no bands" in error and "s.e." not in error
    assert "AdamW: |f − f̃|" in error and "γ = 0.001" in error      # AdamW's own γ
    assert "SGD: |f − f̃|" in error and "γ = 0.04" in error and "grows" in error
    assert "at every γ" in accuracy and "AdamW f̃" in accuracy
    assert f"SGD slope {summary['sgd/fixed_gT/telescope_slope']:.2f}" in fixed


def test_demo_preset_is_quick_at_each_settings_smallest_gamma():
    quick = base.resolve_config("approximation", ap.Config, "quick")
    demo = base.resolve_config("approximation", ap.Config, "demo")
    assert demo.settings == ap.SETTINGS and demo.seeds == 1 and demo.steps == quick.steps
    assert demo.sgd_lrs == (min(quick.sgd_lrs),) and demo.adamw_lrs == (min(quick.adamw_lrs),)
    units = sum(len(demo.lrs(s)) for s in demo.settings) * demo.seeds * demo.steps
    assert units * 6 == sum(len(quick.lrs(s)) for s in quick.settings) * quick.seeds * quick.steps
