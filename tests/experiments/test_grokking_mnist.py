"""grokking-mnist and grokking-control: tiny presets end to end (digits, seconds), the
metric names the figures read, figures written, and fact 13's first half on the tiny scale."""

import math

import numpy as np

import pytest
import torch

from telescope.experiments import get
from telescope.experiments.base import RunContext, config_to_dict, resolve_config
from telescope.plots import module_for
from telescope.store import MemorySink




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
    assert ("train", "adam/sharpness_ratio") in names          # NOTE [adam edge of stability]
    ratio = frame[frame["name"] == "adam/sharpness_ratio"]
    assert ratio["step"].min() == 1 and (ratio["value"] > 0).all()
    assert summary["alpha=6/output=linear/method=exact/max_sharpness_ratio"] == ratio["value"].max()
    assert frame["step"].max() == cfg.steps
    assert set(frame["alpha"]) == {6.0}
    large = summary["alpha=6/output=linear/method=exact/final_p_train"]
    # the smoother is a faithful account of f̃: residual of the order of the telescoping error
    assert summary["alpha=6/output=linear/method=exact/final_residual_test"] < 3 * summary[
        "alpha=6/output=linear/method=exact/final_telescope_abs_err"] + 1e-3
    figs = module_for("grokking-mnist").figures(frame, config_to_dict(cfg), summary, tmp_path)
    assert all((tmp_path / f.filename).stat().st_size > 5000 for f in figs)

    cfg_c, frame_c, summary_c = run_tiny("grokking-control")
    # α = 1 with both outputs, and the α = 6 reference (linear only, NOTE [control reference])
    assert set(zip(frame_c["alpha"], frame_c["output"])) == {(1.0, "linear"), (1.0, "sigmoid"), (6.0, "linear")}
    p_lin = summary_c["alpha=1/output=linear/method=exact/final_p_train"]
    p_sig = summary_c["alpha=1/output=sigmoid/method=exact/final_p_train"]
    assert all(math.isfinite(v) for v in (p_lin, p_sig, large))
    # fact 13, first half: at the same step, standard init has used far fewer effective parameters than α = 6
    # (the sigmoid's further reduction needs more steps than a tiny run: it shows in the quick preset)
    assert max(p_lin, p_sig) < 0.6 * large
    figs = module_for("grokking-control").figures(frame_c, config_to_dict(cfg_c), summary_c, tmp_path)
    assert [f.filename for f in figs] == ["grokking_control.png", "grokking_overview.png"]
    assert "Grey: α = 6" in figs[0].caption and "Matched steps, this run" in figs[0].caption


def test_control_compares_with_the_reference_at_matched_steps():
    """NOTE [control reference]: the summary's ref_* values are the α = 6 curves read at the control's
    match step (first logged step with test error < 10 %), and the speed-up follows from step_generalize."""
    cfg, frame, s = run_tiny("grokking-control", outputs="linear")
    k = "alpha=1/output=linear/method=exact/"
    ctl = frame[frame["alpha"] == 1.0]
    ref = frame[frame["alpha"] == 6.0]
    err = ctl[(ctl["split"] == "test") & (ctl["name"] == "error")].set_index("step")["value"].sort_index()
    match = int(err.index[err.to_numpy() < 0.1][0])
    assert s[k + "match_step"] == match and s[k + "test_error_at_match"] == err.loc[match]

    def read(part, split, name, step):
        return float(part[(part["split"] == split) & (part["name"] == name) & (part["step"] == step)]["value"].iloc[0])

    assert s[k + "ref_test_error_at_match"] == read(ref, "test", "error", match)
    for split in ("train", "test"):
        assert s[k + f"ref_p_{split}_at_match"] == read(ref, split, "smoother/p_eff", match)
        assert s[k + f"p_{split}_at_match"] == read(ctl, split, "smoother/p_eff", match)
        assert s[k + f"ref_p_{split}_at_end"] == read(ref, split, "smoother/p_eff", cfg.steps)
    ref_gen = s["alpha=6/output=linear/method=exact/step_generalize"]
    if ref_gen is None:          # the reference never reaches 10 %: a lower bound on the speed-up
        assert s[k + "speedup"] is None and s[k + "speedup_at_least"] == cfg.steps / s[k + "step_generalize"]
    else:
        assert s[k + "speedup"] == ref_gen / s[k + "step_generalize"] and s[k + "speedup_at_least"] is None
    assert s["reference_alpha"] == 6.0
    _, frame_none, s_none = run_tiny("grokking-control", outputs="linear", reference_alpha="none", steps="10")
    assert set(frame_none["alpha"]) == {1.0} and not any("ref_" in key for key in s_none)


def test_fig12_preset_is_the_quick_problem_at_three_alphas():
    """The README maps Fig. 12 to `--preset fig12`: the quick run at α ∈ {5, 6, 7}, nothing else changed."""
    exp = get("grokking-mnist")
    quick, fig12 = (config_to_dict(resolve_config("grokking-mnist", exp.config_cls, p)) for p in ("quick", "fig12"))
    assert fig12.pop("alphas") == [5.0, 6.0, 7.0] and quick.pop("alphas") == [6.0]
    assert fig12 == quick


def test_config_validation():
    exp = get("grokking-mnist")
    from telescope.errors import ConfigError
    with pytest.raises(ConfigError, match="output"):
        resolve_config("grokking-mnist", exp.config_cls, "tiny", overrides={"outputs": "softmax"})
    with pytest.raises(ConfigError, match="n_probe"):
        resolve_config("grokking-mnist", exp.config_cls, "tiny", overrides={"n_probe": "1000"})
    with pytest.raises(ConfigError, match="methods"):
        resolve_config("grokking-mnist", exp.config_cls, "tiny", overrides={"methods": "exact,lanczos"})
    with pytest.raises(ConfigError, match="task"):
        resolve_config("grokking-mnist", exp.config_cls, "tiny", overrides={"task": "parity"})  # tiny uses digits


def test_exact_and_sketch_overlay_follow_one_training(tmp_path):
    """methods=("exact", "sketch"): the same training runs once per method (identical error curves
    and s·y + c), and the sketch's p̂ estimates the exact p⁰ within a few of its standard errors."""
    cfg, frame, summary = run_tiny("grokking-mnist", methods="exact,sketch", probes="64")
    assert set(frame["method"]) == {"exact", "sketch"}
    wide = frame.pivot_table(index=["method", "step"], columns=["split", "name"], values="value")
    ex, sk = wide.loc["exact"], wide.loc["sketch"]
    for split in ("train", "test"):
        assert (ex[(split, "error")] == sk[(split, "error")]).all()
        assert (ex[(split, "mse")] == sk[(split, "mse")]).all()
        assert ((split, "smoother/p_eff_se") in sk.columns) and ((split, "smoother/p_eff_se") not in ex.dropna(
            axis=1, how="all").columns)
        last = cfg.steps
        p_ex, p_sk, se = ex.loc[last, (split, "smoother/p_eff")], sk.loc[last, (split, "smoother/p_eff")], \
            sk.loc[last, (split, "smoother/p_eff_se")]
        assert p_ex > 1.0 and 0 < se < 0.5 * p_ex
        assert abs(p_sk - p_ex) < 4 * se
    # both smoothers carry s·y + c exactly: the residual self-checks agree
    assert ex[("test", "smoother/residual")].to_numpy() == pytest.approx(
        sk[("test", "smoother/residual")].to_numpy(), rel=1e-4, abs=1e-9)
    for m in ("exact", "sketch"):
        assert f"alpha=6/output=linear/method={m}/final_p_test" in summary
    assert "alpha=6/output=linear/method=sketch/final_p_test_se" in summary
    figs = module_for("grokking-mnist").figures(frame, config_to_dict(cfg), summary, tmp_path)
    assert "sketch" in figs[0].caption and all((tmp_path / f.filename).stat().st_size > 5000 for f in figs)


def test_parity_task_uses_every_digit():
    from telescope.experiments.grokking_mnist import Config, load_task
    data = load_task(Config(task="parity", n_train=300, n_test=50, image_size=8))
    assert data.x_train.shape == (300, 64) and data.x_test.shape == (50, 64)
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    assert 0.35 < float(data.y_train.mean()) < 0.65          # odd vs even: about balanced


def test_summary_reads_fit_generalization_and_reliability_off_the_curves():
    import pandas as pd
    from telescope.experiments.grokking_mnist import summarize
    steps = [0, 10, 100, 1000, 5000]
    curves = {("train", "error"): [0.5, 0.3, 0.0, 0.0, 0.0], ("test", "error"): [0.5, 0.4, 0.3, 0.2, 0.05],
              ("train", "smoother/p_eff"): [0.0, 0.5, 150, 200, 200], ("test", "smoother/p_eff"): [0.0, 0.2, 140, 120, 90],
              ("test", "smoother/residual"): [0, 1e-3, 5e-3, 0.01, 0.5], ("test", "telescope/abs_err"): [0, 1e-3, 5e-3, 0.01, 0.05]}
    rows = [dict(step=st, split=sp, name=nm, value=v[i], alpha=6.0, output="linear", method="exact", seed=0)
            for (sp, nm), v in curves.items() for i, st in enumerate(steps)]
    s = summarize(pd.DataFrame(rows), 5000)
    k = "alpha=6/output=linear/method=exact/"
    assert (s[k + "step_fit"], s[k + "step_generalize"]) == (100, 5000)
    assert (s[k + "p_train_at_fit"], s[k + "p_test_at_fit"], s[k + "test_error_at_fit"]) == (150, 140, 0.3)
    assert (s[k + "p_train_at_generalize"], s[k + "p_test_at_generalize"]) == (200, 90)
    assert s[k + "step_p_gap"] == 1000          # step 10 has p_train < 1: not a gap
    assert s[k + "step_unreliable"] == 5000     # residual 0.5 > 3 × 0.05


def test_control_quick_preset_shares_the_large_init_optimizer():
    """Fact 13 compares the control with α = 6: their quick presets must differ only in α, outputs
    and length (same data size, width, optimizer and smoother), or the p comparison is meaningless."""
    mnist = resolve_config("grokking-mnist", get("grokking-mnist").config_cls, "quick")
    control = resolve_config("grokking-control", get("grokking-control").config_cls, "quick")
    for field in ("n_train", "n_probe", "width", "depth", "lr", "warmup", "weight_decay", "betas", "batch_size",
                  "loss", "methods", "probes", "smoother_dtype"):
        assert getattr(mnist, field) == getattr(control, field), field
    assert mnist.lr == 1e-4 and mnist.warmup == 100      # the paper's rate and warmup (docs/grokking.md)
    assert control.alphas == (1.0,) and mnist.alphas == (6.0,) and control.reference_alpha == 6.0


def test_adam_eps_reaches_the_optimizer_and_the_smoother(monkeypatch):
    """`--set adam_eps=1e-3` (docs/grokking.md, session 5) is the ε of the AdamW that trains the
    network, and so of φ = √v̂ + ε that the smoother and the sharpness ratio read from it."""
    import telescope.experiments.grokking_mnist as study
    from telescope.experiments.base import parse_overrides
    seen = []
    real_fit = study.fit

    def spy(model, opt, *args, **kwargs):
        seen.append(opt)
        return real_fit(model, opt, *args, **kwargs)

    monkeypatch.setattr(study, "fit", spy)
    exp = get("grokking-mnist")
    ratios = {}
    for pairs in ([], ["adam_eps=1e-3"]):
        cfg = resolve_config("grokking-mnist", exp.config_cls, "tiny", overrides=parse_overrides(pairs))
        summary = exp.run(cfg, MemorySink(), RunContext())
        ratios[cfg.adam_eps] = summary["alpha=6/output=linear/method=exact/max_sharpness_ratio"]
    assert [g["eps"] for opt in seen for g in opt.param_groups] == [1e-8, 1e-3]
    assert isinstance(seen[0], torch.optim.AdamW)
    # a larger ε bounds 1/φ by 1/ε: Adam's preconditioned sharpness must come out lower
    assert ratios[1e-3] < 0.9 * ratios[1e-8]


# ---------------------------------------------------------------------------- validity and figures (issue 19, 21)
def _lines_have_legend_entries(fig):
    """Every drawn line has a legend entry in its axes, or is a faded continuation whose meaning a
    'not readable' proxy entry of the same axes gives (NOTE [smoother validity])."""
    from telescope.plots.grokking_mnist import FADED
    for ax in fig.axes:
        legend = ax.get_legend()
        texts = [t.get_text() for t in legend.get_texts()] if legend else []
        for line in ax.get_lines():
            if len(line.get_xdata()) == 0:
                continue                                           # a legend proxy
            if line.get_label().startswith("_"):
                assert line.get_linestyle() == FADED["ls"] and line.get_alpha() == FADED["alpha"], line
                assert any("not readable" in t or "past" in t for t in texts)
            else:
                assert line.get_label() in texts, (line.get_label(), texts)


def _fail_after(frame, step, seed):
    """The stored flags with seed ``seed`` failing the self-check at every logged step after ``step``."""
    frame = frame.copy()
    hit = (frame["name"] == "smoother/valid") & (frame["step"] > step) & (frame["seed"] == seed)
    frame.loc[hit, "value"] = 0.0
    return frame


def test_summary_last_valid_step_is_the_minimum_over_seeds():
    import pandas as pd
    from telescope.experiments.grokking_mnist import summarize
    steps = [0, 10, 100, 1000, 5000]
    rows = []
    for seed, flags in ((0, [1, 1, 1, 0, 0]), (1, [1, 1, 1, 1, 0])):
        curves = {("train", "error"): [0.5, 0.3, 0.0, 0.0, 0.0], ("test", "error"): [0.5, 0.4, 0.3, 0.2, 0.05],
                  ("train", "smoother/p_eff"): [0, 1, 2, 3, 4], ("test", "smoother/p_eff"): [0, 1, 2, 3, 4],
                  ("test", "smoother/residual"): [0, 0, 0, 0, 0], ("test", "telescope/abs_err"): [0, 0, 0, 0, 0],
                  ("train", "smoother/valid"): flags, ("test", "smoother/valid"): [1] * 5,
                  ("train", "adam/sharpness_ratio"): [np.nan, 0.5, 0.85, 0.9 + 0.05 * seed, 0.95]}
        rows += [dict(step=st, split=sp, name=nm, value=float(v[i]), alpha=6.0, output="linear", method="exact",
                      seed=seed) for (sp, nm), v in curves.items() for i, st in enumerate(steps)]
    s = summarize(pd.DataFrame(rows), 5000)
    k = "alpha=6/output=linear/method=exact/"
    assert (s[k + "last_valid_step"], s[k + "step_first_invalid"]) == (100, 1000)
    assert s[k + "step_unreliable"] is None                    # the test residual itself never fails
    assert s[k + "sharpness_ratio_at_first_invalid"] == pytest.approx((0.9 + 0.95) / 2)
    assert s[k + "step_near_edge"] == 100                      # ≥ 0.8 from step 100 on in both seeds
    # every flag valid: last_valid_step is the last step and step_first_invalid None
    ok = pd.DataFrame(rows).assign(value=lambda f: f["value"].where(f["name"] != "smoother/valid", 1.0))
    s = summarize(ok, 5000)
    assert (s[k + "last_valid_step"], s[k + "step_first_invalid"]) == (5000, None)
    # runs stored before the flag existed: the test residual and telescoping error by the same rule
    old = pd.DataFrame(rows)
    old = old[old["name"] != "smoother/valid"]
    old.loc[(old["name"] == "smoother/residual") & (old["step"] >= 1000), "value"] = 0.5
    s = summarize(old, 5000)
    assert (s[k + "last_valid_step"], s[k + "step_first_invalid"], s[k + "step_unreliable"]) == (100, 1000, 1000)


def test_figures_with_two_seeds_fade_p_past_its_last_valid_step_and_draw_the_reference(tmp_path):
    """Tiny control with α ∈ {1, 6} and 2 seeds: bands, a legend entry for every line, the α = 6
    reference in the control figure, p⁰ faded past the last valid step with the caption saying from
    which step it cannot be read, and step counts printed as integers."""
    import re

    from telescope.experiments.grokking_mnist import summarize
    from telescope.plots import setup_matplotlib
    from telescope.plots.grokking_mnist import FADED, _panel_pair, validity

    cfg, frame, summary = run_tiny("grokking-control", seeds="2", alphas="1,6", outputs="linear")
    assert set(frame["seed"]) == {0, 1} and set(frame["alpha"]) == {1.0, 6.0}
    flags = frame[frame["name"] == "smoother/valid"]
    assert set(flags["split"]) == {"train", "test"} and set(flags["value"]) <= {0.0, 1.0}
    control = module_for("grokking-control")
    figs = control.figures(frame, config_to_dict(cfg), summary, tmp_path)
    assert "Grey: α = 6" in figs[0].caption and "mean ± s.e. over 2 seeds" in figs[0].caption
    one = frame[frame["alpha"] == 1.0]
    figs = control.figures(one, config_to_dict(cfg), summarize(one, cfg.steps), tmp_path)
    assert "No α = 6 reference curve" in figs[0].caption and "reference_alpha=6" in figs[0].caption

    big = frame[frame["alpha"] == 6.0]
    steps = sorted(big["step"].unique())
    cut = steps[len(steps) // 2]
    broken = _fail_after(big, cut, seed=1)
    assert validity(broken) == (cut, steps[len(steps) // 2 + 1])
    s = summarize(broken, cfg.steps)
    figs = module_for("grokking-mnist").figures(broken, config_to_dict(cfg), s, tmp_path)
    cap = figs[0].caption
    assert f"cannot be read from step {steps[len(steps) // 2 + 1]} on" in cap and f"last valid step {cut}" in cap
    assert not re.search(r"step \d+(\.\d+)?e\+", cap) and not re.search(r"step \d+\.\d", cap)   # integer steps
    assert all((tmp_path / f.filename).stat().st_size > 5000 for f in figs)

    plt = setup_matplotlib()
    fig = _panel_pair(plt, broken, [(6.0, "linear")], "", s)
    p_axis = fig.axes[1]
    faded = [ln for ln in p_axis.get_lines() if ln.get_alpha() == FADED["alpha"] and len(ln.get_xdata())]
    assert len(faded) == 2 and all(ln.get_xdata()[0] == cut for ln in faded)       # train and test, from the cut
    solid = [ln for ln in p_axis.get_lines() if ln.get_label() in ("p_train", "p_test")]
    assert all(ln.get_xdata()[-1] == cut for ln in solid)
    assert any("not readable after step" in t.get_text() for t in p_axis.get_legend().get_texts())
    _lines_have_legend_entries(fig)
    plt.close(fig)
    fig = _panel_pair(plt, frame[frame["alpha"] == 1.0], [(1.0, "linear")], "control: ", summary,
                      reference=big)
    _lines_have_legend_entries(fig)
    assert any("(reference)" in ln.get_label() for ln in fig.axes[0].get_lines())
    plt.close(fig)
