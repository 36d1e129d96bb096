"""Figures of the grokking studies (paper Fig. 4 cols. 2–3, Fig. 12, Fig. 13): error and
effective parameters over optimization steps, one column per (α, output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

COLORS = {"train": "tab:green", "test": "tab:blue"}


def _mean_se(frame: pd.DataFrame, split: str, name: str) -> pd.DataFrame:
    part = frame[(frame["split"] == split) & (frame["name"] == name)]
    g = part.groupby("step")["value"]
    out = pd.DataFrame({"mean": g.mean(), "se": g.std(ddof=1) / np.sqrt(g.count())}).reset_index()
    out["se"] = out["se"].fillna(0.0)
    return out[out["step"] > 0]


def _label(alpha: float, output: str) -> str:
    return f"α = {alpha:g}" + (", sigmoid output" if output == "sigmoid" else "")


def _panel_pair(plt, metrics, panels, title_prefix):
    fig, axes = plt.subplots(2, len(panels), figsize=(3.4 * len(panels), 5.4), squeeze=False, sharex=True)
    for col, (alpha, output) in enumerate(panels):
        sub = metrics[(metrics["alpha"] == alpha) & (metrics["output"] == output)]
        for row, (name, ylabel) in enumerate((("error", "misclassification error"),
                                              ("smoother/p_eff", "effective parameters p⁰"))):
            ax = axes[row][col]
            for split in ("train", "test"):
                s = _mean_se(sub, split, name)
                label = f"{split}" if name == "error" else f"p_{split}"
                ax.plot(s["step"], s["mean"], color=COLORS[split], label=label)
                ax.fill_between(s["step"], s["mean"] - s["se"], s["mean"] + s["se"], color=COLORS[split],
                                alpha=0.2, lw=0)
            ax.set_xscale("log")
            if row == 0:
                ax.set_title(f"{title_prefix}{_label(alpha, output)}")
            else:
                ax.set_xlabel("optimization step")
            if col == 0:
                ax.set_ylabel(ylabel)
                ax.legend(loc="best", fontsize=7)
    return fig


def _panels(metrics: pd.DataFrame) -> list[tuple[float, str]]:
    keys = metrics[["alpha", "output"]].drop_duplicates().sort_values(["output", "alpha"])
    return [(float(a), str(o)) for a, o in keys.itertuples(index=False)]


def _steps_text(summary: dict, alpha: float, output: str) -> str:
    prefix = f"alpha={alpha:g}/output={output}"
    get = lambda k: summary.get(f"{prefix}/{k}")  # noqa: E731
    fmt = lambda v: "—" if v is None else f"{v:g}"  # noqa: E731
    return (f"{_label(alpha, output)}: train fitted at step {fmt(get('step_fit'))}, test error settles at step "
            f"{fmt(get('step_generalize'))} (final {fmt(get('final_test_error'))}), p_test first 10% below "
            f"p_train at step {fmt(get('step_p_gap'))}; final p_train {fmt(get('final_p_train'))}, "
            f"p_test {fmt(get('final_p_test'))}")


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    panels = _panels(metrics)
    fig = _panel_pair(plt, metrics, panels, "")
    this_run = "; ".join(_steps_text(summary, a, o) for a, o in panels)
    figs = [Figure(save(fig, out_dir, "grokking_mnist.png"),
                   "Misclassification error (top) and effective parameters p⁰ of the telescoping smoother (bottom) "
                   "on train (green) and test (blue) over optimization steps, one column per initialization scale α "
                   "(mean ± s.e. over seeds). The paper (Fig. 4 col. 2, Fig. 12) reports that with a large α the "
                   "training error reaches zero early while the test error improves much later (grokking), that "
                   "the late improvement coincides with p_test falling below p_train, and that a larger α gives "
                   f"later grokking and a later gap. This run: {this_run}.",
                   "Grokking on MNIST with large initialization (Fig. 4, 12)")]
    figs.append(_test_overlay(plt, metrics, panels, out_dir, summary))
    return figs


def _test_overlay(plt, metrics, panels, out_dir, summary) -> Figure:
    """Fig. 4 style: test error and p_train/p_test of every (α, output) on shared axes."""
    fig, axes = plt.subplots(1, 2, figsize=(7.4, 3.0))
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, max(len(panels), 1)))
    for (alpha, output), color in zip(panels, colors):
        sub = metrics[(metrics["alpha"] == alpha) & (metrics["output"] == output)]
        err = _mean_se(sub, "test", "error")
        axes[0].plot(err["step"], err["mean"], color=color, label=_label(alpha, output))
        for split, style in (("train", "--"), ("test", "-")):
            p = _mean_se(sub, split, "smoother/p_eff")
            axes[1].plot(p["step"], p["mean"], style, color=color,
                         label=f"p_{split}, {_label(alpha, output)}")
    for ax, ylabel in zip(axes, ("test error", "effective parameters p⁰ (--- train, — test)")):
        ax.set_xscale("log")
        ax.set_xlabel("optimization step")
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=7)
    return Figure(save(fig, out_dir, "grokking_overview.png"),
                  "Test error (left) and effective parameters on train (dashed) and test (solid) for every setting "
                  "of this run on shared axes, as in the paper's Fig. 4 (which overlays test curves only).",
                  "Overview (Fig. 4 style)")
