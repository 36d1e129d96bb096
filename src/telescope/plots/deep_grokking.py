"""Figures of the deep-grokking study (Fan, Pascanu & Jaggi 2024, Fig. 1 and Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib


def _curve(frame: pd.DataFrame, split: str, name: str) -> pd.DataFrame:
    part = frame[(frame["split"] == split) & (frame["name"] == name)]
    return part.groupby("step")["value"].mean().reset_index()


def _units(metrics: pd.DataFrame) -> list[tuple]:
    keys = ["n_train", "depth", "weight_decay", "seed"]
    return [k for k, _ in metrics.groupby(keys)]


def _unit(metrics: pd.DataFrame, key: tuple) -> pd.DataFrame:
    n, depth, wd, seed = key
    return metrics[(metrics["n_train"] == n) & (metrics["depth"] == depth) & (metrics["weight_decay"] == wd)
                   & (metrics["seed"] == seed)]


def _mark(ax, summary: dict, key: tuple) -> None:
    n, depth, wd, seed = key
    prefix = f"n={n}/depth={depth}/wd={wd:g}/seed={seed}"
    for name, style in (("fit_step", ":"), ("grok_step", "--")):
        value = summary.get(f"{prefix}/{name}")
        if value is not None and np.isfinite(value):  # None: no transition found
            ax.axvline(value, color="k", ls=style, lw=0.8, alpha=0.6)


def _label(key: tuple) -> str:
    n, depth, wd, seed = key
    return f"N={n}, L={depth}, γ={wd:g}"


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    figs: list[Figure] = []
    units = _units(metrics)
    if not units:
        return figs
    width = config.get("width", 0)

    # Fig. 1: ranks (top two rows), accuracies, probe accuracies; one column per run
    rtol = config.get("rank_rtol", 1e-3)
    fig, axes = plt.subplots(4, len(units), figsize=(3.6 * len(units), 9.5), squeeze=False, sharex="col")
    for col, key in enumerate(units):
        frame = _unit(metrics, key)
        depth = int(key[1])
        colors = plt.cm.viridis(np.linspace(0, 0.95, depth))
        for row, (name, what) in enumerate((("feature_rank", "rank (default tol.)"),
                                            ("feature_rank_rel", f"rank (rtol {rtol:g})"))):
            ax = axes[row][col]
            for layer in range(1, depth):
                c = _curve(frame, "test", f"{name}/{layer}")
                ax.plot(c["step"].clip(lower=1), c["value"], color=colors[layer - 1], label=f"layer {layer}")
            if width:
                ax.axhline(config.get("tunnel_fraction", 0.75) * width, color="grey", ls=":", lw=0.8)
            ax.set_ylabel(what if col == 0 else "")
        axes[0][col].set_title(_label(key))
        ax = axes[2][col]
        for split, color in (("train", "tab:blue"), ("test", "tab:red")):
            c = _curve(frame, split, "accuracy")
            ax.plot(c["step"].clip(lower=1), c["value"], color=color, label=split)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy" if col == 0 else "")
        ax = axes[3][col]
        for layer in range(1, depth + 1):
            c = _curve(frame, "test", f"probe_accuracy/{layer}")
            if len(c):
                ax.plot(c["step"].clip(lower=1), c["value"], "o-", ms=2.5, color=colors[layer - 1],
                        label=f"layer {layer}")
        ax.set_ylabel("linear-probe accuracy" if col == 0 else "")
        ax.set_xlabel("optimization step")
        for row in range(4):
            axes[row][col].set_xscale("log")
            _mark(axes[row][col], summary, key)
    axes[1][-1].legend(fontsize=6, loc="lower left", ncol=2)
    axes[2][-1].legend(fontsize=7, loc="upper left")
    figs.append(Figure(save(fig, out_dir, "deep_grokking_rank_accuracy.png"),
                       "Per-layer feature rank of the hidden pre-activations on the test images (row 1: numerical "
                       "rank of the covariance in float64 with matrix_rank's default tolerance, the authors' measure; "
                       f"row 2: singular values above {rtol:g}·σ_max; grey line: 0.75·width, the tunnel threshold), "
                       "train/test accuracy (row 3) and per-layer linear-probe accuracy (row 4). Dotted line: train "
                       "accuracy reaches 95%; dashed line: test accuracy is halfway through its rise. The paper "
                       "(Fig. 1) reports that train accuracy saturates first, test accuracy rises much later, and "
                       "the rise coincides with a drop of the later layers' rank.",
                       "Rank, accuracy and probes over training (Fig. 1)"))

    # Fig. 5: accuracies, weight norm, second-last-layer rank, runs overlaid
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    palette = plt.cm.tab10(np.arange(len(units)) % 10)
    for key, color in zip(units, palette):
        frame = _unit(metrics, key)
        depth = int(key[1])
        label = _label(key)
        for split, style in (("train", ":"), ("test", "-")):
            c = _curve(frame, split, "accuracy")
            axes[0].plot(c["step"].clip(lower=1), c["value"], style, color=color,
                         label=f"{label} ({split})")
        c = _curve(frame, "train", "weight_norm")
        axes[1].plot(c["step"].clip(lower=1), c["value"], color=color, label=label)
        c = _curve(frame, "train", "weight_norm/last_layer")
        axes[1].plot(c["step"].clip(lower=1), c["value"], "--", color=color, alpha=0.6)
        for name, style in (("feature_rank", "-"), ("feature_rank_rel", "--")):
            c = _curve(frame, "test", f"{name}/{depth - 1}")
            axes[2].plot(c["step"].clip(lower=1), c["value"], style, color=color, label=f"{label} ({name})")
        c = _curve(frame, "test", f"effective_rank/{depth - 1}")
        axes[3].plot(c["step"].clip(lower=1), c["value"], color=color, label=label)
    axes[0].set_ylabel("accuracy (dotted: train)")
    axes[1].set_ylabel("weight norm (dashed: last layer)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("rank of second-last layer")
    axes[3].set_ylabel("effective rank of second-last layer")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("optimization step")
    axes[0].legend(fontsize=6)
    axes[2].legend(fontsize=6)
    figs.append(Figure(save(fig, out_dir, "deep_grokking_weight_norm.png"),
                       "Train/test accuracy, weight norm (all parameters; dashed: last layer), and the rank of the "
                       "second-last layer (solid: matrix_rank default tolerance; dashed: relative tolerance "
                       "rank_rtol) and its effective rank. The paper (Fig. 5) reports that the weight norm decays "
                       "smoothly with no sign of the transition, while the second-last layer's rank marks it.",
                       "Weight norm vs feature rank (Fig. 5)"))

    # The telescoping-side view available here: NTK alignment and tunnel length on one axis
    has_ntk = bool(len(metrics[metrics["name"] == "ntk/alignment"]))
    fig, axes = plt.subplots(1, 2 if has_ntk else 1, figsize=(9 if has_ntk else 4.5, 3.2), squeeze=False)
    for key, color in zip(units, palette):
        frame = _unit(metrics, key)
        for name, style in (("tunnel_length", "-"), ("tunnel_length_rel", "--")):
            c = _curve(frame, "test", name)
            axes[0][0].plot(c["step"].clip(lower=1), c["value"], style, color=color, label=f"{_label(key)} {name}")
        if has_ntk:
            c = _curve(frame, "test", "ntk/alignment")
            axes[0][1].plot(c["step"].clip(lower=1), c["value"], "o-", ms=3, color=color, label=_label(key))
    axes[0][0].set_ylabel("tunnel length (layers with rank < 0.75·width)")
    axes[0][0].legend(fontsize=6)
    if has_ntk:
        axes[0][1].set_ylabel("centred NTK–label alignment (last hidden layer)")
        axes[0][1].legend(fontsize=6)
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlabel("optimization step")
    figs.append(Figure(save(fig, out_dir, "deep_grokking_tunnel_ntk.png"),
                       "Tunnel length (number of hidden layers whose rank is below 0.75·width; dashed: with the "
                       "relative-tolerance rank) and the centred alignment between the last hidden layer's tangent "
                       "kernel and the one-hot label kernel on a test subset. The paper reports longer tunnels for "
                       "deeper nets (Fig. 3, 4); the alignment is this package's addition (not in the paper).",
                       "Tunnel length and kernel alignment"))
    return figs
