"""Figures of the spawning study (paper Fig. 6): barriers and gradient change vs spawn step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

COLORS = {"random": "tab:red", "pretrained": "tab:blue"}
KINDS = (("hidden", "hidden layers"), ("batchnorm", "BatchNorm layers"), ("output", "output layer"))


def _by_step(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    g = frame[frame["name"] == name].groupby("step")["value"]
    out = pd.DataFrame({"mean": g.mean(), "se": (g.std(ddof=1) / np.sqrt(g.count())).fillna(0.0)})
    return out.reset_index()


def _xpos(steps: pd.Series) -> pd.Series:
    return steps.clip(lower=0.5)  # t' = 0 on a log axis


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    test = metrics[metrics["split"] == "test"]
    variants = [v for v in config["variants"] if v in set(test["variant"])]
    figs: list[Figure] = [_fig6(plt, test, variants, config, summary, out_dir)]

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    for variant in variants:
        sub = test[test["variant"] == variant]
        for ax, name, label in ((axes[0], "barrier/error_max", "error barrier (max over α)"),
                                (axes[1], "barrier/loss_max", "loss barrier (max over α)")):
            s = _by_step(sub, name)
            ax.errorbar(_xpos(s["step"]), s["mean"], yerr=s["se"], marker="o", color=COLORS.get(variant),
                        label=variant, capsize=2)
            ax.set_title(label)
        for name, style in (("wa/avg_vs_ensemble", "-"), ("wa/avg_vs_first_order", "--")):
            s = _by_step(sub, name)
            axes[2].plot(_xpos(s["step"]), s["mean"], style, marker="o", color=COLORS.get(variant),
                         label=f"{variant}: {'averaged vs ensemble' if style == '-' else 'averaged vs first-order'}")
    axes[2].set_title("weight-averaging view, mean |Δ logit|")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("spawn step t' (t'=0 drawn at 0.5)")
    axes[0].legend()
    axes[2].legend(fontsize=7)
    axes[2].set_yscale("log")
    figs.append(Figure(save(fig, out_dir, "lmc_barriers.png"),
                       "Barriers of the weight-averaged children against the average of the children, as a function "
                       "of the spawn step t' (mean ± s.e. over seeds and pairs), and the gaps between the averaged-"
                       "weights model, the output ensemble and the first-order telescoping prediction from θ_t'. "
                       "The paper (Fig. 6, after Frankle et al.) reports a large barrier at t' = 0 that vanishes after "
                       "an early point in training, and a lower barrier after pretraining.",
                       "Linear mode connectivity (Fig. 6, panel 1)"))

    layers = sorted({n.split("/", 1)[1] for n in test["name"] if n.startswith("grad_change/")} - {"all"})
    fig, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants), 3.5), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        sub = test[test["variant"] == variant]
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(layers)))
        for layer, color in zip(layers, colors):
            s = _by_step(sub, f"grad_change/{layer}")
            ax.plot(_xpos(s["step"]), s["mean"], marker=".", color=color, label=layer)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"gradient change by layer ({variant})")
        ax.set_xlabel("spawn step t'")
        ax.set_ylabel("mean (∂f_{t'+Δ} − ∂f_{t'})²")
        ax.legend(fontsize=6, ncol=2)
    figs.append(Figure(save(fig, out_dir, "lmc_gradient_change_layers.png"),
                       "Mean squared change of the true-class logit's gradient, per layer, between the parent at t' "
                       "and one epoch later (256 test inputs). The paper (Fig. 6, panels 2–3) reports that the "
                       "barrier disappears when these curves flatten, most clearly for the output layer; after "
                       "pretraining hidden and output gradients change less.", "Gradient stabilisation (Fig. 6)"))
    return figs


def _fig6(plt, test: pd.DataFrame, variants: list[str], config: dict, summary: dict, out_dir: Path) -> Figure:
    """Barrier and gradient change by kind of layer vs t', the variants overlaid (paper Fig. 6)."""
    kinds = [(k, label) for k, label in KINDS if (test["name"] == f"grad_change_kind/{k}").any()]
    panels = [("barrier/error_max", "error barrier (max over α)", False),
              ("barrier/loss_max", "loss barrier (max over α)", False)]
    panels += [(f"grad_change_kind/{k}", f"gradient change: {label}", True) for k, label in kinds]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.3), squeeze=False)
    for ax, (name, title, logy) in zip(axes[0], panels):
        for variant in variants:
            s = _by_step(test[test["variant"] == variant], name)
            if len(s):
                ax.errorbar(_xpos(s["step"]), s["mean"], yerr=s["se"], marker="o", capsize=2,
                            color=COLORS.get(variant), label=variant)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        else:
            ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("spawn step t' (t'=0 at 0.5)")
    axes[0][0].legend(fontsize=8)
    source = summary.get("pretrained/source_dataset", config.get("pretrain_dataset") or "the source task")
    err = summary.get("pretrained/source_error")
    pre = (f" Pretrained arm: {config.get('model')} trained {config.get('pretrain_steps')} steps on {source}"
           + (f" (source test error {err:.3f})" if err is not None else "")
           + f", output layer re-initialised, then fine-tuned on {config.get('dataset')}.") \
        if "pretrained" in variants else ""
    return Figure(save(fig, out_dir, "lmc_gradient_change.png"),
                  "Barrier of the weight-averaged children (mean ± s.e. over seeds and pairs; an arm with a single "
                  "pair has no bars) and the mean squared "
                  "change of the true-class logit's gradient between the parent at t' and one epoch later, by kind "
                  "of layer (256 test inputs), as a function of the spawn step t'. The paper (Fig. 6) reports that "
                  "the barrier vanishes when the gradient changes flatten, most clearly for the output layer, and "
                  "that pretraining (SVHN → CIFAR-10) lowers the barrier and makes hidden and output gradients "
                  "change less (BatchNorm gradients more)." + pre,
                  "Barriers and gradient stabilisation, random vs pretrained init (Fig. 6)")
