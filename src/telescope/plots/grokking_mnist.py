"""Figures of the grokking studies (paper Fig. 4 cols. 2–3, Fig. 12, Fig. 13): error and
effective parameters over optimization steps, one column per (α, output). When a run holds
several smoother methods (``methods=("exact", "sketch")``), the p⁰ row overlays them: exact
solid, sketch dashed with its ± 1 standard-error band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

COLORS = {"train": "tab:green", "test": "tab:blue"}
STYLES = {"exact": "-", "sketch": "--"}


def _mean_se(frame: pd.DataFrame, split: str, name: str) -> pd.DataFrame:
    part = frame[(frame["split"] == split) & (frame["name"] == name)]
    g = part.groupby("step")["value"]
    out = pd.DataFrame({"mean": g.mean(), "se": g.std(ddof=1) / np.sqrt(g.count())}).reset_index()
    out["se"] = out["se"].fillna(0.0)
    return out[out["step"] > 0]


def _methods(metrics: pd.DataFrame) -> list[str]:
    if "method" not in metrics.columns:
        return ["exact"]
    present = set(metrics["method"])
    return [m for m in ("exact", "sketch") if m in present] + sorted(present - {"exact", "sketch"})


def _of_method(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    return frame if "method" not in frame.columns else frame[frame["method"] == method]


def _label(alpha: float, output: str) -> str:
    return f"α = {alpha:g}" + (", sigmoid output" if output == "sigmoid" else "")


def _panel_pair(plt, metrics, panels, title_prefix, summary=None):
    methods = _methods(metrics)
    several = len(methods) > 1
    fig, axes = plt.subplots(3, len(panels), figsize=(3.6 * len(panels), 7.8), squeeze=False, sharex=True)
    for col, (alpha, output) in enumerate(panels):
        sub = metrics[(metrics["alpha"] == alpha) & (metrics["output"] == output)]
        first = _of_method(sub, methods[0])          # one training per method: the error curves coincide
        ax = axes[0][col]
        for split in ("train", "test"):
            s = _mean_se(first, split, "error")
            ax.plot(s["step"], s["mean"], color=COLORS[split], label=split)
            ax.fill_between(s["step"], s["mean"] - s["se"], s["mean"] + s["se"], color=COLORS[split],
                            alpha=0.2, lw=0)
        ax.set_title(f"{title_prefix}{_label(alpha, output)}")
        ax = axes[1][col]
        # the summary's step_unreliable: test residual |s·y + c − f̃| > 3·|f − f̃| and > 0.02
        start = (summary or {}).get(f"alpha={alpha:g}/output={output}/method={methods[0]}/step_unreliable")
        if start is not None and np.isfinite(start):
            for r in (1, 2):
                axes[r][col].axvspan(start, sub["step"].max(), color="0.85", lw=0,
                                     label="residual > 3·|f − f̃|" if r == 1 else None)
        for method in methods:
            part = _of_method(sub, method)
            for split in ("train", "test"):
                s = _mean_se(part, split, "smoother/p_eff")
                ax.plot(s["step"], s["mean"], STYLES.get(method, ":"), color=COLORS[split],
                        label=f"p_{split}" + (f" ({method})" if several or method != "exact" else ""))
                se = _mean_se(part, split, "smoother/p_eff_se")
                band = se["mean"].to_numpy() if len(se) == len(s) else s["se"].to_numpy()
                ax.fill_between(s["step"], s["mean"] - band, s["mean"] + band, color=COLORS[split], alpha=0.15, lw=0)
        ax = axes[2][col]                        # is the smoother a faithful account of f̃?
        for method in methods:
            part = _of_method(sub, method)
            for split in ("train", "test"):
                s = _mean_se(part, split, "smoother/residual")
                ax.plot(s["step"], s["mean"].clip(lower=1e-8), STYLES.get(method, ":"), color=COLORS[split],
                        label=f"|s·y + c − f̃|, {split}" + (f" ({method})" if several else ""))
        s = _mean_se(first, "test", "telescope/abs_err")
        ax.plot(s["step"], s["mean"].clip(lower=1e-8), ":", color="black", label="|f − f̃|, test")
        # the summary's step_near_edge: Adam's preconditioned sharpness stays ≥ 0.8 of its stability
        # threshold from here on (NOTE [adam edge of stability] in telescope/lens/stability.py); 0.8 is
        # NEAR_EDGE of experiments/grokking_mnist.py, not imported so that plots stay free of torch
        edge = (summary or {}).get(f"alpha={alpha:g}/output={output}/method={methods[0]}/step_near_edge")
        if edge is not None and np.isfinite(edge):
            ax.axvline(edge, color="0.4", ls="--", lw=1, label="Adam: sharpness ≥ 0.8·edge")
        ax.set_yscale("log")
        ax.set_xlabel("optimization step")
        for row in range(3):
            axes[row][col].set_xscale("log")
        if col == 0:
            for row, ylabel in enumerate(("misclassification error", "effective parameters p⁰", "smoother residual")):
                axes[row][0].set_ylabel(ylabel)
                axes[row][0].legend(loc="upper left" if row == 2 else "best", fontsize=7)
    return fig


def _panels(metrics: pd.DataFrame) -> list[tuple[float, str]]:
    keys = metrics[["alpha", "output"]].drop_duplicates().sort_values(["output", "alpha"])
    return [(float(a), str(o)) for a, o in keys.itertuples(index=False)]


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3g}"


def _steps_text(summary: dict, alpha: float, output: str, method: str = "exact") -> str:
    prefix = f"alpha={alpha:g}/output={output}/method={method}"
    get = lambda k: summary.get(f"{prefix}/{k}")  # noqa: E731
    return (f"{_label(alpha, output)} ({method}): train error 0 at step {_fmt(get('step_fit'))} (test error "
            f"{_fmt(get('test_error_at_fit'))}, p_train/p_test {_fmt(get('p_train_at_fit'))}/"
            f"{_fmt(get('p_test_at_fit'))}), test error < 10 % at step {_fmt(get('step_generalize'))} "
            f"(p_train/p_test {_fmt(get('p_train_at_generalize'))}/{_fmt(get('p_test_at_generalize'))}); "
            f"final test error {_fmt(get('final_test_error'))}, p_train/p_test {_fmt(get('final_p_train'))}/"
            f"{_fmt(get('final_p_test'))}")


def run_text(metrics: pd.DataFrame, summary: dict) -> str:
    """The 'this run' sentence of a caption: one clause per (α, output, method)."""
    return "; ".join(_steps_text(summary, a, o, m) for a, o in _panels(metrics) for m in _methods(metrics))


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    panels = _panels(metrics)
    fig = _panel_pair(plt, metrics, panels, "", summary)
    overlay = (" The p⁰ row overlays the exact smoother (solid) and the sketch (dashed, ± 1 s.e. band) "
               "computed along the same training." if len(_methods(metrics)) > 1 else "")
    figs = [Figure(save(fig, out_dir, "grokking_mnist.png"),
                   "Misclassification error (top) and effective parameters p⁰ of the telescoping smoother (middle) "
                   "on train (green) and test (blue) over optimization steps, one column per initialization scale α "
                   "(mean ± s.e. over seeds); bottom: the smoother's self-check |s·y + c − f̃| against the "
                   "telescoping error |f − f̃|; grey: steps where the first exceeds 3× the second (and 0.02), "
                   f"where p⁰ is no longer a faithful account of the network.{overlay} The paper (Fig. 4 col. 2, Fig. 12) reports that with "
                   "a large α the training error reaches zero early while the test error improves much later "
                   "(grokking), that the late improvement coincides with p_test falling below p_train, and that a "
                   f"larger α gives later grokking and a later gap. This run: {run_text(metrics, summary)}.",
                   "Grokking on MNIST with large initialization (Fig. 4, 12)")]
    figs.append(_test_overlay(plt, metrics, panels, out_dir, summary))
    return figs


def _test_overlay(plt, metrics, panels, out_dir, summary) -> Figure:
    """Fig. 4 style: test error and p_train/p_test of every (α, output) on shared axes."""
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.1))
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, max(len(panels), 1)))
    method = _methods(metrics)[0]
    for (alpha, output), color in zip(panels, colors):
        sub = _of_method(metrics[(metrics["alpha"] == alpha) & (metrics["output"] == output)], method)
        err = _mean_se(sub, "test", "error")
        axes[0].plot(err["step"], err["mean"], color=color, label=_label(alpha, output))
        for split, style in (("train", "--"), ("test", "-")):
            p = _mean_se(sub, split, "smoother/p_eff")
            axes[1].plot(p["step"], p["mean"], style, color=color,
                         label=f"p_{split}, {_label(alpha, output)}")
    for ax, ylabel in zip(axes, ("test error", f"p⁰ ({method}; --- train, — test)")):
        ax.set_xscale("log")
        ax.set_xlabel("optimization step")
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=7)
    return Figure(save(fig, out_dir, "grokking_overview.png"),
                  "Test error (left) and effective parameters on train (dashed) and test (solid) for every setting "
                  f"of this run on shared axes ({method} smoother), as in the paper's Fig. 4 (which overlays test "
                  "curves only).",
                  "Overview (Fig. 4 style)")
