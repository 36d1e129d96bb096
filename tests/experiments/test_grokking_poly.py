"""grokking-poly: the closed-form smoother against the library's Lens + SmootherSpec, and the
paper's ordering in ε on the tiny preset."""

import json

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
    assert "mean ± s.e. bands" in fig.caption and "passes the self-check at every logged step" in fig.caption

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
