"""trees-vs-nets: config validation, the network inputs, and the tiny study (the kernel weight
norms are tested in tests/lens/test_kernel_weights.py)."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from telescope.errors import ConfigError
from telescope.experiments import get
from telescope.experiments import trees_vs_nets as tvn
from telescope.experiments.base import RunContext, resolve_config
from telescope.store import MemorySink


@pytest.fixture(autouse=True)
def _one_blas_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="p_grid"):
        resolve_config("trees-vs-nets", tvn.Config, "tiny", overrides={"p_grid": "0.1,0.2"})
    with pytest.raises(ConfigError, match="datasets"):
        resolve_config("trees-vs-nets", tvn.Config, "tiny", overrides={"datasets": "superconductor"})
    with pytest.raises(ConfigError, match="optimizer"):
        resolve_config("trees-vs-nets", tvn.Config, "tiny", overrides={"optimizer": "lbfgs"})
    with pytest.raises(ConfigError, match="nn_inputs"):
        resolve_config("trees-vs-nets", tvn.Config, "tiny", overrides={"nn_inputs": "minmax"})
    with pytest.raises(ConfigError, match="equal search budgets"):
        resolve_config("trees-vs-nets", tvn.Config, "tiny", overrides={"nn_trials": "6"})
    assert get("trees-vs-nets").config_cls is tvn.Config
    for name in tvn.Config.PRESETS:          # every preset searches both models with one budget
        c = resolve_config("trees-vs-nets", tvn.Config, name)
        assert c.gbt_trials == c.nn_trials


def _frame(mse, splits=(0, 1), p_grid=(0.0, 0.5)):
    """Stored final rows: mse[split][model] = MSE per p; one model seed per split; R from fixed norms."""
    rows = []
    for s in splits:
        for model in ("gbt", "nn"):
            base = dict(dataset="houses", split_seed=s, model=model, phase="final", seed=s * 1000)
            for p, v in zip(p_grid, mse[s][model]):
                rows.append(dict(base, step=0, split=f"p={p:g}", name="mse", value=v))
                for t in (1, 2):
                    rows.append(dict(base, step=t, split=f"p={p:g}", name=tvn.KERNEL, value=1.0 + p))
                    rows.append(dict(base, step=t, split=f"p={p:g}", name=tvn.KERNEL_NTK, value=2.0 + p))
            for t in (1, 2):
                rows.append(dict(base, step=t, split="train", name=tvn.KERNEL, value=1.0 + s))
                rows.append(dict(base, step=t, split="train", name=tvn.KERNEL_NTK, value=2.0))
    return pd.DataFrame(rows)


def test_summary_averages_over_outer_splits():
    # split 0: gap 0.1 -> 0.3 (rel 1 -> 3); split 1: gap 0.2 -> 0.1 (rel 1 -> 0.5)
    mse = {0: {"gbt": (1.0, 2.0), "nn": (1.1, 2.3)}, 1: {"gbt": (1.0, 2.0), "nn": (1.2, 2.1)}}
    out = tvn.summarise(_frame(mse), {"p_grid": [0.0, 0.5], "datasets": ["houses"]})
    assert out["houses/split0/p=0.5/rel"] == pytest.approx(3.0)
    assert out["houses/split1/p=0.5/rel"] == pytest.approx(0.5)
    assert out["houses/p=0.5/rel"] == pytest.approx(1.75)
    assert out["houses/p=0.5/rel_se"] == pytest.approx(1.25)            # sd of (3, 0.5) / √2
    assert out["houses/p=0.5/mse_gap"] == pytest.approx(0.2)
    assert out["houses/p=0.5/mse_nn"] == pytest.approx(2.2) and out["houses/p=0.5/mse_nn_se"] == pytest.approx(0.1)
    assert out["houses/splits/n"] == 2 and out["houses/splits/rel_increases"] == 1
    assert out["houses/splits/gbt_beats_nn_at_p0"] == 2
    # R per split = mean_t test / mean_t train: split 0 (1.5 / 1), split 1 (1.5 / 2) -> mean 1.125
    assert out["houses/p=0.5/R_nn"] == pytest.approx(1.125)
    assert out["houses/p=0.5/R_nn_ntk"] == pytest.approx(1.25)
    assert out["houses/check/rel_increases"] and out["houses/check/R_nn_increases"]


def _data_root():
    env = os.environ.get("TELESCOPE_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (root / "tabular" / "houses.csv.gz").exists():
        pytest.skip("no tabular data: set TELESCOPE_DATA to the shared data folder")
    return root


def test_network_inputs_are_gaussianised_on_its_own_training_rows():
    config = resolve_config("trees-vs-nets", tvn.Config, "tiny")
    data = tvn._load("houses", config, RunContext(data_dir=_data_root()), 0)
    x_fit, x_test = data.nn_final
    np.testing.assert_allclose(np.median(x_fit, axis=0), 0, atol=0.05)
    # test rows (irregular ones included) never leave the range the network was trained on
    assert np.all(x_test >= x_fit.min(0) - 1e-12) and np.all(x_test <= x_fit.max(0) + 1e-12)
    assert np.any(data.x_test > data.x_fit.max(0))            # while the GBT's inputs do
    x_tr, x_val = data.nn_search                              # the search refits on train only
    assert np.all(x_val <= x_tr.max(0) + 1e-12)
    std = tvn._load("houses", dataclasses.replace(config, nn_inputs="standard"),
                    RunContext(data_dir=_data_root()), 0)
    assert std.nn_final[1] is std.x_test and std.nn_search[0] is std.x_train


@pytest.fixture(scope="module")
def tiny_run():
    root = _data_root()
    torch.set_num_threads(1)
    config = resolve_config("trees-vs-nets", tvn.Config, "tiny")
    sink = MemorySink()
    summary = tvn.run(config, sink, RunContext(data_dir=root))
    return config, sink, summary


def test_tiny_run_logs_the_metrics_and_shows_bounded_tree_kernels(tiny_run):
    config, sink, summary = tiny_run
    frame = sink.metrics()
    assert {"dataset", "model", "phase", "seed"} <= set(frame.columns)
    final = frame[frame["phase"] == "final"]
    for model in ("gbt", "nn"):
        m = final[final["model"] == model]
        assert set(m[m["name"] == "mse"]["split"]) == {"train"} | {f"p={p:g}" for p in config.p_grid}
        assert (m["name"] == tvn.KERNEL).any()
    for p in config.p_grid:
        key = f"houses/p={p:g}"
        assert summary[f"{key}/R_gbt"] <= 1.0                     # trees: bounded by construction
        assert np.isfinite(summary[f"{key}/mse_nn"]) and np.isfinite(summary[f"{key}/mse_gbt"])
    assert summary["houses/p=0/rel"] == pytest.approx(1.0)
    # irregular inputs push the network's kernel weights beyond anything seen in training
    assert summary["houses/p=0.5/R_nn"] > summary["houses/p=0/R_nn"]
    assert summary["houses/p=0.5/R_nn"] > 1.0
    # GBT kernel norms per tree are 1/sqrt(leaf size): within [1/sqrt(n), 1]
    g = final[(final["model"] == "gbt") & (final["name"] == tvn.KERNEL)]
    assert g["value"].max() <= 1.0 and g["value"].min() >= 1 / np.sqrt(config.max_train + config.n_val)


def test_resume_skips_finished_units_and_gives_the_same_summary(tiny_run):
    config, sink, summary = tiny_run
    again = tvn.run(config, sink, RunContext(data_dir=None))   # no data needed: every unit is done
    assert again == summary


def test_figures_read_stored_results(tiny_run, tmp_path):
    from telescope.experiments.base import config_to_dict
    from telescope.plots import module_for

    config, sink, summary = tiny_run
    figs = module_for("trees-vs-nets").figures(sink.metrics(), config_to_dict(config), summary, tmp_path)
    assert len(figs) == 3
    for f in figs:
        assert (tmp_path / f.filename).stat().st_size > 1000
        assert "paper" in f.caption


def test_sensitivity_table_reads_one_row_per_run(tiny_run):
    from telescope.plots.trees_vs_nets import sensitivity_table

    config, sink, summary = tiny_run
    table = sensitivity_table({"tiny": summary, "empty": {}})
    assert list(table["run"]) == ["tiny"]                      # runs without houses rows are left out
    row = table.iloc[0]
    assert row["rel_plast"].startswith(f"{summary['houses/p=0.5/rel']:+.2f}")
    assert row["rel_rises"] == f"{summary['houses/splits/rel_increases']}/1"
    assert row["R_nn"] == f"{summary['houses/p=0/R_nn']:.2f} → {summary['houses/p=0.5/R_nn']:.2f}"

