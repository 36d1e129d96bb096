"""lazy-rich: config, units and the paper's phenomena on the tiny preset (the closed-form
linearized dynamics: tests/flow/test_linearized.py; the alignments: tests/kernels)."""


import numpy as np
import pytest
import torch

from telescope.errors import ConfigError
from telescope.experiments import get
from telescope.experiments import lazy_rich as L
from telescope.experiments.base import RunContext, config_to_dict, resolve_config
from telescope.plots import module_for
from telescope.store import MemorySink


def test_config_validation_and_units():
    with pytest.raises(ConfigError, match="grok_threshold"):
        resolve_config("lazy-rich", L.Config, "tiny", overrides={"grok_threshold": "1.5"})
    with pytest.raises(ConfigError, match="positive"):
        resolve_config("lazy-rich", L.Config, "tiny", overrides={"alphas": "0,1"})
    cfg = L.Config(alpha=1.0, epsilon=0.02, alphas=(0.5, 1.0), epsilons=(0.02, 0.1), phase_alphas=(1.0, 2.0),
                   phase_epsilons=(0.02,), epochs=100, phase_epochs=50)
    units = {(a, e, sg, t): roles for a, e, sg, t, roles in cfg.units()}
    assert units[(1.0, 0.02, 1.0, 100)] == ("alpha_sweep", "epsilon_sweep", "phase")   # merged, one run
    assert units[(2.0, 0.02, 1.0, 50)] == ("phase",)
    assert len(units) == 4
    assert get("lazy-rich").config_cls is L.Config


def test_sigma_units_sweep_sigma_at_fixed_alpha_and_jointly_at_fixed_alpha_sigma_squared():
    """NOTE [σ sweep]: Fig. 7b (σ at α) and Fig. 7c (α = alpha/σ², so α·σ² is constant)."""
    cfg = L.Config(alpha=1.0, epsilon=0.02, alphas=(), epsilons=(), sigmas=(0.5, 2.0), phase_alphas=(),
                   epochs=100)
    units = {(a, sg): roles for a, e, sg, t, roles in cfg.units()}
    assert units[(1.0, 1.0)] == ("sigma_sweep", "sigma_joint")
    assert units[(1.0, 0.5)] == ("sigma_sweep",) and units[(1.0, 2.0)] == ("sigma_sweep",)
    assert units[(4.0, 0.5)] == ("sigma_joint",) and units[(0.25, 2.0)] == ("sigma_joint",)
    assert all(a * sg ** 2 == 1.0 for (a, sg), roles in units.items() if "sigma_joint" in roles)


def test_an_init_scale_is_the_unit_scale_model_at_alpha_sigma_and_epsilon_sigma():
    """NOTE [σ sweep]: (α, ε, σ) with step η ≡ (ασ, εσ, 1) with step η/σ², exactly."""
    import torch

    from telescope.models.poly import CommitteeMachine, gaussian_quadratic_task

    x, y, xt, _, _ = gaussian_quadratic_task(6, 20, 10, generator=torch.Generator().manual_seed(0))
    alpha, eps, sigma, eta = 0.7, 0.3, 2.5, 3.0
    a = CommitteeMachine(6, 8, epsilon=eps, alpha=alpha, init_scale=sigma,
                         generator=torch.Generator().manual_seed(1))
    b = CommitteeMachine(6, 8, epsilon=eps * sigma, alpha=alpha * sigma,
                         generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for _ in range(30):
            a.weight -= eta * a.mse_gradient(x, a(x) - y)
            b.weight -= eta / sigma ** 2 * b.mse_gradient(x, b(x) - y)
        assert torch.allclose(a(xt), b(xt), rtol=0, atol=1e-10)
        assert torch.allclose(a.weight, sigma * b.weight, rtol=0, atol=1e-10)
        assert a.relative_change() == pytest.approx(b.relative_change(), rel=1e-10)


def test_analytic_solution_is_an_exact_minimiser_of_the_population_loss():
    """NOTE [init interpolation]: rows ±β/√(αε) give M = ββᵀ/(αε), w̄ = 0: eq. 6 is exactly 0."""
    import torch

    from telescope.models.poly import CommitteeMachine

    beta = torch.randn(7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for width, alpha, eps in ((2, 1.0, 0.25), (6, 0.5, 0.1)):
        model = CommitteeMachine(7, width, epsilon=eps, alpha=alpha, centred=False)
        with torch.no_grad():
            model.weight.copy_(L.analytic_solution(beta, width, alpha, eps))
        dec = model.loss_decomposition(beta)
        assert dec["total"] < 1e-24 and dec["linear"] < 1e-24
    with pytest.raises(ConfigError, match="even width"):
        L.analytic_solution(beta, 3, 1.0, 0.25)


@pytest.fixture(scope="module")
def tiny():
    cfg = resolve_config("lazy-rich", L.Config, "tiny")
    sink = MemorySink()
    summary = L.run(cfg, sink, RunContext())
    return cfg, sink, summary


def _unit(frame, alpha, eps):
    return frame[(frame["model"] == "committee") & np.isclose(frame["alpha"], alpha)
                 & np.isclose(frame["epsilon"], eps) & (frame["sigma"] == 1.0)]


def test_tiny_larger_alpha_groks_later(tiny):
    cfg, _, s = tiny
    small, large = (f"alpha={a:g}/eps={cfg.epsilon:g}" for a in cfg.alphas)
    assert s[f"{small}/delay"] is not None and s[f"{large}/delay"] is not None
    assert s[f"{large}/delay"] > 2 * s[f"{small}/delay"] > 0
    assert s[f"{large}/final_test"] > s[f"{small}/final_test"]            # lazier ends worse (Fig. 3a/7a)
    for key in (small, large):                                           # the network beats its initial kernel
        assert s[f"{key}/final_test"] < 0.75 * s[f"{key}/kernel_regression_mse"]
        assert s[f"{key}/final_linearized_test"] > s[f"{key}/kernel_regression_mse"] * 0.99
        assert s[f"{key}/weight_norm_ratio"] > 1.5                       # no weight decay, norm grows


def test_tiny_smaller_epsilon_groks_later(tiny):
    cfg, _, s = tiny
    lo, hi = (f"alpha={cfg.alpha:g}/eps={e:g}" for e in cfg.epsilons)
    assert s[f"{lo}/delay"] > s[f"{hi}/delay"]


def test_tiny_early_test_rise_is_linear_mode_power_and_alignment_rises(tiny):
    cfg, sink, s = tiny
    frame = sink.metrics()
    unit = _unit(frame, cfg.alphas[-1], cfg.epsilon)
    key = f"alpha={cfg.alphas[-1]:g}/eps={cfg.epsilon:g}"
    assert s[f"{key}/max_test"] > 1.05 * s[f"{key}/initial_test"]      # the test loss first rises
    pop = unit[unit["split"] == "population"].pivot_table(index="step", columns="name", values="value")
    peak = s[f"{key}/max_test_epoch"]
    near = pop.index[np.argmin(np.abs(pop.index - peak))]
    assert pop.loc[0, "decomposition/linear"] == 0.0
    # at the test-loss peak the linear-mode power is what rose; the other two terms did not
    rise = pop.loc[near] - pop.loc[0]
    assert rise["decomposition/linear"] > 0.5 * (rise["decomposition/total"])
    assert rise["decomposition/misalignment"] < rise["decomposition/linear"]
    # the population loss tracks the test MSE on the same steps (test-set sampling noise only)
    test = unit[(unit["split"] == "test") & (unit["name"] == "mse")].set_index("step")["value"]
    common = pop.index.intersection(test.index)
    rel = (pop.loc[common, "decomposition/total"] - test.loc[common]).abs() / test.loc[common]
    assert rel.max() < 0.5
    align = unit[(unit["split"] == "test") & (unit["name"] == "ntk/alignment_code")].sort_values("step")["value"]
    assert align.iloc[-1] > 1.2 * align.iloc[0]


def test_tiny_sigma_and_interpolation_units(tiny):
    cfg, sink, s = tiny
    # a larger init scale at the same α is less lazy in feature learning (α·σ² = 2 vs 0.5): groks sooner
    at = f"alpha={cfg.alpha:g}/eps={cfg.epsilon:g}"
    assert s[f"{at}/sigma=2/delay"] < s[f"{at}/delay"]
    assert s[f"{at}/sigma=2/weight_norm_ratio"] < s[f"{at}/weight_norm_ratio"]
    # the joint unit α = alpha/σ² exists and has its own prefix
    assert f"alpha={cfg.alpha / 4:g}/eps={cfg.epsilon:g}/sigma=2/final_test" in s
    # W₀ 20 % of the way to the analytic solution: a smaller bump and a lower final loss than s = 0
    assert s["interp/s=0.2/test_bump"] < s["interp/s=0/test_bump"] + 1e-12
    assert s["interp/s=0.2/final_test"] < 0.5 * s["interp/s=0/final_test"]
    frame = sink.metrics()
    interp = frame[frame["model"] == "interp"]
    assert set(interp["mix"]) == {0.0, 0.2} and (interp["epsilon"] == cfg.interp_epsilon).all()


def test_tiny_modular_fits_train_set_and_summary_is_json(tiny):
    import json

    cfg, sink, s = tiny
    assert s["modular/scale=1/final_train_acc"] == 1.0
    json.dumps(s, allow_nan=False)
    frame = sink.metrics()
    mod = frame[frame["model"] == "modular"]
    wn = mod[mod["name"] == "weight_norm"].sort_values("step")["value"]
    assert wn.iloc[-1] > wn.iloc[0]


def test_tiny_figures(tiny, tmp_path):
    from telescope.plots import module_for

    cfg, sink, s = tiny
    figs = module_for("lazy-rich").figures(sink.metrics(), config_to_dict(cfg), s, tmp_path)
    names = {f.filename for f in figs}
    assert {"lazy_rich_headline.png", "lazy_rich_alpha.png", "lazy_rich_epsilon.png", "lazy_rich_modular.png",
            "lazy_rich_sigma.png", "lazy_rich_interpolation.png"} <= names
    headline = next(f for f in figs if f.filename == "lazy_rich_headline.png")
    assert "separate axes" in headline.caption and "differ only in the normalisation" in headline.caption
    for f in figs:
        assert (tmp_path / f.filename).stat().st_size > 10_000 and "paper" in f.caption


def test_tiny_logs_effective_parameters(tiny):
    cfg, sink, _ = tiny
    frame = sink.metrics()
    p = frame[(frame["name"] == "smoother/p_eff") & (frame["model"] == "committee")]
    assert set(p["split"]) == {"train", "test"}
    assert (p[p["step"] == 0]["value"] == 0).all()
    last = p[p["step"] == p["step"].max()]
    assert (last["value"] > 1).all() and (last[last["split"] == "train"]["value"] <= cfg.n_train + 1e-6).all()


def test_tiny_effective_parameters_carry_their_self_check(tiny):
    """Every logged p comes with the smoother's self-check (NOTE [smoother validity]): a flag per
    log point that is the core rule applied to the logged residual and telescoping error. On this
    full-batch GD run the smoother is the paper's construction and stays readable."""
    from telescope.lens import self_check_valid

    _, sink, _ = tiny
    frame = sink.metrics()
    frame = frame[frame["model"] == "committee"]
    wide = frame.pivot_table(index=["step", "split", "alpha", "epsilon", "sigma"], columns="name",
                             values="value").dropna(subset=["smoother/p_eff"])
    assert len(wide) > 0 and wide["smoother/valid"].notna().all()
    res, err = wide["smoother/residual"].to_numpy(), wide["telescope/abs_err"].to_numpy()
    flags = wide["smoother/valid"].to_numpy() == 1.0
    # the floor is 0.02·(max y − min y) of the run's targets: between the rule without a floor and
    # the rule with a generous one, and all flags set on this run
    assert (flags >= self_check_valid(res, err, 0.0)).all()
    assert (flags <= self_check_valid(res, err, 1e3)).all()
    assert flags.all()


# ----------------------------------------------------------------------------- MNIST (Fig. 6a)


def _hand_forward(weights, x, alpha):
    """NOTE [MNIST laziness] written out: h = relu(W h / √fan_in) per hidden layer, f = α·h Wₒᵀ/N."""
    h = x
    for w in weights[:-1]:
        h = torch.clamp(h @ w.T, min=0) / w.shape[1] ** 0.5
    return alpha * h @ weights[-1].T / weights[-1].shape[1]


def test_lazy_mlp_is_kumars_parametrisation_linear_in_alpha_and_homogeneous_in_the_init_scale():
    x = torch.rand(7, 12, dtype=torch.float64)
    make = lambda alpha, scale: L.LazyMLP(12, 9, 4, hidden_layers=3, alpha=alpha, init_scale=scale,
                                          generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    base = make(1.0, 1.0)
    assert [tuple(w.shape) for w in base.weights] == [(9, 12), (9, 9), (9, 9), (4, 9)]   # no biases
    f = base(x)
    torch.testing.assert_close(f, _hand_forward(list(base.weights), x, 1.0), rtol=1e-12, atol=0)
    torch.testing.assert_close(make(0.01, 1.0)(x), 0.01 * f, rtol=1e-12, atol=0)        # output × α
    # ReLU and no biases: scaling every layer's init by c scales f by c^(layers) = c^4
    torch.testing.assert_close(make(1.0, 150.0)(x), 150.0 ** 4 * f, rtol=1e-10, atol=0)
    wide = L.LazyMLP(400, 300, 10, alpha=1.0, init_scale=150.0, generator=torch.Generator().manual_seed(1))
    for w in wide.weights:                                            # Kaiming × 150
        assert abs(float(w.detach().std()) / (150 * (2 / w.shape[1]) ** 0.5) - 1) < 0.03
    with pytest.raises(ConfigError, match="alpha"):
        L.LazyMLP(4, 4, 2, alpha=0.0)


def _clusters(n, gen):
    centres = torch.eye(3, 8, dtype=torch.float32) * 3
    labels = torch.arange(n) % 3
    x = centres[labels] + 0.3 * torch.randn(n, 8, generator=gen)
    return x, torch.nn.functional.one_hot(labels, 3).float()


def test_mnist_unit_thresholds_are_read_from_the_logged_accuracies():
    gen = torch.Generator().manual_seed(0)
    data = (*_clusters(60, gen), *_clusters(60, gen))
    cfg = L.Config(mnist_width=16, mnist_hidden_layers=2, mnist_init_scale=1.0, mnist_lr=1e-2, mnist_batch=20,
                   mnist_steps=300, mnist_log_points=30, mnist_train_acc=0.95, mnist_test_acc=0.9)
    sink = MemorySink()
    with sink.unit("mnist/alpha=1", model="mnist", alpha=1.0) as unit:
        out = L.run_mnist(cfg, data, 1.0, unit)
    frame = sink.metrics()
    err = frame[frame["name"] == "error"].pivot_table(index="step", columns="split", values="value")
    assert err.index[-1] == 300 and err.loc[0, "train"] > 0.3                    # starts untrained
    first_train = err.index[(1 - err["train"]) >= 0.95][0]
    first_test = err.index[(1 - err["test"]) >= 0.9][0]
    assert out["step_train_acc"] == first_train and out["step_test_acc"] == first_test
    assert out["delay"] == max(0, first_test - first_train)
    assert out["final_train_acc"] == pytest.approx(1 - err["train"].iloc[-1])
    change = frame[frame["name"] == "param/relative_change"].sort_values("step")["value"]
    assert change.iloc[0] == 0 and change.iloc[-1] > 0


def test_mnist_preset_leaves_the_other_units_out_and_tiny_mnist_run_draws_the_figure(data_dir, monkeypatch, tmp_path):
    mnist = resolve_config("lazy-rich", L.Config, "mnist")
    assert mnist.units() == [] and mnist.mnist_alphas[0] == 1e-4 and not mnist.modular_scales
    assert (mnist.mnist_n_train, mnist.mnist_n_test, mnist.mnist_width, mnist.mnist_init_scale) == (1000, 2000, 200, 150)
    assert not resolve_config("lazy-rich", L.Config, "tiny").mnist_alphas                # tiny unchanged
    full = resolve_config("lazy-rich", L.Config, "mnist-paper")
    assert full.units() == [] and full.mnist_steps == 250000 and 0.5 in full.mnist_alphas
    monkeypatch.setenv("TELESCOPE_DATA", str(data_dir))
    cfg = resolve_config("lazy-rich", L.Config, "mnist", overrides={
        "mnist_alphas": "0.0001,0.05", "mnist_steps": "20", "mnist_n_train": "50", "mnist_n_test": "60",
        "mnist_width": "16", "mnist_log_points": "5"})
    x, _, xt, _ = L.mnist_task(cfg)
    assert x.shape == (50, 784) and xt.shape == (60, 784) and float(x.max()) <= 1.0
    assert not (torch.cdist(x, xt) == 0).any()                                   # other images as test
    sink = MemorySink()
    summary = L.run(cfg, sink, RunContext())
    assert {"mnist/alpha=0.0001/final_test_acc", "mnist/alpha=0.05/delay"} <= set(summary)
    figs = module_for("lazy-rich").figures(sink.metrics(), config_to_dict(cfg), summary, tmp_path)
    fig = [f for f in figs if f.filename.endswith("lazy_rich_mnist.png")]
    assert len(fig) == 1 and (tmp_path / "lazy_rich_mnist.png").exists()
    assert "250,000" in fig[0].caption and "α = 0.05" in fig[0].caption
