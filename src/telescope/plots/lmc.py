"""Figures of the spawning study (paper Fig. 6): barriers and gradient change vs spawn step.

Every curve is the mean over outer seeds × pairs (barriers) or over outer seeds (gradient
changes) with a band of ± one standard error; single (seed, pair) values are drawn as dots
on the barrier figure so the spread can be compared with the effect. t' = 0 sits at 0.5 on
the log axis and every tick is a t' of the run, printed as an integer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

COLORS = {"random": "tab:red", "pretrained": "tab:blue"}
KINDS = (("hidden", "hidden layers"), ("batchnorm", "BatchNorm layers"), ("output", "output layer"))
GRAD_LABEL = r"mean $(\partial_\theta f_{t'+\Delta} - \partial_\theta f_{t'})^2$"


def _by_step(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    g = frame[frame["name"] == name].groupby("step")["value"]
    out = pd.DataFrame({"mean": g.mean(), "se": (g.std(ddof=1) / np.sqrt(g.count())).fillna(0.0)})
    return out.reset_index()


def _xpos(steps) -> np.ndarray:
    return np.clip(np.asarray(steps, dtype=float), 0.5, None)  # t' = 0 on a log axis


def _band(ax, s: pd.DataFrame, color, label, style="-"):
    x = _xpos(s["step"])
    ax.plot(x, s["mean"], style, marker="o", ms=3.5, color=color, label=label)
    ax.fill_between(x, s["mean"] - s["se"], s["mean"] + s["se"], color=color, alpha=0.2, lw=0)


def _step_axis(ax, steps) -> None:
    """Log x axis with one integer tick per spawn step."""
    steps = sorted({int(t) for t in steps})
    ax.set_xscale("log")
    ax.set_xticks(_xpos(steps))
    ax.set_xticklabels([str(t) for t in steps])
    ax.minorticks_off()
    ax.set_xlabel("spawn step t'")


def _legend_below(fig, axes) -> None:
    """One legend for the figure, under the panels (never on the data); lays the panels out first."""
    fig.tight_layout()
    handles, labels = [], []
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 4),
               fontsize=8)


def _pm(summary: dict, key: str, fmt: str = ".3f") -> str:
    if key not in summary:
        return "n/a"
    se = summary.get(key + "_se")
    return f"{summary[key]:{fmt}}" + (f" ± {se:{fmt}}" if se is not None else "")


def _separated(summary: dict, a: str, b: str) -> bool | None:
    """Whether summary[a] > summary[b] by more than two combined standard errors (None: no s.e.)."""
    if a not in summary or b not in summary or a + "_se" not in summary or b + "_se" not in summary:
        return None
    return summary[a] - summary[b] > 2 * float(np.hypot(summary[a + "_se"], summary[b + "_se"]))


def _findings(summary: dict, variants: list[str], steps: dict[str, list[int]]) -> str:
    """What this run shows for facts 18–20, in words, with mean ± s.e. and contradictions flagged."""
    out = []
    if "random" in variants and steps.get("random"):
        first, last = steps["random"][0], steps["random"][-1]
        a, b = f"random/t={first}/error_barrier_max", f"random/t={last}/error_barrier_max"
        sep = _separated(summary, a, b)
        out.append(f"This run, random init: error barrier {_pm(summary, a)} at t' = {first} and {_pm(summary, b)} "
                   f"at t' = {last} (mean ± s.e. over {summary.get(a + '_n', '?')} seed × pair values)"
                   + ("; the fall exceeds twice its standard error." if sep else
                      "; the fall does NOT exceed twice its standard error, so this run does not separate it "
                      "from the noise." if sep is False else "."))
        ga, gb = f"random/t={first}/grad_change_kind/output", f"random/t={last}/grad_change_kind/output"
        if ga in summary and gb in summary:
            out.append(f"Output-layer gradient change {summary[ga]:.2e} → {summary[gb]:.2e}.")
    if "pretrained" in variants and "random" in variants and steps.get("pretrained"):
        t = steps["pretrained"][0]
        r, p = f"random/t={t}/error_barrier_max", f"pretrained/t={t}/error_barrier_max"
        sep = _separated(summary, r, p)
        out.append(f"At t' = {t} the pretrained arm's error barrier is {_pm(summary, p)} against {_pm(summary, r)}"
                   + (" (lower by more than two standard errors)." if sep else
                      " — NOT lower by more than two standard errors, unlike the paper." if sep is False else "."))
        for kind, name, paper_more in (("hidden", "Hidden-layer", False), ("output", "Output-layer", False),
                                       ("batchnorm", "BatchNorm", True)):
            rk, pk = f"random/t={t}/grad_change_kind/{kind}", f"pretrained/t={t}/grad_change_kind/{kind}"
            if rk in summary and pk in summary:
                more = summary[pk] > summary[rk]
                agrees = "as the paper reports" if more == paper_more else "the OPPOSITE of the paper"
                out.append(f"{name} gradient change at t' = {t}: pretrained {summary[pk]:.2e} vs random "
                           f"{summary[rk]:.2e} ({'more' if more else 'less'}, {agrees}).")
    return " ".join(out)


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    test = metrics[metrics["split"] == "test"]
    variants = [v for v in config["variants"] if v in set(test["variant"])]
    steps = {v: sorted(int(t) for t in test[(test["variant"] == v) & (test["name"] == "barrier/error_max")]["step"]
                       .unique()) for v in variants}
    all_steps = sorted({t for v in variants for t in steps[v]})
    findings = _findings(summary, variants, steps)
    data = summary.get("data/description", config.get("dataset"))
    child = (f"every child trains {config['child_steps']} steps after spawning" if config.get("child_steps")
             else f"children train to step {config.get('steps')} (later spawns train fewer steps)")
    setting = (f"{config.get('model')} on {data}, {config.get('seeds', 1)} outer seed(s); {child}; "
               f"Δ = {summary.get('delta', config.get('delta'))} steps.")
    figs: list[Figure] = [_fig6(plt, test, variants, all_steps, config, summary, out_dir, setting, findings)]

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    for variant in variants:
        sub = test[test["variant"] == variant]
        color = COLORS.get(variant)
        for ax, name, label in ((axes[0], "barrier/error_max", "error barrier (max over α)"),
                                (axes[1], "barrier/loss_max", "loss barrier (max over α)")):
            _band(ax, _by_step(sub, name), color, variant)
            pts = sub[sub["name"] == name]
            ax.scatter(_xpos(pts["step"]), pts["value"], s=9, color=color, alpha=0.45, lw=0)
            ax.set_title(label)
            ax.axhline(0.0, color="0.6", lw=0.8)
        for name, style, what in (("wa/avg_vs_ensemble", "-", "averaged vs ensemble"),
                                  ("wa/avg_vs_first_order", "--", "averaged vs first-order")):
            _band(axes[2], _by_step(sub, name), color, f"{variant}: {what}", style)
    axes[2].set_title("weight-averaging view, mean |Δ logit|")
    axes[2].set_yscale("log")
    for ax in axes:
        _step_axis(ax, all_steps)
    _legend_below(fig, axes)
    figs.append(Figure(save(fig, out_dir, "lmc_barriers.png"),
                       "Barriers of the weight-averaged children against the straight line between the children, as a "
                       "function of the spawn step t' (line and band: mean ± s.e.; dots: single seed × pair values), "
                       "and the gaps between the averaged-weights model, the output ensemble and the first-order "
                       "telescoping prediction from θ_t' (α = ½). " + setting + " The paper (Fig. 6, after Frankle et "
                       "al.) reports a large barrier at t' = 0 that vanishes after an early point in training, and a "
                       "lower barrier after pretraining. " + findings,
                       "Linear mode connectivity (Fig. 6, panel 1)"))

    layers = sorted({n.split("/", 1)[1] for n in test["name"] if n.startswith("grad_change/")} - {"all"})
    fig, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants), 3.5), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(layers)))
    for ax, variant in zip(axes[0], variants):
        sub = test[test["variant"] == variant]
        for layer, color in zip(layers, colors):
            _band(ax, _by_step(sub, f"grad_change/{layer}"), color, layer)
        _step_axis(ax, steps[variant])
        ax.set_yscale("log")
        ax.set_title(f"gradient change by layer ({variant} init)")
        ax.set_ylabel(GRAD_LABEL)
    _legend_below(fig, axes)
    figs.append(Figure(save(fig, out_dir, "lmc_gradient_change_layers.png"),
                       f"Mean squared change of the true-class logit's gradient, per layer (module path), between the "
                       f"parent at t' and at t' + Δ ({config.get('n_grad')} test inputs; mean ± s.e. over outer "
                       f"seeds). " + setting + " The paper (Fig. 6, panels 2–3) reports that the barrier disappears "
                       "when these curves flatten, most clearly for the output layer; after pretraining hidden and "
                       "output gradients change less and BatchNorm gradients more.", "Gradient stabilisation (Fig. 6)"))
    return figs


def _fig6(plt, test: pd.DataFrame, variants: list[str], all_steps: list[int], config: dict, summary: dict,
          out_dir: Path, setting: str, findings: str) -> Figure:
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
                _band(ax, s, COLORS.get(variant), f"{variant} init")
        _step_axis(ax, all_steps)
        if logy:
            ax.set_yscale("log")
            ax.set_ylabel(GRAD_LABEL if ax is axes[0][2] else "")
        else:
            ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title(title, fontsize=9)
    _legend_below(fig, axes)
    source = summary.get("pretrained/source_dataset", config.get("pretrain_dataset") or "the source task")
    source = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}.get(source, source)
    err = summary.get("pretrained/source_error")
    data = summary.get("data/description", config.get("dataset"))
    pre = (f" Pretrained arm: {config.get('model')} trained {config.get('pretrain_steps')} steps on {source}"
           + (f" (source test error {err:.3f}, mean over outer seeds)" if err is not None else "")
           + f", output layer re-initialised, then fine-tuned on {data}.") if "pretrained" in variants else ""
    return Figure(save(fig, out_dir, "lmc_gradient_change.png"),
                  "Barrier of the weight-averaged children (mean ± s.e. band over outer seeds × pairs) and the mean "
                  "squared change of the true-class logit's gradient between the parent at t' and t' + Δ, by kind of "
                  f"layer ({config.get('n_grad')} test inputs; band over outer seeds), as a function of the spawn "
                  "step t'. " + setting + pre + " The paper (Fig. 6, ResNet-20 on CIFAR-10) reports that the barrier "
                  "vanishes when the gradient changes flatten, most clearly for the output layer, and that "
                  "pretraining (SVHN → CIFAR-10) lowers the barrier and makes hidden and output gradients change "
                  "less, BatchNorm gradients more. " + findings,
                  "Barriers and gradient stabilisation, random vs pretrained init (Fig. 6)")
