"""Figures of the lazy-to-rich study (Kumar et al. Fig. 1, 2, 3a, 3b, 3e, 4)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib


def _series(frame: pd.DataFrame, split: str, name: str) -> pd.DataFrame:
    s = frame[(frame["split"] == split) & (frame["name"] == name)].sort_values("step")
    return s[["step", "value"]]


def _unit(metrics: pd.DataFrame, alpha: float, eps: float) -> pd.DataFrame:
    c = metrics[metrics["model"] == "committee"]
    return c[np.isclose(c["alpha"], alpha) & np.isclose(c["epsilon"], eps)]


def _summary_value(unit: pd.DataFrame, name: str) -> float:
    s = unit[(unit["split"] == "summary") & (unit["name"] == name)]["value"]
    return float(s.iloc[0]) if len(s) else float("nan")


def _fmt(v: float, spec: str = ".0f") -> str:
    return "never" if not math.isfinite(v) else format(v, spec)


def _pos(s: pd.DataFrame) -> pd.DataFrame:
    return s[s["step"] > 0]


def _headline(plt, metrics, config, out_dir) -> Figure | None:
    alpha, eps = float(config["alpha"]), float(config["epsilon"])
    unit = _unit(metrics, alpha, eps)
    if unit.empty:
        c = metrics[metrics["model"] == "committee"]
        if c.empty:
            return None
        alpha, eps = float(c["alpha"].iloc[0]), float(c["epsilon"].iloc[0])
        unit = _unit(metrics, alpha, eps)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.9))
    fig.subplots_adjust(wspace=0.55)
    ax = axes[0]
    for split, style in (("train", "--"), ("test", "-")):
        s = _pos(_series(unit, split, "mse"))
        ax.plot(s["step"], s["value"], style, color="tab:blue", lw=2, label=f"{split} loss")
        s = _pos(_series(unit, split, "linearized/mse"))
        ax.plot(s["step"], s["value"], style, color="black", lw=1, label=f"linearized {split} loss")
    kreg = _summary_value(unit, "kernel_regression_mse")
    ax.axhline(kreg, color="tab:red", lw=1, label="K₀ regression MSE")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title(f"(a) loss, α={alpha:g}, ε={eps:g}")
    ax2 = ax.twinx()
    for name, color, label in (("ntk/alignment_code", "tab:green", "NTK alignment (paper code)"),
                               ("ntk/alignment", "tab:olive", "NTK alignment (centred)")):
        s = _pos(_series(unit, "test", name))
        ax2.plot(s["step"], s["value"], ":", color=color, lw=2, label=label)
    ax2.set_ylabel("NTK alignment on test")
    ax2.grid(False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")

    ax = axes[1]
    wn = _series(unit, "train", "weight_norm")
    ax.plot(wn["step"].clip(lower=1), wn["value"], color="tab:purple", lw=2, label="weight norm ‖W‖")
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("‖W‖_F")
    ax.set_title("(b) weight norm (no weight decay)")
    ax2 = ax.twinx()
    rc = _series(unit, "train", "param/relative_change")
    ax2.plot(rc["step"].clip(lower=1), rc["value"], "--", color="tab:orange", label="‖W − W₀‖/‖W₀‖")
    fa = _series(unit, "train", "feature/alignment")
    ax2.plot(fa["step"].clip(lower=1), fa["value"] / float(config["d"]), ":", color="tab:gray",
             label="feature alignment β̂ᵀMβ̂/Tr M")
    ax2.grid(False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")

    ax = axes[2]
    for name, color in (("variance", "tab:orange"), ("misalignment", "tab:green"), ("linear", "tab:red"),
                        ("total", "black")):
        s = _pos(_series(unit, "population", f"decomposition/{name}"))
        ax.plot(s["step"], s["value"], "-" if name != "total" else "--", color=color,
                label={"linear": "power in linear modes", "total": "sum (population loss)"}.get(name, f"{name} error"))
    s = _pos(_series(unit, "test", "mse"))
    ax.plot(s["step"], s["value"], color="tab:blue", alpha=0.5, lw=3, label="test MSE (1 sample)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title("(c) exact loss decomposition")
    ax.legend(fontsize=7, loc="lower left")

    l0 = _summary_value(unit, "initial_test")
    final = _summary_value(unit, "final_test")
    al = _series(unit, "test", "ntk/alignment_code")
    pw = _series(unit, "population", "decomposition/linear")
    wr = _summary_value(unit, "weight_norm_ratio")
    caption = (
        f"Committee machine, α={alpha:g}, ε={eps:g}, D={config['d']}, N={config['width']}, P={config['n_train']}, "
        "centred predictor, full-batch GD, no weight decay. The paper (Fig. 1, 4) reports: the train loss falls "
        "early while the test loss follows the linearized network and first rises (power in linear modes), then "
        "falls far below the initial-kernel regression MSE while the NTK alignment rises and the weight norm grows. "
        f"This run: initial test MSE {l0:.3f}, maximum {_summary_value(unit, 'max_test'):.3f} at epoch "
        f"{_fmt(_summary_value(unit, 'max_test_epoch'))}, final {final:.3g} against K₀ regression {kreg:.3f} and "
        f"the linearized network's {_summary_value(unit, 'final_linearized_test'):.3f}; train loss below ½L₀ at "
        f"epoch {_fmt(_summary_value(unit, 'epoch_train_below'))}, test at "
        f"{_fmt(_summary_value(unit, 'epoch_test_below'))}; power in linear modes peaks at "
        f"{pw['value'].max():.3g} (epoch {int(pw['step'].iloc[int(pw['value'].values.argmax())])}); NTK alignment "
        f"(paper code) {al['value'].iloc[0]:.4f} → {al['value'].iloc[-1]:.4f}; weight norm ×{wr:.2f}. "
        "(c) is the exact population loss (eq. 6) of the current weights; the thick blue line is the test MSE on "
        f"{config['n_test']} samples.")
    return Figure(save(fig, out_dir, "lazy_rich_headline.png"), caption, "Grokking as lazy → rich (Fig. 1, 4)")


def _sweep(plt, metrics, config, out_dir, role: str, key: str, symbol: str) -> Figure | None:
    c = metrics[(metrics["model"] == "committee")]
    c = c[c["roles"].str.contains(role)]
    if c.empty:
        return None
    values = sorted(c[key].unique())
    cmap = plt.cm.viridis(np.linspace(0.05, 0.9, len(values)))
    has_p = bool((c["name"] == "smoother/p_eff").any())
    fig, axes = plt.subplots(1, 3 if has_p else 2, figsize=(15 if has_p else 10, 3.6))
    lines = []
    for v, color in zip(values, cmap):
        unit = c[np.isclose(c[key], v)]
        l0 = _summary_value(unit, "initial_test")
        for split, style in (("train", "--"), ("test", "-")):
            s = _pos(_series(unit, split, "mse"))
            axes[0].plot(s["step"], s["value"] / l0, style, color=color,
                         label=f"{symbol}={v:g}" if split == "test" else None)
        wn = _series(unit, "train", "weight_norm")
        axes[1].plot(wn["step"].clip(lower=1), wn["value"] / wn["value"].iloc[0], color=color, label=f"{symbol}={v:g}")
        if has_p:
            for split, style in (("train", "--"), ("test", "-")):
                p = _pos(_series(unit, split, "smoother/p_eff"))
                axes[2].plot(p["step"], p["value"], style, color=color,
                             label=f"{symbol}={v:g}" if split == "test" else None)
        lines.append(f"{symbol}={v:g}: train<½L₀ at {_fmt(_summary_value(unit, 'epoch_train_below'))}, "
                     f"test<½L₀ at {_fmt(_summary_value(unit, 'epoch_test_below'))} (delay "
                     f"{_fmt(_summary_value(unit, 'delay'))}), final test/L₀ "
                     f"{_summary_value(unit, 'final_test') / l0:.3g}")
    axes[0].axhline(float(config["grok_threshold"]), color="grey", lw=0.8, ls=":")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("MSE / initial test MSE (solid test, dashed train)")
    axes[0].legend(fontsize=7)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("‖W‖ / ‖W₀‖")
    axes[1].legend(fontsize=7)
    if has_p:
        axes[2].set_xscale("log")
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("effective parameters (solid p^test, dashed p^train)")
        axes[2].legend(fontsize=7)
    fixed = (f"ε={config['epsilon']:g}" if key == "alpha" else f"α={config['alpha']:g}")
    if key == "alpha":
        paper = ("The paper (Fig. 3a) reports that the train–test delay grows continuously with α, vanishes for "
                 "small α, and that small α reaches a lower final test loss.")
        name, title = "lazy_rich_alpha.png", "α sweep (Fig. 3a)"
    else:
        paper = "The paper (Fig. 3b) reports that smaller ε gives a longer delay and a lower final test loss."
        name, title = "lazy_rich_epsilon.png", "ε sweep (Fig. 3b)"
    caption = (f"Train (dashed) and test (solid) loss relative to the initial test loss, {fixed}, and the weight norm "
               f"relative to init. {paper} This run: " + "; ".join(lines) + ".")
    return Figure(save(fig, out_dir, name), caption, title)


def _phase(plt, metrics, config, out_dir) -> Figure | None:
    c = metrics[(metrics["model"] == "committee")]
    c = c[c["roles"].str.contains("phase") & (c["split"] == "summary") & (c["name"] == "delay")]
    if c.empty:
        return None
    alphas, epss = sorted(c["alpha"].unique()), sorted(c["epsilon"].unique())
    grid = np.full((len(epss), len(alphas)), np.nan)
    for _, row in c.iterrows():
        grid[epss.index(row["epsilon"]), alphas.index(row["alpha"])] = row["value"]
    fig, ax = plt.subplots(figsize=(5, 4))
    masked = np.ma.masked_invalid(grid)
    im = ax.imshow(masked, origin="lower", aspect="auto", cmap="magma")
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(epss)), [f"{e:g}" for e in epss])
    for i in range(len(epss)):
        for j in range(len(alphas)):
            ax.text(j, i, "–" if np.isnan(grid[i, j]) else f"{grid[i, j]:.0f}", ha="center", va="center",
                    fontsize=7, color="white" if np.isnan(grid[i, j]) or grid[i, j] < np.nanmax(grid) / 2 else "black")
    ax.set_xlabel("α (laziness)")
    ax.set_ylabel("ε (kernel–task alignment)")
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="time to grok (epochs)")
    caption = ("Time to grok (first epoch with test < ½L₀ minus first epoch with train < ½L₀; '–' = the test loss "
               f"never crossed within {config['phase_epochs']} epochs) over α and ε. The paper (Fig. 3e) reports the "
               "longest times for lazy (large α) and misaligned (small ε) networks.")
    return Figure(save(fig, out_dir, "lazy_rich_phase.png"), caption, "Phase diagram (Fig. 3e)")


def _modular(plt, metrics, config, out_dir) -> Figure | None:
    m = metrics[metrics["model"] == "modular"]
    if m.empty:
        return None
    scales = sorted(m["alpha"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    cmap = plt.cm.plasma(np.linspace(0.05, 0.85, len(scales)))
    lines = []
    for s, color in zip(scales, cmap):
        unit = m[np.isclose(m["alpha"], s)]
        for split, style in (("train", "--"), ("test", "-")):
            e = _series(unit, split, "error")
            axes[0].plot(e["step"].clip(lower=1), 1 - e["value"], style, color=color,
                         label=f"scale {s:g}" if split == "test" else None)
        w = _series(unit, "train", "weight_norm")
        axes[1].plot(w["step"].clip(lower=1), w["value"], color=color, label=f"scale {s:g}")
        lines.append(f"scale {s:g}: train acc ≥ 90% at {_fmt(_summary_value(unit, 'epoch_train_acc_90'))}, "
                     f"test at {_fmt(_summary_value(unit, 'epoch_test_acc_90'))}, final test acc "
                     f"{_summary_value(unit, 'final_test_acc'):.2f}")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("accuracy (solid test, dashed train)")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("weight norm (all parameters)")
    caption = (f"Quadratic MLP on a + b mod {config['modular_p']} (width {config['modular_width']}, "
               f"{config['modular_train_fraction']:.0%} of pairs for training), full-batch GD, no weight decay. "
               "The paper (Fig. 2) reports grokking in accuracy with a growing weight norm, controlled by the "
               "output scale. This run: " + "; ".join(lines) + ".")
    return Figure(save(fig, out_dir, "lazy_rich_modular.png"), caption, "Modular arithmetic (Fig. 2)")


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    out = [_headline(plt, metrics, config, out_dir),
           _sweep(plt, metrics, config, out_dir, "alpha_sweep", "alpha", "α"),
           _sweep(plt, metrics, config, out_dir, "epsilon_sweep", "epsilon", "ε"),
           _phase(plt, metrics, config, out_dir),
           _modular(plt, metrics, config, out_dir)]
    return [f for f in out if f is not None]
