"""grokking-poly: the closed-form smoother against the library's Lens + SmootherSpec, and the
paper's ordering in ε on the tiny preset."""

import json
import math

import pytest
import torch

from telescope.errors import ConfigError
from telescope.experiments import get
from telescope.experiments import grokking_poly as G
from telescope.experiments.base import RunContext, config_to_dict, resolve_config
from telescope.lens import Lens, SmootherSpec, smoother_of
from telescope.lens.closed_form import ClosedFormSmoother
from telescope.models.poly import CommitteeMachine, gaussian_quadratic_task
from telescope.store import MemorySink


@pytest.mark.parametrize("centred", [True, False])
def test_closed_form_smoother_equals_lens_smoother(centred):
    g = torch.Generator().manual_seed(0)
    x, y, xt, yt, _ = gaussian_quadratic_task(6, 15, 9, generator=g)
    models = [CommitteeMachine(6, 8, epsilon=0.4, alpha=1.0, centred=centred,
                               generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    lr = 3.0
    lens = Lens(models[0], {"test": xt}, smoother=SmootherSpec(x, y, loss="mse"))
    opt = torch.optim.SGD(models[0].parameters(), lr=lr)
    mine = ClosedFormSmoother(models[1], x, y, xt, lr)
    for _ in range(8):
        opt.zero_grad()
        ((models[0](x) - y) ** 2).mean().backward()
        lens.step(opt, batch=torch.arange(15))
        with torch.no_grad():
            before = models[1].weight.detach().clone()
            delta = -lr * models[1].mse_gradient(x, models[1](x) - y)
            models[1].weight += delta
            mine.step(before, delta)
    ref = smoother_of(lens)
    torch.testing.assert_close(models[1].weight, models[0].weight, rtol=1e-12, atol=1e-12)
    for split in ("train", "test"):
        s_ref, c_ref = ref.weights(split)
        s, c = mine.weights(split)
        torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(mine.telescope("test"), lens.predictions("test")["telescope"].double(),
                               rtol=0, atol=1e-10)
    p, p_ref = mine.effective_parameters(), lens.effective_parameters()
    assert p["train"] == pytest.approx(p_ref["train"], abs=1e-10)
    assert p["test"] == pytest.approx(p_ref["test"], abs=1e-10)
    with torch.no_grad():
        tele_err = float((models[1](xt) - mine.telescope("test")).abs().mean())
    assert 0 < mine.residual("test") < 10 * tele_err       # of the order of the telescoping error


def test_validation():
    with pytest.raises(ConfigError, match="smoother"):
        resolve_config("grokking-poly", G.Config, "tiny", overrides={"smoother": "magic"})
    assert get("grokking-poly").config_cls is G.Config


@pytest.fixture(scope="module")
def tiny():
    cfg = resolve_config("grokking-poly", G.Config, "tiny")
    sink = MemorySink()
    return cfg, sink, G.run(cfg, sink, RunContext())


def test_tiny_train_first_then_test_and_larger_eps_earlier(tiny):
    cfg, sink, s = tiny
    lo, hi = (f"eps={e:g}" for e in cfg.epsilons)
    for k in (lo, hi):
        assert s[f"{k}/epoch_train_below"] < s[f"{k}/epoch_test_below"]       # train fits first
        assert s[f"{k}/final_test"] < 0.5 * s[f"{k}/initial_test"]
    assert s[f"{lo}/delay"] > 3 * s[f"{hi}/delay"]                            # smaller ε: longer delay
    assert s[f"{lo}/max_test"] > s[f"{lo}/initial_test"]                      # small ε: test first worsens
    json.dumps(s, allow_nan=False)


def test_tiny_effective_parameters_are_logged_and_consistent(tiny):
    cfg, sink, s = tiny
    frame = sink.metrics()
    p = frame[frame["name"] == "smoother/p_eff"]
    assert set(p["split"]) == {"train", "test"}
    assert (p[p["step"] == 0]["value"] == 0).all()                            # s_0 = 0
    assert (p["value"] <= 2 * cfg.n_train * 5).all() and p["value"].max() > 1
    res = frame[frame["name"] == "smoother/residual"]["value"]
    err = frame[frame["name"] == "telescope/abs_err"]["value"]
    assert res.max() < 10 * max(err.max(), 1e-6)


def test_tiny_figure(tiny, tmp_path):
    from telescope.plots import module_for

    cfg, sink, s = tiny
    (fig,) = module_for("grokking-poly").figures(sink.metrics(), config_to_dict(cfg), s, tmp_path)
    assert (tmp_path / fig.filename).stat().st_size > 10_000 and "paper" in fig.caption


def test_two_seeds_validity_flags_summary_and_figure(tmp_path, monkeypatch):
    """seeds=2: smoother/valid per split and log point, last_valid_step in the summary (the self-check holds
    on the tiny preset), mean ± s.e. bands, a legend entry for every line; with flags failing after a step,
    p is faded from there and the caption says from which step p cannot be read."""
    from telescope.plots import module_for, setup_matplotlib

    cfg = resolve_config("grokking-poly", G.Config, "tiny", overrides={"seeds": "2", "epsilons": "0.5",
                                                                       "epochs": "200"})
    sink = MemorySink()
    s = G.run(cfg, sink, RunContext())
    frame = sink.metrics()
    flags = frame[frame["name"] == "smoother/valid"]
    assert set(flags["split"]) == {"train", "test"} and (flags["value"] == 1.0).all()
    assert s["eps=0.5/last_valid_step"] == 200 and s["eps=0.5/step_first_invalid"] is None
    (fig,) = module_for("grokking-poly").figures(frame, config_to_dict(cfg), s, tmp_path)
    assert "mean ± s.e. over 2 seeds" in fig.caption and "passes the self-check at every logged step" in fig.caption

    broken = frame.copy()
    broken.loc[(broken["name"] == "smoother/valid") & (broken["step"] > 100) & (broken["seed"] == 1), "value"] = 0.0
    steps = sorted(frame.loc[frame["split"] != "summary", "step"].unique())
    first_bad = min(t for t in steps if t > 100)
    summary = dict(s, **{"eps=0.5/step_first_invalid": float(first_bad), "eps=0.5/last_valid_step": 100.0})
    plt = setup_matplotlib()
    captured = {}
    import telescope.plots.grokking_poly as P

    def keep(fig, out_dir, name):                  # keep the figure open to inspect its lines
        captured["fig"] = fig
        return name

    monkeypatch.setattr(P, "save", keep)
    (f,) = P.figures(broken, config_to_dict(cfg), summary, tmp_path)
    assert f"p⁰ cannot be read from step {first_bad} on" in f.caption and "last valid step 100" in f.caption
    bottom = captured["fig"].axes[1]
    texts = [t.get_text() for t in bottom.get_legend().get_texts()]
    assert any("self-check fails" in t for t in texts)
    for line in captured["fig"].axes[0].get_lines() + bottom.get_lines():
        if len(line.get_xdata()) and not line.get_label().startswith("_"):
            assert line.get_label() in [t.get_text() for t in line.axes.get_legend().get_texts()]
    plt.close(captured["fig"])


def test_presets_quick_has_seeds_and_d100_is_the_papers_problem_size():
    """NOTE [grokking-poly presets]: quick draws bands (several seeds); d100 runs the paper's d, n_h, n and
    test size at the main text's ε = 0.2; paper adds the paper's length and seeds."""
    quick = resolve_config("grokking-poly", G.Config, "quick")
    d100 = resolve_config("grokking-poly", G.Config, "d100")
    paper = resolve_config("grokking-poly", G.Config, "paper")
    assert quick.seeds >= 2 and d100.seeds >= 2 and paper.seeds == 5
    for cfg in (d100, paper):
        assert (cfg.d, cfg.width, cfg.n_train, cfg.n_test) == (100, 500, 550, 500)
    assert d100.epsilons == (0.2,) and paper.epochs == 100_000


def test_summary_widest_gap_after_fitting_and_its_narrowing():
    """min_p_ratio: the smallest p_test/p_train once the train MSE is below ½L₀ and p_train ≥ 1, not the
    early ratio of two near-zero p; final_p_ratio says how far the gap closes again."""
    import numpy as np

    steps = np.array([0, 1, 10, 100, 1000, 10000], float)
    r = {"step": steps, "train": np.array([1.0, 0.9, 0.8, 0.3, 0.01, 0.001]),
         "test": np.array([1.0, 1.0, 1.1, 0.8, 0.2, 0.05]),
         "p_train": np.array([0.0, 0.5, 20, 60, 150, 200]), "p_test": np.array([0.0, 0.1, 22, 50, 100, 186])}
    s = G.summarize_unit(r, l0=1.0)
    assert s["epoch_train_below"] == 100 and s["epoch_test_below"] == 1000
    assert s["min_p_ratio"] == pytest.approx(100 / 150) and s["min_p_ratio_epoch"] == 1000     # not step 1's 0.2
    assert s["final_p_ratio"] == pytest.approx(0.93) and s["p_gap_epoch"] == 100
    assert s["p_test_over_train_max"] == pytest.approx(1.1)
    never = G.summarize_unit(dict(r, train=np.ones(6)), l0=1.0)
    assert math.isnan(never["min_p_ratio"]) and math.isnan(never["min_p_ratio_epoch"])


def test_seed_standard_errors_and_the_ratio_row(tmp_path, monkeypatch):
    """Several seeds: the summary holds NAME_se (s.e. of the seed mean) beside each mean; the figure's third
    row is p_test/p_train with the p_test = p_train line; the caption gives mean ± s.e."""
    import numpy as np

    import telescope.plots.grokking_poly as P
    from telescope.plots import setup_matplotlib

    cfg = resolve_config("grokking-poly", G.Config, "tiny", overrides={"seeds": "3", "epsilons": "0.5",
                                                                       "epochs": "120"})
    sink = MemorySink()
    s = G.run(cfg, sink, RunContext())
    rows = sink.metrics()
    finals = rows[(rows["split"] == "summary") & (rows["name"] == "final_test")]["value"].to_numpy()
    assert len(finals) == 3
    assert s["eps=0.5/final_test"] == pytest.approx(finals.mean())
    assert s["eps=0.5/final_test_se"] == pytest.approx(finals.std(ddof=1) / np.sqrt(3))
    captured = {}
    monkeypatch.setattr(P, "save", lambda fig, out_dir, name: captured.setdefault("fig", fig) and name)
    setup_matplotlib()
    (f,) = P.figures(rows, config_to_dict(cfg), s, tmp_path)
    assert "mean ± s.e. over 3 seeds" in f.caption and "±" in f.caption.split("This run:")[1]
    import re
    assert not re.search(r"(step|at) \d+(\.\d+)?e[+-]", f.caption) and not re.search(r"step \d+\.\d", f.caption)
    narrows = s["eps=0.5/final_p_ratio"] - s["eps=0.5/min_p_ratio"] > P.NARROWING
    assert ("the gap narrows again" in f.caption) == narrows
    ratio_ax = captured["fig"].axes[2]
    labels = [t.get_text() for t in ratio_ax.get_legend().get_texts()]
    assert any(lbl.startswith("p_test / p_train") for lbl in labels) and "p_test = p_train" in labels
    line = next(ln for ln in ratio_ax.get_lines() if ln.get_label().startswith("p_test / p_train"))
    p = rows[(rows["name"] == "smoother/p_eff") & (rows["step"] == cfg.epochs)].pivot_table(
        index="seed", columns="split", values="value")
    assert line.get_ydata()[-1] == pytest.approx((p["test"] / p["train"]).mean())
    import matplotlib.pyplot as plt
    plt.close(captured["fig"])


def test_a_value_missing_in_some_seeds_says_so(monkeypatch, tmp_path):
    """A p gap found in one seed of two: the summary's mean is over that seed, `_seeds` says "1 of 2",
    and the caption and the gap line's legend entry say so."""
    import telescope.plots.grokking_poly as P

    gaps = {0: 1720.0, 1: float("nan")}
    monkeypatch.setattr(G, "run_unit", lambda cfg, eps, seed, unit, progress=None: {
        "p_gap_epoch": gaps[seed], "final_test": 0.1 * (seed + 1)})
    cfg = resolve_config("grokking-poly", G.Config, "tiny", overrides={"seeds": "2", "epsilons": "0.05"})
    s = G.run(cfg, MemorySink(), RunContext())
    assert s["eps=0.05/p_gap_epoch"] == 1720 and s["eps=0.05/p_gap_epoch_seeds"] == "1 of 2"
    assert "eps=0.05/final_test_seeds" not in s and s["eps=0.05/final_test"] == pytest.approx(0.15)
    assert P._num(s, "eps=0.05/p_gap_epoch") == "1720 (in 1 of 2 seeds)"
    assert P._gap_label({"gap_ratio": 1.0}, 1720.0, "1 of 2").endswith("(in 1 of 2 seeds)")
