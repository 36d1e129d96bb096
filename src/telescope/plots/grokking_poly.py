"""Figures of the polynomial grokking study (telescoping paper Fig. 4 col. 1, Fig. 11)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib
from telescope.plots.grokking_mnist import FADED, _mean_se, clip_to_valid, plot_valid, validity


def _fmt(v) -> str:
    return "never" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.0f}"


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    data = metrics[metrics["split"] != "summary"]
    epss = sorted(data["epsilon"].unique())
    fig, axes = plt.subplots(2, len(epss), figsize=(3.6 * len(epss), 5.6), squeeze=False, sharex=True)
    lines = []
    n_seeds = int(data["seed"].nunique()) if "seed" in data.columns else 1
    bands = f" (mean ± s.e., {n_seeds} seeds)" if n_seeds > 1 else ""
    for col, eps in enumerate(epss):
        unit = data[np.isclose(data["epsilon"], eps)]
        top, bottom = axes[0][col], axes[1][col]
        until, bad = validity(unit)
        tops = []
        for split, color in (("train", "tab:green"), ("test", "tab:blue")):
            s = _mean_se(unit, split, "mse")
            top.plot(s["step"], s["mean"], color=color, label=f"{split} MSE{bands}")
            top.fill_between(s["step"], s["mean"] - s["se"], s["mean"] + s["se"], color=color, alpha=0.2, lw=0)
            p = _mean_se(unit, split, "smoother/p_eff")
            tops.append(plot_valid(bottom, p, until if bad is not None else None, "-", color, f"p^{split}{bands}",
                                   band=p["se"].to_numpy()))
        if bad is not None:
            clip_to_valid(bottom, tops)
            bottom.plot([], [], color="0.4", **FADED,
                        label=f"p⁰ past step {_fmt(until) if until is not None else 0}: self-check fails")
        top.set_xscale("log")
        top.set_yscale("log")
        top.set_title(f"ε = {eps:g}")
        bottom.set_xlabel("optimization step")
        gap = summary.get(f"eps={eps:g}/p_gap_epoch")
        if gap is not None and math.isfinite(gap):
            for ax in (top, bottom):
                ax.axvline(gap, color="grey", ls=":", lw=1,
                           label=f"p^test < {config['gap_ratio']:g}·p^train from step {_fmt(gap)} on")
        for ax in (top, bottom):
            ax.legend(fontsize=6)
        if col == 0:
            top.set_ylabel("MSE")
            bottom.set_ylabel("effective parameters p⁰")
        k = f"eps={eps:g}"
        first = summary.get(f"{k}/step_first_invalid")
        valid_text = ("p⁰ passes the self-check at every logged step" if first is None or not math.isfinite(first)
                      else f"p⁰ cannot be read from step {_fmt(first)} on (self-check |s·y + c − f̃| > 3·|f − f̃|; "
                           f"last valid step {_fmt(summary.get(f'{k}/last_valid_step'))})")
        ratio = summary.get(f"{k}/p_test_over_train_max")
        lines.append(f"ε={eps:g}: train < ½L₀ at step {_fmt(summary.get(f'{k}/epoch_train_below'))}, test at "
                     f"{_fmt(summary.get(f'{k}/epoch_test_below'))}, final test MSE "
                     f"{summary.get(f'{k}/final_test', float('nan')):.3g}; final p_train "
                     f"{summary.get(f'{k}/final_p_train', float('nan')):.1f}, p_test "
                     f"{summary.get(f'{k}/final_p_test', float('nan')):.1f}; p_test stays below {config['gap_ratio']:g}·p_train from step "
                     f"{_fmt(gap)}; max p_test/p_train before that {ratio if ratio is None else round(ratio, 2)}; "
                     + valid_text)
    caption = (f"Committee machine (d={config['d']}, n_h={config['width']}, n={config['n_train']}, "
               f"{config['n_test']} test points), full-batch GD, γ = {config['lr']:g}·n_h, "
               f"{config['seeds']} seed(s){' (mean ± s.e. bands)' if n_seeds > 1 else ''}, smoother path "
               f"'{config['smoother']}'. Top: train/test MSE; bottom: effective parameters p^train = ‖S‖_F² and "
               "p^test, faded and dotted past the last step where the smoother's self-check holds (NOTE [smoother "
               "validity]); grey dotted line: from this step on p^test stays below the gap ratio times p^train. The paper (Fig. 4 col. 1, Fig. 11) reports the "
               "test loss falling long after the train loss, with p^test diverging below p^train as it does, "
               "earlier for larger ε; for ε = .05 the test loss first worsens and p^test first exceeds p^train "
               "before dropping below. This run: " + "; ".join(lines) + ".")
    return [Figure(save(fig, out_dir, "grokking_poly.png"), caption, "Polynomial grokking and effective parameters")]
