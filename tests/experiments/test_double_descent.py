import dataclasses

import numpy as np
import pytest
import torch

from telescope.errors import ConfigError
from telescope.experiments import base, double_descent as dd, get
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


def test_double_descent_shape_finds_the_interior_peak():
    widths = np.array([1, 2, 4, 8, 16, 32])
    shape = dd.double_descent_shape(widths, np.array([0.3, 0.2, 0.5, 0.25, 0.15, 0.1]))
    assert shape["peak_width"] == 4 and shape["rise"] == pytest.approx(0.6) and shape["fall"] == pytest.approx(0.8)
    mono = dd.double_descent_shape(widths, np.array([0.5, 0.4, 0.3, 0.2, 0.15, 0.1]))
    assert mono["rise"] < 0                                   # no peak: "rise" into it is negative


def test_figures_from_stored_metrics(tiny_run, tmp_path):
    from telescope.plots import module_for

    summary, frame = tiny_run
    figs = module_for("double-descent").figures(frame, base.config_to_dict(TINY), summary, tmp_path)
    assert len(figs) == 1 and (tmp_path / figs[0].filename).stat().st_size > 5000
    assert "digits 3/5, 20% noise" in figs[0].caption and "p_test peaks at width" in figs[0].caption


def test_tiny_effective_parameters_grow_with_width(tiny_run):
    summary, frame = tiny_run
    table = dd.final_table(frame).sort_values("width")
    p_train = table["train/smoother/p_eff"].to_numpy()
    assert np.all(np.diff(p_train) > 0), p_train
    assert (p_train > 0).all() and (p_train <= TINY.n_train + 1e-6).all()   # p_train ≤ n for these nets
    # the smoother reproduces the telescoping model to within the telescoping error
    assert (table["test/smoother/residual"] <= 10 * table["test/telescope/abs_err"] + 1e-4).all()
    assert summary["digits_noisy/p_train_monotone_fraction"] == 1.0
