"""Figures of ``trees-vs-nets`` (paper Fig. 5 for houses, Fig. 14 for the others).

Reads the stored summary and metrics only (no torch, no re-run).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

_KERNEL = "kernel/max_weight_norm"


def _series(summary: dict, ds: str, p_grid: list[float], key: str) -> np.ndarray:
    return np.array([summary.get(f"{ds}/p={p:g}/{key}", np.nan) for p in p_grid], dtype=float)


def _splits(summary: dict, ds: str) -> list[int]:
    pattern = re.compile(re.escape(ds) + r"/split(\d+)/")
    return sorted({int(m.group(1)) for k in summary if (m := pattern.match(k))})


def _band(ax, x, y, se, color, label, style="o-"):
    """Mean with a ±1 s.e. band (no band where s.e. is 0 or missing)."""
    ax.plot(x, y, style, color=color, label=label, ms=4)
    se = np.nan_to_num(se)
    if np.any(se > 0):
        ax.fill_between(x, y - se, y + se, color=color, alpha=0.2, lw=0)


def _verdict(summary: dict, ds: str, p_grid: list[float]) -> str:
    """This run beside the paper's facts 14–17, in words, contradictions flagged."""
    last = f"{p_grid[-1]:g}"
    gap0, rel = summary[f"{ds}/p=0/mse_gap"], _series(summary, ds, p_grid, "rel")
    rn, rg = _series(summary, ds, p_grid, "R_nn"), _series(summary, ds, p_grid, "R_gbt")
    n = summary.get(f"{ds}/splits/n", 1)
    words = [f"{ds} ({n} outer split{'s' if n != 1 else ''})"]
    se0 = summary.get(f"{ds}/p=0/mse_gap_se", 0.0)
    wins = summary.get(f"{ds}/splits/gbt_beats_nn_at_p0", int(gap0 > 0))
    words.append(("the GBT wins at p = 0 as in the paper" if gap0 > 0 else
                  "CONTRADICTS the paper: the network wins at p = 0")
                 + f" (MSE_NN − MSE_GBT = {gap0:+.3f} ± {se0:.3f}, GBT better on {wins} of {n} splits"
                 + ("; within one s.e., so not a clear win" if abs(gap0) <= se0 else "") + ")")
    rel_up = summary.get(f"{ds}/splits/rel_increases", int(rel[-1] > rel[0]))
    words.append(f"rel_p {rel[0]:.2f} → {rel[-1]:.2f} at p = {last}, rising on {rel_up} of {n} splits"
                 + ("" if rel[-1] > rel[0] else " — CONTRADICTS the paper's rise of rel_p (fact 15)"))
    words.append(f"R_NN {rn[0]:.2f} → {rn[-1]:.2f}" + (" (rises, as in the paper)" if rn[-1] > rn[0]
                                                       else " — does NOT rise as in the paper"))
    words.append(f"R_GBT {np.nanmin(rg):.2f}–{np.nanmax(rg):.2f}"
                 + (" (≤ 1, as by construction)" if np.nanmax(rg) <= 1 + 1e-12 else " — above 1, a bug"))
    return ": ".join(words[:1]) + ": " + "; ".join(words[1:])


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    from matplotlib.ticker import MaxNLocator

    p_grid = [float(p) for p in config["p_grid"]]
    datasets = [d for d in config["datasets"] if f"{d}/p=0/rel" in summary]
    if not datasets:
        return []
    out: list[Figure] = []
    bands = "bands: ±1 s.e. over outer splits (over model seeds with one split)"
    adam = config.get("optimizer", "adam") == "adam"
    kernel_name = "Adam-preconditioned kernel" if adam else "SGD: the plain tangent kernel"

    # Fig. 5 / 14: rel_p (top) and R for both models (bottom), one column per dataset
    fig, axes = plt.subplots(2, len(datasets), figsize=(3.4 * len(datasets), 5.2), squeeze=False, sharex=True)
    for j, ds in enumerate(datasets):
        top, bottom = axes[0, j], axes[1, j]
        for k, sp in enumerate(_splits(summary, ds)):
            top.plot(p_grid, [summary[f"{ds}/split{sp}/p={p:g}/rel"] for p in p_grid], "-", color="grey",
                     lw=0.8, alpha=0.6, label="one outer split" if k == 0 else None)
        _band(top, p_grid, _series(summary, ds, p_grid, "rel"), _series(summary, ds, p_grid, "rel_se"), "k",
              "mean over splits")
        top.axhline(1.0, color="grey", lw=0.8, ls=":")
        top.set_title(ds)
        top.set_ylabel("relative MSE  rel$_p$" if j == 0 else "")
        for key, label, color, style in (("R_nn", f"NN ({kernel_name})", "C0", "o-"),
                                         ("R_nn_ntk", "NN (plain tangent kernel)", "C9", "s--"),
                                         ("R_gbt", "GBT (tree kernel)", "C1", "o-")):
            _band(bottom, p_grid, _series(summary, ds, p_grid, key), _series(summary, ds, p_grid, f"{key}_se"),
                  color, label, style)
        bottom.axhline(1.0, color="grey", lw=0.8, ls=":")
        bottom.set_xlabel("proportion p of irregular test rows")
        bottom.set_ylabel("normalised max ‖k_t(x)‖  R" if j == 0 else "")
    handles, labels = [], []
    for ax in (axes[0, 0], axes[1, 0]):
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("Trees vs nets: irregular test data (paper Fig. 5/14)")
    fig.tight_layout()
    name = save(fig, out_dir, "trees_vs_nets_rel_and_R.png")
    out.append(Figure(name, (
        "The paper reports (Fig. 5, 14) that the GBT beats the network already at p = 0 (fact 14), that the "
        "relative MSE rel_p = (MSE_NN − MSE_GBT)/(MSE⁰_NN − MSE⁰_GBT) grows with the proportion p of "
        "irregular test examples (fact 15), that the network's normalised maximum kernel-weight norm R grows "
        "with p (above 1 except on california, fact 16) while the GBT's stays ≤ 1 (fact 17). This run "
        f"({bands}; grey: each split's rel_p): " + ". ".join(_verdict(summary, ds, p_grid) for ds in datasets)
        + "."), "Relative MSE and kernel-weight norms"))

    # test MSE of both models
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.4 * len(datasets), 2.9), squeeze=False)
    for j, ds in enumerate(datasets):
        ax = axes[0, j]
        for model, label, color in (("nn", "NN", "C0"), ("gbt", "GBT", "C1")):
            _band(ax, p_grid, _series(summary, ds, p_grid, f"mse_{model}"),
                  _series(summary, ds, p_grid, f"mse_{model}_se"), color, label)
        ax.set_title(ds)
        ax.set_xlabel("proportion p of irregular test examples")
        ax.set_ylabel("test MSE" if j == 0 else "")
        if j == 0:
            ax.legend(loc="upper left", fontsize=8)
    name = save(fig, out_dir, "trees_vs_nets_mse.png")
    gaps = []
    for ds in datasets:
        g0, g1 = summary[f"{ds}/p=0/mse_gap"], summary[f"{ds}/p={p_grid[-1]:g}/mse_gap"]
        gaps.append(f"{ds}: MSE_NN − MSE_GBT = {g0:+.3f} at p = 0, {g1:+.3f} at p = {p_grid[-1]:g}"
                    + ("" if g1 > g0 else " (the network does NOT degrade faster: contradicts the paper)"))
    out.append(Figure(name, (
        f"Test MSE of both models per test set ({bands}). The paper states that the GBT "
        "is better at p = 0 and that the network degrades faster as p grows. This run: " + "; ".join(gaps) + "."),
        "Test MSE vs proportion of irregular examples"))

    # kernel-norm traces of the network over training (first model seed of the first split)
    if not metrics.empty and "model" in metrics.columns:
        nn = metrics[(metrics["model"] == "nn") & (metrics["phase"] == "final") & (metrics["name"] == _KERNEL)]
        if not nn.empty:
            fig, axes = plt.subplots(1, len(datasets), figsize=(3.4 * len(datasets), 2.9), squeeze=False)
            for j, ds in enumerate(datasets):
                ax = axes[0, j]
                d = nn[nn["dataset"] == ds]
                if d.empty:
                    continue
                d = d[d["seed"] == d["seed"].min()]
                splits = ["train"] + [f"p={p:g}" for p in (p_grid[0], p_grid[-1])]
                for split, color in zip(splits, ("k", "C2", "C3")):
                    s = d[d["split"] == split].sort_values("step")
                    ax.plot(s["step"], s["value"], "o-", ms=2, color=color,
                            label="train" if split == "train" else f"test {split}")
                ax.set_yscale("log")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
                ax.set_title(ds)
                ax.set_xlabel("training step t")
                ax.set_ylabel("max_x ‖k_t(x)‖₂ (network)" if j == 0 else "")
                if j == 0:
                    ax.legend(fontsize=7, loc="best")
            name = save(fig, out_dir, "trees_vs_nets_kernel_traces.png")
            out.append(Figure(name, (
                f"The network's maximum kernel-weight norm ({kernel_name}) over the training points "
                "and over the test sets with the fewest and the most irregular examples, at each recorded step "
                "(first model seed of the first outer split). R is the ratio of the test curve's mean to the "
                "training curve's mean; the paper attributes the network's degradation to these weights being "
                "unbounded on irregular inputs."), "Network kernel-weight norms during training"))
    return out


def sensitivity_table(summaries: dict[str, dict], dataset: str = "houses") -> pd.DataFrame:
    """One row per run (``{label: summary}``, e.g. the ``quick-*`` presets): does rel_p rise?

    Columns: MSE gap NN − GBT at p = 0 and at the largest p (mean ± s.e. over splits), rel_p at
    the largest p, on how many splits the GBT wins at p = 0, the gap grows and rel_p rises, R_NN with and without Adam's φ at p = 0 and the
    largest p, and R_GBT's largest value. Reads summaries only.
    """
    rows = []
    for label, sm in summaries.items():
        ps = sorted(float(k.split("/p=")[1].split("/")[0]) for k in sm
                    if k.startswith(f"{dataset}/p=") and k.endswith("/rel"))
        if not ps:
            continue
        last = f"{dataset}/p={ps[-1]:g}"
        first = f"{dataset}/p=0"
        rows.append({
            "run": label,
            "gap_p0": f"{sm[f'{first}/mse_gap']:+.3f} ± {sm.get(f'{first}/mse_gap_se', 0):.3f}",
            "gap_plast": f"{sm[f'{last}/mse_gap']:+.3f} ± {sm.get(f'{last}/mse_gap_se', 0):.3f}",
            "rel_plast": f"{sm[f'{last}/rel']:+.2f} ± {sm.get(f'{last}/rel_se', 0):.2f}",
            "gbt_wins_p0": f"{sm.get(f'{dataset}/splits/gbt_beats_nn_at_p0', '?')}/{sm.get(f'{dataset}/splits/n', '?')}",
            "gap_rises": f"{sm.get(f'{dataset}/splits/gap_increases', '?')}/{sm.get(f'{dataset}/splits/n', '?')}",
            "rel_rises": f"{sm.get(f'{dataset}/splits/rel_increases', '?')}/{sm.get(f'{dataset}/splits/n', '?')}",
            "R_nn": f"{sm[f'{first}/R_nn']:.2f} → {sm[f'{last}/R_nn']:.2f}",
            "R_nn_ntk": f"{sm[f'{first}/R_nn_ntk']:.2f} → {sm[f'{last}/R_nn_ntk']:.2f}",
            "R_gbt_max": f"{max(sm[k] for k in sm if k.startswith(dataset + '/p=') and k.endswith('/R_gbt')):.2f}",
        })
    return pd.DataFrame(rows)
