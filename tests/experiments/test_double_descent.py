import dataclasses

import numpy as np
import pytest
import torch

from telescope.errors import ConfigError
from telescope.experiments import base, double_descent as dd, get
from telescope.measures import PEAK_REL, find_peak
from telescope.store import MemorySink

TINY = dd.Config(**dd.Config.PRESETS["tiny"])


@pytest.fixture(scope="module")
def tiny_run():
    """The tiny preset end to end (smoother included), run once for the tests below.

    One thread: these tensors are tiny, and on a busy shared machine thread hand-offs
    cost more than the arithmetic (measured: 3 s of CPU, several times that in wall time
    with two threads under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sink = MemorySink()
        summary = dd.run(TINY, sink, base.RunContext())
    finally:
        torch.set_num_threads(threads)
    return summary, sink.metrics()


def test_registered_with_presets():
    exp = get("double-descent")
    assert exp.config_cls is dd.Config
    for preset in ("tiny", "quick", "paper"):
        cfg = base.resolve_config("double-descent", dd.Config, preset)
        assert cfg.momentum == 0.95 and cfg.batch_size == 100
    paper = base.resolve_config("double-descent", dd.Config, "paper")
    assert paper.lr == 0.0025 and paper.max_epochs == 30000 and paper.patience == 500 and paper.tol == 1e-4
    assert set(paper.datasets) == {"cifar", "mnist_noisy", "mnist", "mnist1d_noisy"}
    assert paper.widths == dd.PAPER_WIDTHS and paper.n_train == 1000
    quick = base.resolve_config("double-descent", dd.Config, "quick")
    widths = np.array(quick.widths)
    threshold = (quick.n_train - 1) / (quick.image_size ** 2 + 2)
    assert (widths < threshold).sum() >= 2 and (widths > 10 * threshold).sum() >= 2   # straddles it
    cfg = base.resolve_config("double-descent", dd.Config, "tiny", overrides={"datasets": "cifar,mnist"})
    assert cfg.datasets == ("cifar", "mnist")


def test_bad_config_is_refused_with_the_valid_names():
    with pytest.raises(ConfigError, match="mnist_noisy"):
        base.resolve_config("double-descent", dd.Config, "tiny", overrides={"datasets": "imagenet"})
    with pytest.raises(ConfigError, match="widths"):
        base.resolve_config("double-descent", dd.Config, "tiny", overrides={"widths": "0,3"})


def test_tiny_train_mse_falls_with_width_and_metrics_are_final(tiny_run):
    summary, frame = tiny_run
    table = dd.final_table(frame).sort_values("width")
    assert table["width"].tolist() == [2, 8, 32]
    train = table["train/mse"].to_numpy()
    assert np.all(np.diff(train) < 0), train                 # more width fits the noisy labels better
    assert table["train/n_params"].tolist() == [66 * w + 1 for w in (2, 8, 32)]
    assert ((table["train/stop/epochs"] >= 1) & (table["train/stop/epochs"] <= TINY.max_epochs)).all()
    assert summary["digits_noisy/train_mse_widest"] == pytest.approx(train[-1])


def test_stopping_rule_interpolation_and_plateau():
    easy = dataclasses.replace(TINY, datasets=("digits",), widths=(256,), lr=0.05, max_epochs=300,
                               patience=300, smoother=False)
    sink = MemorySink()
    dd.run(easy, sink, base.RunContext())
    row = dd.final_table(sink.metrics()).iloc[0]
    assert row["train/stop/reason"] == dd.STOP_REASONS["interpolated"]
    assert row["train/error"] == 0.0 and row["train/stop/epochs"] < 300
    # a tolerance no step can beat: the first epoch improves on +inf, the next one does not
    flat = dataclasses.replace(easy, tol=10.0, patience=1, stop_at_interpolation=False)
    sink = MemorySink()
    dd.run(flat, sink, base.RunContext())
    row = dd.final_table(sink.metrics()).iloc[0]
    assert row["train/stop/reason"] == dd.STOP_REASONS["plateau"] and row["train/stop/epochs"] == 2


def test_peak_detector_finds_a_peak_and_says_no_peak_on_a_monotone_curve():
    widths = np.array([1, 2, 4, 8, 16, 32])
    shape = find_peak(widths, np.array([0.3, 0.2, 0.5, 0.25, 0.15, 0.1]))
    assert shape["peak"] == 1.0 and shape["peak_width"] == 4
    assert shape["rise"] == pytest.approx(0.6) and shape["fall"] == pytest.approx(0.8)
    # order of the input does not matter
    perm = np.array([5, 0, 3, 1, 4, 2])
    assert find_peak(widths[perm], np.array([0.3, 0.2, 0.5, 0.25, 0.15, 0.1])[perm])["peak_width"] == 4
    mono = find_peak(widths, np.array([0.5, 0.4, 0.3, 0.2, 0.15, 0.1]))
    assert mono["peak"] == 0.0 and np.isnan(mono["peak_width"])
    # clean MNIST 3/5 of docs/double-descent.md (one seed): bumps of at most 9%, no peak
    clean = find_peak([1, 2, 4, 6, 8, 12, 20, 50, 200],
                         [0.081, 0.068, 0.064, 0.069, 0.050, 0.053, 0.055, 0.048, 0.043])
    assert clean["peak"] == 0.0 and 0 < clean["rise"] < PEAK_REL
    # noisy MNIST 3/5 of the same run: the peak at h = 8 (rise 51%, fall 38%)
    noisy = find_peak([1, 2, 4, 6, 8, 12, 20, 50, 200],
                         [0.118, 0.123, 0.157, 0.234, 0.242, 0.181, 0.205, 0.199, 0.151])
    assert noisy["peak"] == 1.0 and noisy["peak_width"] == 8
    assert noisy["rise"] == pytest.approx(0.124 / 0.242) and noisy["fall"] == pytest.approx(0.091 / 0.242)


def test_peak_detector_asks_for_more_than_two_standard_errors_with_seeds():
    widths, curve = [1, 2, 4, 8, 16], [0.20, 0.18, 0.30, 0.19, 0.17]       # rise 0.12, fall 0.13
    assert find_peak(widths, curve)["peak"] == 1.0
    assert find_peak(widths, curve, se=[0.01] * 5)["peak"] == 1.0       # 2·√2·0.01 = 0.028 < 0.12
    noisy = find_peak(widths, curve, se=[0.05] * 5)                     # 2·√2·0.05 = 0.14 > 0.12
    assert noisy["peak"] == 0.0 and noisy["rise"] == pytest.approx(0.4)
    assert find_peak([1, 2], [0.3, 0.2])["peak"] == 0.0                  # no interior width


def test_constant_predictor_mse():
    from telescope.data import Split

    y_train = torch.tensor([0.0, 1.0, 1.0, 1.0])              # ȳ = 0.75
    y_test = torch.tensor([0.0, 1.0])
    x = torch.zeros(4, 2)
    split = Split(x, y_train, x[:2], y_test)
    assert dd.constant_test_mse(split) == pytest.approx((0.75 ** 2 + 0.25 ** 2) / 2)


def test_figures_from_stored_metrics(tiny_run, tmp_path):
    from telescope.plots import module_for

    summary, frame = tiny_run
    figs = module_for("double-descent").figures(frame, base.config_to_dict(TINY), summary, tmp_path)
    assert len(figs) == 1 and (tmp_path / figs[0].filename).stat().st_size > 5000
    caption = figs[0].caption
    assert "digits 3/5, 20% noise" in caption and "p_test largest at width" in caption
    assert "one seed (no bands" in caption and "s.e. over" not in caption          # one seed: no "± s.e."
    assert "residual" in caption and "constant predictor" in caption
    # the caption claims a peak exactly when the detector found one
    assert ("has a peak at width" in caption) == (summary["digits_noisy/test_mse_peak"] == 1.0)
    assert ("has no peak" in caption) == (summary["digits_noisy/test_mse_peak"] == 0.0)


def test_tiny_summary_has_the_constant_predictor_and_a_peak_verdict(tiny_run):
    summary, frame = tiny_run
    table = dd.final_table(frame).sort_values("width")
    assert 0.2 < summary["digits_noisy/constant_test_mse"] <= 0.25 + 1e-12   # ≈ balanced {0,1} test labels
    assert summary["digits_noisy/widths_better_than_constant"] == int(
        (table["test/mse"] < summary["digits_noisy/constant_test_mse"]).sum())
    assert summary["digits_noisy/test_mse_peak"] in (0.0, 1.0) and summary["digits_noisy/seeds"] == 1
    assert ("digits_noisy/test_mse_peak_width" in summary) == (summary["digits_noisy/test_mse_peak"] == 1.0)


def test_captions_with_seeds_say_mean_and_se(tmp_path):
    """Two seeds of a stored frame: bands and "mean ± s.e. over 2 seeds"; a CIFAR-like curve
    worse than the constant predictor at every width is said to be so."""
    from telescope.plots import module_for

    rows = []
    for seed in (0, 1):
        for w, mse in ((1, 0.30), (2, 0.40), (4, 0.30), (8, 0.29)):
            for split, name, value in (("test", "mse", mse + 0.01 * seed), ("train", "mse", 0.1),
                                       ("train", "n_params", 66 * w + 1), ("train", "n_train", 200)):
                rows.append(dict(step=10, split=split, name=name, value=value, dataset="cifar", width=w,
                                 seed=seed, method="exact"))
    import pandas as pd

    frame = pd.DataFrame(rows)
    summary = dd.summarize(frame, dataclasses.replace(TINY, datasets=("cifar",)), {"cifar": 0.25})
    assert summary["cifar/test_mse_peak"] == 1.0 and summary["cifar/test_mse_peak_width"] == 2
    assert summary["cifar/widths_better_than_constant"] == 0 and summary["cifar/seeds"] == 2
    cfg = base.config_to_dict(dataclasses.replace(TINY, datasets=("cifar",)))
    figs = module_for("double-descent").figures(frame, cfg, summary, tmp_path)
    caption = figs[0].caption
    assert "mean ± s.e. over 2 seeds" in caption and "has a peak at width 2" in caption
    assert "NO width beats it" in caption





def test_figure_presets_are_the_paper_settings_one_figure_each():
    paper = base.resolve_config("double-descent", dd.Config, "paper")
    for preset, datasets in (("fig3", ("cifar",)), ("fig9", ("mnist_noisy", "mnist")), ("fig10", ("mnist1d_noisy",))):
        cfg = base.resolve_config("double-descent", dd.Config, preset)
        assert cfg.datasets == datasets and cfg.n_train == 1000 and cfg.seeds == 4
        assert dataclasses.replace(cfg, datasets=paper.datasets) == paper
    q1d = base.resolve_config("double-descent", dd.Config, "quick-1d")
    assert q1d.datasets == ("mnist1d_noisy",) and q1d.seeds == 2 and q1d.grid("mnist1d_noisy")[1:] == (0.01, 500)


def test_tiny_effective_parameters_grow_with_width(tiny_run):
    summary, frame = tiny_run
    table = dd.final_table(frame).sort_values("width")
    p_train = table["train/smoother/p_eff"].to_numpy()
    assert np.all(np.diff(p_train) > 0), p_train
    assert (p_train > 0).all() and (p_train <= TINY.n_train + 1e-6).all()   # p_train ≤ n for these nets
    # the smoother reproduces the telescoping model to within the telescoping error
    assert (table["test/smoother/residual"] <= 10 * table["test/telescope/abs_err"] + 1e-4).all()
    assert summary["digits_noisy/p_train_monotone_fraction"] == 1.0


@pytest.fixture(scope="module")
def both_run():
    """Exact and sketched smoother on the same tiny networks (digits 3/5, noisy), one thread."""
    cfg = dataclasses.replace(TINY, widths=(2, 16), max_epochs=15, methods=("exact", "sketch"), probes=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sink = MemorySink()
        summary = dd.run(cfg, sink, base.RunContext())
    finally:
        torch.set_num_threads(threads)
    return cfg, summary, sink.metrics()


def test_exact_and_sketch_follow_the_same_network_and_agree(both_run):
    cfg, summary, frame = both_run
    table = dd.final_table(frame)
    assert sorted(set(table["method"])) == ["exact", "sketch"] and len(table) == 4
    ex = table[table["method"] == "exact"].set_index("width").sort_index()
    sk = table[table["method"] == "sketch"].set_index("width").sort_index()
    # the same seed trains the same network: identical MSE, identical f̃ (exact c and s·y in both)
    np.testing.assert_allclose(sk["test/mse"], ex["test/mse"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(sk["test/telescope/abs_err"], ex["test/telescope/abs_err"], rtol=0, atol=1e-12)
    assert summary["digits_noisy/sketch_vs_exact_test_mse_max_diff"] <= 1e-12
    for split in ("train", "test"):
        e, s, se = ex[f"{split}/smoother/p_eff"], sk[f"{split}/smoother/p_eff"], sk[f"{split}/smoother/p_eff_se"]
        assert (se > 0).all() and (se < 0.5 * s).all()
        assert (np.abs(s - e) <= 4 * se).all(), (split, e.tolist(), s.tolist(), se.tolist())
        assert f"{split}/smoother/p_eff_se" not in ex or ex[f"{split}/smoother/p_eff_se"].isna().all()
    assert summary["digits_noisy/sketch_p_train_within_4se_fraction"] == 1.0
    assert "digits_noisy/sketch/p_train_widest" in summary and "digits_noisy/p_train_widest" in summary


def test_overlay_figure_shows_both_methods(both_run, tmp_path):
    from telescope.plots import module_for

    cfg, summary, frame = both_run
    figs = module_for("double-descent").figures(frame, base.config_to_dict(cfg), summary, tmp_path)
    assert len(figs) == 1 and (tmp_path / figs[0].filename).stat().st_size > 5000
    assert "sketched smoother" in figs[0].caption and "Sketch vs exact" in figs[0].caption


def test_methods_and_full_preset_are_validated():
    with pytest.raises(ConfigError, match="methods"):
        base.resolve_config("double-descent", dd.Config, "tiny", overrides={"methods": "exact,fast"})
    with pytest.raises(ConfigError, match="probes"):
        base.resolve_config("double-descent", dd.Config, "tiny", overrides={"probes": "1"})
    full = base.resolve_config("double-descent", dd.Config, "full")
    assert full.methods == ("sketch",) and full.n_train == 5000 and full.datasets == ("mnist_all_noisy",)
    qa = base.resolve_config("double-descent", dd.Config, "quick-all")
    assert set(qa.datasets) == {"mnist_noisy", "mnist", "cifar", "mnist1d_noisy"}
    assert qa.grid("cifar")[1] == 0.0025 and qa.grid("mnist_noisy")[1] == qa.lr == 0.005
    assert qa.grid("mnist1d_noisy")[1:] == (0.01, 500)
    assert dataclasses.replace(qa, lr_cifar=0.0).grid("cifar")[1] == qa.lr       # 0: cifar uses lr


def test_mnist_all_task_uses_every_digit(tmp_path):
    import os

    from telescope.data.images import digit_group_task

    root = os.environ.get("TELESCOPE_DATA")
    if not root:
        pytest.skip("TELESCOPE_DATA not set")
    split = digit_group_task(dd.DIGITS_5_TO_9, n_train=400, n_test=100, seed=1, label_noise=0.25, root=root)
    assert split.x_train.shape == (400, 64) and split.x_test.shape == (100, 64)
    assert split.y_test.mean() == 0.5                      # balanced in the binary labels
    assert 0.0 <= float(split.x_train.min()) and float(split.x_train.max()) <= 1.0
    clean = digit_group_task(dd.DIGITS_5_TO_9, n_train=400, n_test=100, seed=1, label_noise=0.0, root=root)
    assert int((clean.y_train != split.y_train).sum()) == 100          # exactly 25% flipped
    torch.testing.assert_close(clean.x_train, split.x_train)
