"""Figures of grokking-transformer: accuracy with p_train / p_test under it, the telescoping vs
linearized error, and the kernel statistics (alignment, distance from init, embedding rank)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

COLORS = {"train": "tab:green", "test": "tab:blue"}


def _series(metrics: pd.DataFrame, split: str, name: str) -> pd.DataFrame:
    part = metrics[(metrics["split"] == split) & (metrics["name"] == name)]
    return part.groupby("step", as_index=False)["value"].mean().sort_values("step")


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3g}"


def _marks(axes, summary: dict) -> None:
    for key, style, label in (("step_fit", ":", "train acc. 100 %"), ("step_generalize", "--", "test acc. > 95 %")):
        step = summary.get(key)
        if step is not None and np.isfinite(step):
            for ax in axes:
                ax.axvline(step, color="0.3", ls=style, lw=1, label=label if ax is axes[0] else None)


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    fig, axes = plt.subplots(3, 1, figsize=(6.4, 8.4), sharex=True)
    valid_to = summary.get("last_valid_step_test")
    valid_to = float(valid_to) if valid_to is not None else float("inf")
    runaway = None          # (last valid step, largest p past it) when the sketch's self-check fails
    for split in ("train", "test"):
        s = _series(metrics, split, "error")
        axes[0].plot(s["step"], 1 - s["value"], color=COLORS[split], label=f"{split} accuracy")
        p = _series(metrics, split, "smoother/p_eff")
        p = p[p["step"] > 0]                                    # p⁰ = 0 at step 0 (s_0 = 0)
        se = _series(metrics, split, "smoother/p_eff_se")
        se = se[se["step"] > 0]
        if not p.empty:
            ok = (p["step"] <= valid_to).to_numpy()
            axes[1].plot(p["step"][ok], p["value"][ok], color=COLORS[split], label=f"p_{split} (sketch)")
            if (~ok).any():      # past the self-check's first failure p⁰ is no account of the network: not drawn
                runaway = (valid_to, max(float(p["value"][~ok].max()), runaway[1] if runaway else 0.0))
            if len(se) == len(p):
                axes[1].fill_between(p["step"][ok], (p["value"] - se["value"].to_numpy())[ok],
                                     (p["value"] + se["value"].to_numpy())[ok], color=COLORS[split], alpha=0.2, lw=0)
        r = _series(metrics, split, "smoother/residual")
        r = r[r["step"] > 0]
        if not r.empty:
            axes[2].plot(r["step"], r["value"].clip(lower=1e-12), color=COLORS[split], lw=1,
                         label=f"|s·y + c − f̃|, {split}")
    for name, style, label in (("telescope/abs_err", "-", "|f − f̃| telescoping"),
                               ("linearized/abs_err", "--", "|f − f_lin| linearized"),
                               ("trapezoid/abs_err", "-.", "|f − f̂| trapezoid rule")):
        s = _series(metrics, "test", name)
        s = s[s["step"] > 0]                                    # all three are exact at step 0
        if not s.empty:
            axes[2].plot(s["step"], s["value"].clip(lower=1e-12), style, color="black", label=f"{label}, test")
    if _series(metrics, "train", "smoother/p_eff").empty:
        axes[1].text(0.5, 0.5, "smoother off in this run (smoother=false; none with cross-entropy)", ha="center", va="center",
                     transform=axes[1].transAxes)
    else:
        axes[1].set_yscale("log")
    _marks(axes, summary)
    axes[0].set_ylabel("accuracy")
    axes[1].set_ylabel("effective parameters p⁰")
    axes[2].set_ylabel("mean absolute error")
    axes[2].set_yscale("log")
    if runaway is not None:
        axes[1].axvspan(runaway[0], float(metrics["step"].max()), color="0.85", alpha=0.5, lw=0)
        axes[1].text(0.98, 0.5, f"self-check fails after step {runaway[0]:.0f}:\np⁰ is no account of the network "
                     f"there\n(it runs away, up to {runaway[1]:.1e}); not drawn", ha="right", va="center",
                     fontsize=8, transform=axes[1].transAxes)
        errs = [_series(metrics, "test", n)["value"].max() for n in ("telescope/abs_err", "linearized/abs_err")]
        top = 30 * max(e for e in errs if np.isfinite(e))
        res = _series(metrics, "test", "smoother/residual")["value"].max()
        if np.isfinite(top) and res > top:      # the run-away residual would flatten every other curve
            axes[2].set_ylim(bottom=axes[2].get_ylim()[0], top=top)
            axes[2].text(0.98, 0.97, f"self-check residual leaves the chart (up to {res:.1e})", ha="right",
                         va="top", fontsize=7, transform=axes[2].transAxes)
    axes[2].set_xlabel("optimization step (full batch)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    acc = Figure(save(fig, out_dir, "grokking_transformer.png"),
                 f"(a + b) mod {config.get('p')} with a one-layer transformer, full-batch AdamW. Top: train (green) "
                 "and test (blue) accuracy on every pair; middle: the sketch's effective parameters p_train and "
                 "p_test (± 1 s.e.; drawn only up to the self-check's first failure on the test pairs, past which p⁰ is no "
                 "account of the network, NOTE [smoother validity]); bottom: the telescoping error |f − f̃| and the linearized error |f − f_lin| on "
                 "the tracked test pairs, the error of the lens's second-order (trapezoid-rule) companion f̂ where logged "
                 "(NOTE [trapezoid rule]), and the smoother's self-check |s·y + c − f̃| (its validity signal). "
                 f"This run: train accuracy 100 % at step {_fmt(summary.get('step_fit'))}, test accuracy > 95 % at "
                 f"step {_fmt(summary.get('step_generalize'))}; p_train/p_test {_fmt(summary.get('p_train_at_fit'))}/"
                 f"{_fmt(summary.get('p_test_at_fit'))} at fit and {_fmt(summary.get('p_train_at_generalize'))}/"
                 f"{_fmt(summary.get('p_test_at_generalize'))} at generalization; linearized / telescoping error "
                 f"{_fmt(summary.get('linearized_over_telescope_at_fit'))} at fit, "
                 f"{_fmt(summary.get('linearized_over_telescope_at_generalize'))} at generalization, below 10 from step "
                 f"{_fmt(summary.get('step_10x_lost'))} on; the sketch's self-check holds on the test pairs up to step "
                 f"{_fmt(summary.get('last_valid_step_test'))}.",
                 "Grokking a transformer: accuracy and effective parameters")

    fig, axes = plt.subplots(4, 1, figsize=(6.4, 9.6), sharex=True)
    for split in ("train", "test"):
        for ax, name in zip(axes[:2], ("ntk/alignment", "ntk/distance")):
            s = _series(metrics, split, name)
            ax.plot(s["step"], s["value"], color=COLORS[split], label=split)
    s = _series(metrics, "train", "embedding/effective_rank")
    axes[2].plot(s["step"], s["value"], color="tab:purple", label="embedding effective rank")
    w = _series(metrics, "train", "weight_norm")
    twin = axes[2].twinx()
    twin.plot(w["step"], w["value"], color="0.4", ls="--", label="weight norm")
    twin.set_ylabel("weight norm (dashed)")
    sharp = _series(metrics, "train", "adam/sharpness_ratio")
    if sharp.empty:
        axes[3].text(0.5, 0.5, "not logged in this run (sharpness=false, or a cross-entropy loss)", ha="center", va="center",
                     transform=axes[3].transAxes)
    else:
        axes[3].plot(sharp["step"], sharp["value"], color="tab:red", marker=".", ms=3, label="λ_max(A) / threshold")
        axes[3].axhline(1.0, color="tab:red", ls=":", lw=1, label="Adam's edge of stability")
        axes[3].set_yscale("log")
    _marks(axes, summary)
    for ax, ylabel in zip(axes, ("kernel–target alignment", "kernel distance from init", "effective rank",
                                 "AdamW sharpness ratio")):
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    axes[3].set_xlabel("optimization step (full batch)")
    kern = Figure(save(fig, out_dir, "grokking_transformer_kernel.png"),
                  "Tangent-kernel statistics over training on the kernel subsets of train (green) and test (blue) "
                  "pairs: centred kernel–target alignment of the trace kernel with the one-hot answers (top), kernel "
                  "distance 1 − cos(K_t, K_0) from the initial kernel (middle); bottom: effective rank of the token "
                  "embedding and the weight norm; last panel: AdamW's preconditioned sharpness on the training set over "
                  "its stability threshold 2(1+β1)/(1−β1) (NOTE [adam edge of stability]; at 1 the frozen-φ recursion "
                  "stops damping). Kumar et al. report alignment rising at the lazy → rich transition. "
                  f"This run: sharpness ratio {_fmt(summary.get('sharpness_ratio_at_fit'))} at fit, ≥ 0.8 from step "
                  f"{_fmt(summary.get('step_near_edge'))}; test alignment {_fmt(summary.get('alignment_test_at_init'))} at init, "
                  f"{_fmt(summary.get('alignment_test_at_fit'))} at fit, {_fmt(summary.get('alignment_test_at_generalize'))} "
                  f"at generalization (max {_fmt(summary.get('max_alignment_test'))}).",
                  "Grokking a transformer: kernel statistics")
    return [acc, kern]
