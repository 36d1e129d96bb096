"""Figures of the polynomial grokking study (telescoping paper Fig. 4 col. 1, Fig. 11).

One column per ε; rows: train/test MSE, effective parameters p_train/p_test, and their ratio
p_test/p_train (the paper's gap, read as a ratio so that the gap's widening and its later
narrowing are visible on one scale). Every line has a legend entry; with several seeds the
curves are means with ± 1 s.e. bands."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib
from telescope.plots.grokking_mnist import FADED, _mean_se, clip_to_valid, plot_valid, validity

COLORS = {"train": "tab:green", "test": "tab:blue"}


def _fmt(v) -> str:
    """A step count as an integer ("never" when absent)."""
    return "never" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.0f}"


def _num(summary: dict, key: str, digits: int = 3) -> str:
    """``summary[key]`` to ``digits`` significant digits, with ``± s.e.`` when the run stored one; step
    counts and delays (keys ending in ``epoch``, ``below`` or ``delay``) as integers."""
    v, se = summary.get(key), summary.get(f"{key}_se")
    if v is None or not math.isfinite(v):
        return "—"
    has_se = se is not None and math.isfinite(se)
    some = summary.get(f"{key}_seeds")          # "k of n": the value exists in k of the n seeds only
    where = f" (in {some} seeds)" if some else ""
    if key.endswith(("epoch", "below", "delay")):
        return f"{v:.0f}" + (f" ± {se:.0f}" if has_se else "") + where
    return f"{v:.{digits}g}" + (f" ± {se:.2g}" if has_se else "") + where


def _ratio(unit: pd.DataFrame) -> pd.DataFrame:
    """p_test/p_train per seed and step, then mean and s.e. over seeds (steps > 0, p_train > 0)."""
    p = unit[unit["name"] == "smoother/p_eff"]
    seed = p["seed"] if "seed" in p.columns else 0
    wide = p.assign(seed=seed).pivot_table(index=["seed", "step"], columns="split", values="value")
    wide = wide[(wide.index.get_level_values("step") > 0) & (wide["train"] > 0)]
    r = (wide["test"] / wide["train"]).groupby(level="step")
    out = pd.DataFrame({"mean": r.mean(), "se": r.std(ddof=1) / np.sqrt(r.count())}).reset_index()
    out["se"] = out["se"].fillna(0.0)
    return out


def _gap_label(config: dict, gap, some: str | None = None) -> str:
    ratio = config.get("gap_ratio", 1.0)
    times = "" if ratio == 1 else f"{ratio:g}·"
    return f"p_test < {times}p_train from step {_fmt(gap)} to the end" + (f" (in {some} seeds)" if some else "")


def _unit_text(summary: dict, eps: float, gap_ratio: float, epochs: int) -> str:
    k = f"eps={eps:g}"
    get = lambda name: summary.get(f"{k}/{name}")  # noqa: E731
    first = get("step_first_invalid")
    valid_text = ("p⁰ passes the self-check at every logged step" if first is None or not math.isfinite(first)
                  else f"p⁰ cannot be read from step {_fmt(first)} on (self-check |s·y + c − f̃| > 3·|f − f̃|; "
                       f"last valid step {_fmt(get('last_valid_step'))})")
    worse = get("max_test") is not None and get("initial_test") is not None and get("max_test") > get("initial_test")
    return (f"ε={eps:g}: train MSE < ½L₀ at step {_num(summary, k + '/epoch_train_below')}, test at "
            f"{_num(summary, k + '/epoch_test_below')} (delay {_num(summary, k + '/delay')}); test MSE "
            + (f"first rises to {_num(summary, k + '/max_test')} (step {_num(summary, k + '/max_test_epoch')}) "
               if worse else "never rises above its initial value ")
            + f"and ends at {_num(summary, k + '/final_test')}; the largest p_test/p_train before the gap "
            f"{_num(summary, k + '/p_test_over_train_max')}; p_test stays below "
            f"{'' if gap_ratio == 1 else f'{gap_ratio:g}·'}p_train from step {_num(summary, k + '/p_gap_epoch')}; "
            f"the widest gap once fitted p_test/p_train = {_num(summary, k + '/min_p_ratio')} at step "
            f"{_num(summary, k + '/min_p_ratio_epoch')}, {_num(summary, k + '/final_p_ratio')} at the end "
            f"(p_train {_num(summary, k + '/final_p_train')}, p_test {_num(summary, k + '/final_p_test')})"
            + (" — the gap narrows again while the test MSE keeps falling, where the paper reports a divergence"
               if _narrows(get("min_p_ratio"), get("final_p_ratio")) else
               " — the gap is still widening at the end of the run" if _at_end(get("min_p_ratio_epoch"), epochs)
               else "")
            + "; " + valid_text)


NARROWING = 0.05     # a final p_test/p_train this much above its minimum: the caption says the gap closes again


def _at_end(step, epochs: int) -> bool:
    """Is the widest gap within the last 5 % of a run of ``epochs`` steps?"""
    return step is not None and math.isfinite(step) and step >= 0.95 * epochs


def _narrows(lowest, final) -> bool:
    return lowest is not None and final is not None and math.isfinite(lowest) and math.isfinite(final) and \
        final - lowest > NARROWING


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    data = metrics[metrics["split"] != "summary"]
    epss = sorted(data["epsilon"].unique())
    fig, axes = plt.subplots(3, len(epss), figsize=(3.9 * len(epss), 8.2), squeeze=False, sharex=True)
    n_seeds = int(data["seed"].nunique()) if "seed" in data.columns else 1
    bands = f" (mean ± s.e., {n_seeds} seeds)" if n_seeds > 1 else ""
    for col, eps in enumerate(epss):
        unit = data[np.isclose(data["epsilon"], eps)]
        top, middle, bottom = axes[0][col], axes[1][col], axes[2][col]
        until, bad = validity(unit)
        tops = []
        for split in ("train", "test"):
            s = _mean_se(unit, split, "mse")
            top.plot(s["step"], s["mean"], color=COLORS[split], label=f"{split} MSE{bands}")
            top.fill_between(s["step"], s["mean"] - s["se"], s["mean"] + s["se"], color=COLORS[split], alpha=0.2,
                             lw=0)
            p = _mean_se(unit, split, "smoother/p_eff")
            tops.append(plot_valid(middle, p, until if bad is not None else None, "-", COLORS[split],
                                   f"p_{split}{bands}", band=p["se"].to_numpy()))
        r = _ratio(unit)
        plot_valid(bottom, r, until if bad is not None else None, "-", "tab:purple", f"p_test / p_train{bands}",
                   band=r["se"].to_numpy())
        bottom.axhline(1.0, color="0.3", lw=0.8, ls="--", label="p_test = p_train")
        if bad is not None:
            clip_to_valid(middle, tops)
            for ax in (middle, bottom):
                ax.plot([], [], color="0.4", **FADED,
                        label=f"past step {_fmt(until) if until is not None else 0}: self-check fails, p⁰ unreadable")
        top.set_xscale("log")
        top.set_yscale("log")
        top.set_title(f"ε = {eps:g}")
        bottom.set_xlabel("optimization step")
        gap = summary.get(f"eps={eps:g}/p_gap_epoch")
        if gap is not None and math.isfinite(gap):
            for ax in (top, middle, bottom):
                ax.axvline(gap, color="grey", ls=":", lw=1,
                           label=_gap_label(config, gap, summary.get(f"eps={eps:g}/p_gap_epoch_seeds")))
        lo, hi = min(float((r["mean"] - r["se"]).min()), 1.0), max(float((r["mean"] + r["se"]).max()), 1.0)
        bottom.set_ylim(lo - 0.05 * (hi - lo), hi + 0.6 * (hi - lo))      # headroom for the legend
        top.legend(fontsize=6, loc="lower left")
        for ax in (middle, bottom):
            ax.legend(fontsize=6, loc="upper left")
        if col == 0:
            top.set_ylabel("MSE")
            middle.set_ylabel("effective parameters p⁰")
            bottom.set_ylabel("p_test / p_train")
    lines = [_unit_text(summary, eps, config["gap_ratio"], config["epochs"]) for eps in epss]
    seeds_text = (f"mean ± s.e. over {n_seeds} seeds (bands ± 1 s.e.; numbers below likewise)" if n_seeds > 1
                  else "one seed, so no bands")
    caption = (f"Committee machine (d={config['d']}, n_h={config['width']}, n={config['n_train']}, "
               f"{config['n_test']} test points; the paper: d = 100, n_h = 500, n = 550, 500 test points, 1e5 steps, "
               f"5 seeds), full-batch GD for {config['epochs']} steps, γ = {config['lr']:g}·n_h, {seeds_text}, "
               f"smoother path '{config['smoother']}'. Top: train (green) and test (blue) MSE; middle: effective "
               "parameters p_train = ‖S‖_F² and p_test; bottom: their ratio p_test/p_train with the line "
               "p_test = p_train. p⁰ is faded and dotted past the last step where the smoother's self-check holds "
               "(NOTE [smoother validity]). Grey dotted vertical line: the step from which p_test stays below "
               "p_train to the end of the run. The paper (Fig. 4 col. 1, Fig. 11) reports the test loss falling "
               "long after the train loss, with p_test diverging below p_train as it does, earlier for larger ε; "
               "for ε = .05 the test loss first worsens and p_test first exceeds p_train before dropping below. "
               "This run: " + "; ".join(lines) + ".")
    return [Figure(save(fig, out_dir, "grokking_poly.png"), caption, "Polynomial grokking and effective parameters")]
