"""Figures of the double-descent study (paper Fig. 3, 9, 10): MSE and effective parameters vs width."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

# What the paper reports per data setting (digest §5.1–5.3, §9 facts 6–9).
PAPER = {
    "cifar": "Fig. 3 (true CIFAR-10): test MSE rises towards the interpolation threshold and falls again past it; "
             "train MSE falls monotonically; p_train rises monotonically while p_test falls past the threshold.",
    "mnist_noisy": "Fig. 9 left: with 20% label noise the double-descent shape appears, and the post-threshold "
                   "test improvement coincides with p_train and p_test diverging.",
    "mnist": "Fig. 9 right: without label noise no deterioration of test error at any width; train and test "
             "error improve monotonically.",
    "mnist1d_noisy": "Fig. 10: the drop in test error past the threshold comes with a decrease of p_test as "
                     "width grows.",
}
TITLES = {
    "cifar": "CIFAR-10 cat/dog (JPEG-derived)", "mnist_noisy": "MNIST 3/5, 20% noise", "mnist": "MNIST 3/5",
    "mnist1d_noisy": "MNIST-1D 0/1, 15% noise", "digits_noisy": "digits 3/5, 20% noise", "digits": "digits 3/5",
}


def final_values(metrics: pd.DataFrame) -> pd.DataFrame:
    """Last logged value of every (dataset, width, seed, split, name): the end of training."""
    last = metrics.sort_values("step").groupby(["dataset", "width", "seed", "split", "name"]).tail(1)
    return last


def _curve(last: pd.DataFrame, dataset: str, split: str, name: str) -> pd.DataFrame:
    part = last[(last["dataset"] == dataset) & (last["split"] == split) & (last["name"] == name)]
    g = part.groupby("width")["value"]
    out = pd.DataFrame({"mean": g.mean(), "se": g.std(ddof=1) / np.sqrt(g.count())}).reset_index()
    out["se"] = out["se"].fillna(0.0)
    return out.sort_values("width")


def _threshold_width(last: pd.DataFrame, dataset: str) -> float | None:
    """Width where the raw parameter count (d + 2)·h + 1 equals n (interpolation threshold)."""
    sub = last[(last["dataset"] == dataset) & (last["split"] == "train")]
    p = sub[sub["name"] == "n_params"].groupby("width")["value"].mean()
    n = sub[sub["name"] == "n_train"]["value"]
    if p.empty or n.empty:
        return None
    widths = p.index.to_numpy(dtype=float)
    if len(widths) < 2:
        return None
    per_unit = (p.iloc[-1] - p.iloc[0]) / (widths[-1] - widths[0])       # d + 2
    return float((float(n.iloc[0]) - (p.iloc[0] - per_unit * widths[0])) / per_unit)


def _describe(summary: dict, dataset: str) -> str:
    get = lambda k: summary.get(f"{dataset}/{k}")  # noqa: E731
    parts = []
    if get("test_mse_peak_width") is not None:
        parts.append(f"test MSE peaks at width {get('test_mse_peak_width'):g} (rise into the peak "
                     f"{100 * get('test_mse_rise_into_peak'):.0f}%, fall after it {100 * get('test_mse_fall_after_peak'):.0f}% "
                     f"of the peak value)")
    if get("p_train_monotone_fraction") is not None:
        parts.append(f"p_train non-decreasing on {100 * get('p_train_monotone_fraction'):.0f}% of width steps, "
                     f"p_test peaks at width {get('p_test_peak_width'):g} ({get('p_test_peak'):.1f}) and ends at "
                     f"{get('p_test_widest'):.1f} vs p_train {get('p_train_widest'):.1f} at the widest net")
        if get("telescope_abs_err_max") is not None:
            parts.append(f"largest mean |f − f̃| on test over the widths {get('telescope_abs_err_max'):.3g} "
                         f"(smoother residual {get('smoother_residual_max'):.3g}): p describes the network only "
                         "to that accuracy")
    else:
        parts.append("effective parameters were not tracked in this run")
    return f"{TITLES.get(dataset, dataset)}: " + "; ".join(parts) + "."


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    last = final_values(metrics)
    datasets = [d for d in config["datasets"] if d in set(last["dataset"])]
    if not datasets:
        return []
    has_p = bool((last["name"] == "smoother/p_eff").any())
    rows = 2 if has_p else 1
    fig, axes = plt.subplots(rows, len(datasets), figsize=(3.4 * len(datasets), 2.8 * rows), squeeze=False,
                             sharex="col")
    for col, dataset in enumerate(datasets):
        threshold = _threshold_width(last, dataset)
        ax = axes[0][col]
        for split, color in (("train", "tab:blue"), ("test", "tab:red")):
            c = _curve(last, dataset, split, "mse")
            ax.plot(c["width"], c["mean"], "o-", ms=3, color=color, label=f"{split} MSE")
            ax.fill_between(c["width"], c["mean"] - c["se"], c["mean"] + c["se"], color=color, alpha=0.2, lw=0)
        ax.set_title(TITLES.get(dataset, dataset))
        if col == 0:
            ax.set_ylabel("MSE at end of training")
        if has_p:
            axp = axes[1][col]
            for split, color, label in (("train", "tab:blue", "p_train"), ("test", "tab:red", "p_test")):
                c = _curve(last, dataset, split, "smoother/p_eff")
                axp.plot(c["width"], c["mean"], "o-", ms=3, color=color, label=label)
                axp.fill_between(c["width"], c["mean"] - c["se"], c["mean"] + c["se"], color=color, alpha=0.2, lw=0)
            if col == 0:
                axp.set_ylabel("effective parameters p")
        for row in range(rows):
            a = axes[row][col]
            a.set_xscale("log")
            if threshold is not None and threshold > 0:
                a.axvline(threshold, color="grey", ls="--", lw=1,
                          label="(d+2)h+1 = n" if row == 0 and col == 0 else None)
            if col == 0:
                a.legend(loc="best", fontsize=7)
        axes[rows - 1][col].set_xlabel("hidden units h")
    seeds = int(metrics["seed"].nunique())
    caption = (
        "End-of-training train/test MSE (top) and effective parameters p_train, p_test from the telescoping "
        f"smoother (bottom) vs hidden width, mean ± s.e. over {seeds} seed(s); the dashed line marks the "
        "interpolation threshold (d + 2)·h + 1 = n. Paper: "
        + " ".join(PAPER[d] for d in datasets if d in PAPER)
        + " This run: " + " ".join(_describe(summary, d) for d in datasets)
        + (" The CIFAR images are the shared JPEG-derived copy (lossy re-encoding of CIFAR-10), not the original "
           "pixels." if "cifar" in datasets else "")
        + f" Settings: n = {config.get('n_train')}, γ = {config.get('lr')}, momentum {config.get('momentum')}, "
          f"batch {config.get('batch_size')}, at most {config.get('max_epochs')} epochs, patience "
          f"{config.get('patience')} epochs.")
    figs = [Figure(save(fig, out_dir, "double_descent.png"), caption, "Double descent and effective parameters "
                   "(Fig. 3, 9, 10)")]
    return figs
