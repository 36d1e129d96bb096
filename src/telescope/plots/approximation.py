"""Figures of the approximation study (paper Fig. 2/7: errors; Fig. 8: accuracies)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

TITLES = {"sgd": "SGD", "adamw": "AdamW", "momentum": "SGD + momentum",
          "weight_decay": "SGD + weight decay", "sigmoid": "SGD + σ(·)"}


def _mean_se(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    g = frame[frame["name"] == name].groupby("step")["value"]
    out = pd.DataFrame({"mean": g.mean(), "se": g.std(ddof=1) / np.sqrt(g.count())}).reset_index()
    out["se"] = out["se"].fillna(0.0)
    return out


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    test = metrics[metrics["split"] == "test"]
    settings = [s for s in config["settings"] if s in set(test["setting"])]
    figs: list[Figure] = []

    fig, axes = plt.subplots(1, len(settings), figsize=(3.2 * len(settings), 3.0), squeeze=False, sharey=True)
    for ax, setting in zip(axes[0], settings):
        sub = test[test["setting"] == setting]
        lrs = sorted(sub["lr"].unique())
        reds = plt.cm.Reds(np.linspace(0.45, 0.95, len(lrs)))
        greys = plt.cm.Greys(np.linspace(0.35, 0.8, len(lrs)))
        for lr, red, grey in zip(lrs, reds, greys):
            part = sub[sub["lr"] == lr]
            for name, color, style, label in (("telescope/abs_err", red, "-", "telescoping"),
                                              ("linearized/abs_err", grey, "--", "linearized")):
                s = _mean_se(part, name)
                s = s[s["step"] > 0]
                ax.plot(s["step"], s["mean"], style, color=color, label=f"{label}, γ={lr:g}")
                ax.fill_between(s["step"], np.clip(s["mean"] - s["se"], 1e-12, None), s["mean"] + s["se"],
                                color=color, alpha=0.2, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(TITLES.get(setting, setting))
        ax.set_xlabel("optimization step")
    axes[0][0].set_ylabel("mean |f(x) − approx(x)| on test")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), bbox_to_anchor=(0.5, 1.12), fontsize=7)
    figs.append(Figure(save(fig, out_dir, "approximation_error.png"),
                       "Mean absolute difference on the test set between the network and the telescoping model f̃ "
                       "(red, solid) and the linearization around initialization f_lin (grey, dashed), per setting and "
                       "learning rate γ (mean ± s.e. over seeds). The paper (Fig. 2, 7) reports that f̃ is orders of "
                       "magnitude closer than f_lin, that its error grows with γ, and that AdamW needs a smaller γ "
                       "than SGD for the same error.", "Approximation error (Fig. 2, 7)"))

    fig, axes = plt.subplots(2, len(settings), figsize=(3.2 * len(settings), 5.2), squeeze=False, sharey=True, sharex=True)
    for col, setting in enumerate(settings):
        sub = test[test["setting"] == setting]
        lr = max(sub["lr"].unique())
        part = sub[sub["lr"] == lr]
        net = _mean_se(part, "error")
        for row, (name, color, label) in enumerate((("telescope/error", "tab:red", "telescoping f̃"),
                                                    ("linearized/error", "tab:blue", "linearized f_lin"))):
            ax = axes[row][col]
            approx = _mean_se(part, name)
            ax.plot(net["step"].clip(lower=1), 1 - net["mean"], color="grey", lw=2.5, alpha=0.6, label="network")
            ax.plot(approx["step"].clip(lower=1), 1 - approx["mean"], color=color, label=label)
            ax.set_xscale("log")
            if row == 0:
                ax.set_title(f"{TITLES.get(setting, setting)} (γ={lr:g})")
            if col == 0:
                ax.set_ylabel("test accuracy")
                ax.legend(loc="lower right", fontsize=7)
            if row == 1:
                ax.set_xlabel("optimization step")
    figs.append(Figure(save(fig, out_dir, "approximation_accuracy.png"),
                       "Test accuracy (threshold 0.5) of the network (grey) against the telescoping model (top, red) "
                       "and the linearization around initialization (bottom, blue), at the largest γ of each setting. "
                       "The paper (Fig. 8) reports no visible difference for f̃ and a clear departure of f_lin later "
                       "in training.", "Accuracy of the approximations (Fig. 8)"))
    return figs
