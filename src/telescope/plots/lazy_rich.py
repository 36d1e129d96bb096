"""Figures of the lazy-to-rich study (Kumar et al. Fig. 1, 2, 3a, 3b, 3e, 4, 6a)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib


def _series(frame: pd.DataFrame, split: str, name: str) -> pd.DataFrame:
    s = frame[(frame["split"] == split) & (frame["name"] == name)].sort_values("step")
    return s[["step", "value"]]


def _sigma_one(c: pd.DataFrame) -> pd.DataFrame:
    """Units at the default init scale σ = 1 (runs stored before the σ sweep have no column)."""
    return c[c["sigma"] == 1.0] if "sigma" in c.columns else c


def _unit(metrics: pd.DataFrame, alpha: float, eps: float) -> pd.DataFrame:
    c = _sigma_one(metrics[metrics["model"] == "committee"])
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
        c = _sigma_one(metrics[metrics["model"] == "committee"])
        if c.empty:
            return None
        alpha, eps = float(c["alpha"].iloc[0]), float(c["epsilon"].iloc[0])
        unit = _unit(metrics, alpha, eps)
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.6))
    fig.subplots_adjust(wspace=0.32, hspace=0.45)
    ax = axes[0, 0]
    for split, style in (("train", "--"), ("test", "-")):
        s = _pos(_series(unit, split, "mse"))
        ax.plot(s["step"], s["value"], style, color="tab:blue", lw=2, label=f"network, {split}")
        s = _pos(_series(unit, split, "linearized/mse"))
        ax.plot(s["step"], s["value"], style, color="black", lw=1, label=f"linearized network, {split}")
    kreg = _summary_value(unit, "kernel_regression_mse")
    ax.axhline(kreg, color="tab:red", lw=1, label="K₀ ridgeless regression (test)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title(f"(a) loss, α={alpha:g}, ε={eps:g}")
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[0, 1]
    for name, color in (("variance", "tab:orange"), ("misalignment", "tab:green"), ("linear", "tab:red"),
                        ("total", "black")):
        s = _pos(_series(unit, "population", f"decomposition/{name}"))
        ax.plot(s["step"], s["value"], "-" if name != "total" else "--", color=color,
                label={"linear": "power in linear modes", "total": "sum (population loss)"}.get(name, f"{name} error"))
    s = _pos(_series(unit, "test", "mse"))
    ax.plot(s["step"], s["value"], color="tab:blue", alpha=0.5, lw=3, label="test MSE (sample)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("population MSE and its three terms")
    ax.set_title("(b) exact loss decomposition (eq. 6)")
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[0, 2]
    top = 0.0
    for name, color, marker, label in (("ntk/alignment_code", "tab:green", None, "paper's code (column-centred K)"),
                                       ("ntk/alignment", "tab:purple", "o", "Cortes et al. (HKH)")):
        s = _pos(_series(unit, "test", name))
        ax.plot(s["step"], s["value"], color=color, lw=2 if marker is None else 0.8, marker=marker, ms=3,
                ls="-" if marker is None else ":", label=label)
        top = max(top, float(s["value"].max()) if len(s) else 0.0)
    ax.set_ylim(0, 1.15 * top if top > 0 else 1)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("kernel–target alignment of K_t on test")
    ax.set_title("(c) NTK alignment (axis from 0)")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1, 0]
    wn = _series(unit, "train", "weight_norm")
    w0 = float(wn["value"].iloc[0]) if len(wn) else float("nan")
    ax.plot(wn["step"].clip(lower=1), wn["value"] / w0, color="tab:purple", lw=2, label="‖W‖ / ‖W₀‖")
    rc = _series(unit, "train", "param/relative_change")
    ax.plot(rc["step"].clip(lower=1), rc["value"], "--", color="tab:orange", lw=2, label="‖W − W₀‖ / ‖W₀‖")
    ax.set_xscale("log")
    ax.set_xlabel("epoch (epoch 0 drawn at 1)")
    ax.set_ylabel("relative to ‖W₀‖")
    ax.set_title("(d) weights (no weight decay)")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1, 1]
    fa = _series(unit, "train", "feature/alignment")
    ax.plot(fa["step"].clip(lower=1), fa["value"], color="tab:gray", lw=2, label="D·β̂ᵀMβ̂ / Tr M")
    ax.axhline(1.0, color="k", lw=0.6, ls=":", label="isotropic (init)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch (epoch 0 drawn at 1)")
    ax.set_ylabel(f"feature alignment (1 … D = {config['d']})")
    ax.set_title("(e) first-layer features align with β")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[1, 2]
    code = _pos(_series(unit, "test", "ntk/alignment_code")).set_index("step")["value"]
    cent = _pos(_series(unit, "test", "ntk/alignment")).set_index("step")["value"]
    common = code.index.intersection(cent.index)
    rel = (cent.loc[common] - code.loc[common]) / code.loc[common]
    ax.plot(common, rel, color="tab:purple", marker="o", ms=3, lw=1)
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("(Cortes − code) / code")
    ax.set_title("(f) the two alignments of (c) differ by")

    l0 = _summary_value(unit, "initial_test")
    final = _summary_value(unit, "final_test")
    al = _series(unit, "test", "ntk/alignment_code")
    ac = _series(unit, "test", "ntk/alignment")
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
        f"{_fmt(_summary_value(unit, 'epoch_test_below'))}; test loss change over the second half of the run "
        f"{_summary_value(unit, 'final_test_change'):.2g} (relative); power in linear modes peaks at "
        f"{pw['value'].max():.3g} (epoch {int(pw['step'].iloc[int(pw['value'].values.argmax())])}); NTK alignment "
        f"(paper code) {al['value'].iloc[0]:.4f} → {al['value'].iloc[-1]:.4f}, centred "
        f"{ac['value'].iloc[0]:.4f} → {ac['value'].iloc[-1]:.4f} (they differ only in the normalisation of K, by "
        f"at most {100 * float(rel.abs().max()) if len(rel) else float('nan'):.2g} %: panel (f)); feature alignment "
        f"{fa['value'].iloc[0]:.2f} → {fa['value'].iloc[-1]:.1f} (of D = {config['d']}); weight norm ×{wr:.2f}. "
        "(b) is the exact population loss (eq. 6) of the current weights; the thick blue line is the test MSE on "
        f"{config['n_test']} samples. (d) and (e) are separate quantities on separate axes.")
    return Figure(save(fig, out_dir, "lazy_rich_headline.png"), caption, "Grokking as lazy → rich (Fig. 1, 4)")


def _sweep(plt, metrics, config, out_dir, role: str, key: str, symbol: str) -> Figure | None:
    c = _sigma_one(metrics[(metrics["model"] == "committee")])
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
        lines.append(f"{symbol}={v:g}: max test/L₀ {_summary_value(unit, 'max_test') / l0:.3f}, "
                     f"train<½L₀ at {_fmt(_summary_value(unit, 'epoch_train_below'))}, "
                     f"test<½L₀ at {_fmt(_summary_value(unit, 'epoch_test_below'))} (delay "
                     f"{_fmt(_summary_value(unit, 'delay'))}), final test/L₀ "
                     f"{_summary_value(unit, 'final_test') / l0:.3g} (changed {_summary_value(unit, 'final_test_change'):.2g} "
                     "over the second half)")
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
    caption = (f"Train (dashed) and test (solid) loss relative to the initial test loss, {fixed}, η = "
               f"{config['lr']:g}·N/α², {int(config['epochs'])} epochs, and the weight norm relative to init. {paper} "
               "This run: " + "; ".join(lines) + ".")
    return Figure(save(fig, out_dir, name), caption, title)


def _phase(plt, metrics, config, out_dir) -> Figure | None:
    c = _sigma_one(metrics[(metrics["model"] == "committee")])
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


def _sigma(plt, metrics, config, out_dir) -> Figure | None:
    c = metrics[metrics["model"] == "committee"]
    if "sigma" not in c.columns or not c["roles"].str.contains("sigma").any():
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    fig.subplots_adjust(wspace=0.3)
    lines = []
    for col, role, title in ((0, "sigma_sweep", f"(a) σ sweep at α = {config['alpha']:g}"),
                             (1, "sigma_joint", f"(b) joint: α = {config['alpha']:g}/σ²")):
        sub = c[c["roles"].str.contains(role)]
        sigmas = sorted(sub["sigma"].unique())
        cmap = plt.cm.viridis(np.linspace(0.05, 0.9, len(sigmas)))
        for sg, color in zip(sigmas, cmap):
            unit = sub[np.isclose(sub["sigma"], sg)]
            a = float(unit["alpha"].iloc[0])
            l0 = _summary_value(unit, "initial_test")
            for split, style in (("train", "--"), ("test", "-")):
                s = _pos(_series(unit, split, "mse"))
                axes[col].plot(s["step"], s["value"] / l0, style, color=color,
                               label=f"σ={sg:g}, α={a:g} (ασ²={a * sg * sg:g})" if split == "test" else None)
            rc = _series(unit, "train", "param/relative_change")
            axes[2].plot(rc["step"].clip(lower=1), rc["value"], "-" if col == 0 else ":", color=color,
                         label=f"σ={sg:g}, α={a:g}")
            lines.append(f"σ={sg:g}, α={a:g}: delay {_fmt(_summary_value(unit, 'delay'))}, final test "
                         f"{_summary_value(unit, 'final_test'):.3g}, ‖W − W₀‖/‖W₀‖ "
                         f"{float(rc['value'].iloc[-1]):.3g}")
        axes[col].set_title(title)
        axes[col].set_xscale("log")
        axes[col].set_yscale("log")
        axes[col].set_xlabel("epoch")
        axes[col].set_ylabel("MSE / initial test MSE (solid test, dashed train)")
        axes[col].legend(fontsize=7, loc="lower left")
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch (epoch 0 drawn at 1)")
    axes[2].set_ylabel("‖W − W₀‖ / ‖W₀‖")
    axes[2].set_title("(c) relative weight change (solid σ sweep, dotted joint)")
    axes[2].legend(fontsize=6, loc="lower right")
    caption = ("Init scale σ (W₀ = σ·N(0,1)), NOTE [σ sweep]. The paper (Fig. 7) reports that a σ sweep acts like an "
               "α sweep, that α ~ σ⁻² preserves the dynamics, and that ‖θ − θ₀‖/‖θ₀‖ and the final loss depend on σ²α. "
               f"Step η = {config['lr']:g}·N/α² for every unit (the paper scales η by 1/σ²). This run: "
               + "; ".join(lines) + ".")
    return Figure(save(fig, out_dir, "lazy_rich_sigma.png"), caption, "Init scale σ (Fig. 7)")


def _interp(plt, metrics, config, out_dir) -> Figure | None:
    m = metrics[metrics["model"] == "interp"]
    if m.empty:
        return None
    mixes = sorted(m["mix"].unique())
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    cmap = plt.cm.plasma(np.linspace(0.05, 0.85, len(mixes)))
    lines = []
    for mix, color in zip(mixes, cmap):
        unit = m[np.isclose(m["mix"], mix)]
        for split, style in (("train", "--"), ("test", "-")):
            s = _pos(_series(unit, split, "mse"))
            ax.plot(s["step"], s["value"], style, color=color, label=f"s = {mix:g}" if split == "test" else None)
        lines.append(f"s = {mix:g}: bump {_summary_value(unit, 'test_bump'):.3f}, final test "
                     f"{_summary_value(unit, 'final_test'):.3g}, test < ½L₀ at "
                     f"{_fmt(_summary_value(unit, 'epoch_test_below'))}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (solid test, dashed train)")
    ax.legend(fontsize=7, loc="lower left", title="W₀ = s·W* + (1−s)·W_rand", title_fontsize=7)
    caption = (f"W₀ moved a fraction s towards an exact minimiser W* (NOTE [init interpolation]); D = "
               f"{config['interp_d']}, N = {config['interp_width']}, P = {config['interp_n_train']}, "
               f"ε = {config['interp_epsilon']:g}, α = 1, uncentred, η = {config['interp_lr'] * config['interp_width']:g}. "
               "The paper (Fig. 10) reports that adding even 5–20 % of the analytic solution removes the grokking-like "
               "rise of the test loss. Bump = largest rise of the test loss above its best value so far. This run: "
               + "; ".join(lines) + ".")
    return Figure(save(fig, out_dir, "lazy_rich_interpolation.png"), caption, "Init interpolation (Fig. 10)")


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


def _mnist(plt, metrics, config, out_dir) -> Figure | None:
    m = metrics[metrics["model"] == "mnist"]
    if m.empty:
        return None
    alphas = sorted(m["alpha"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    cmap = plt.cm.viridis(np.linspace(0.0, 0.85, len(alphas)))
    lines = []
    for a, color in zip(alphas, cmap):
        unit = m[np.isclose(m["alpha"], a)]
        for split, style in (("train", "--"), ("test", "-")):
            e = _pos(_series(unit, split, "error"))
            axes[0].plot(e["step"], 1 - e["value"], style, color=color, label=f"α = {a:g}" if split == "test" else None)
            loss = _pos(_series(unit, split, "loss"))
            axes[1].plot(loss["step"], loss["value"], style, color=color)
        t_train, t_test = _summary_value(unit, "step_train_acc"), _summary_value(unit, "step_test_acc")
        if math.isfinite(t_test):
            delay = f"delay {max(0.0, t_test - t_train) if math.isfinite(t_train) else float('nan'):.0f} steps"
        elif math.isfinite(t_train):
            delay = f"test threshold not reached, delay > {config['mnist_steps'] - t_train:,.0f} steps"
        else:
            delay = "neither threshold reached"
        at = lambda t: f"at step {t:.0f}" if math.isfinite(t) else "never"
        lines.append(f"α = {a:g}: train ≥ {config['mnist_train_acc']:.0%} {at(t_train)}, test ≥ "
                     f"{config['mnist_test_acc']:.0%} {at(t_test)} ({delay}), final train / test "
                     f"accuracy {_summary_value(unit, 'final_train_acc'):.2f} / "
                     f"{_summary_value(unit, 'final_test_acc'):.2f}")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("AdamW step (batch 200)")
    axes[0].set_ylabel("accuracy (dashed train, solid test)")
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("MSE on one-hot (dashed train, solid test)")
    caption = (f"Kumar et al.'s MNIST MLP (784-{config['mnist_width']}×{config['mnist_hidden_layers']}-10, "
               f"Kaiming init ×{config['mnist_init_scale']:g}, output ×α/N), {config['mnist_n_train']} training "
               f"images, {config['mnist_n_test']} other training images as test, AdamW lr {config['mnist_lr']:g} "
               f"wd {config['mnist_weight_decay']:g}, {config['mnist_steps']:,} steps (the paper: 250,000). The paper "
               "(Fig. 6a) reports no grokking at α = 1e-4 (train and test rise together) and grokking at larger α. "
               "This run: " + "; ".join(lines) + ".")
    return Figure(save(fig, out_dir, "lazy_rich_mnist.png"), caption, "MNIST, laziness α (Fig. 6a)")


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    out = [_headline(plt, metrics, config, out_dir),
           _sweep(plt, metrics, config, out_dir, "alpha_sweep", "alpha", "α"),
           _sweep(plt, metrics, config, out_dir, "epsilon_sweep", "epsilon", "ε"),
           _phase(plt, metrics, config, out_dir),
           _sigma(plt, metrics, config, out_dir),
           _interp(plt, metrics, config, out_dir),
           _modular(plt, metrics, config, out_dir),
           _mnist(plt, metrics, config, out_dir)]
    return [f for f in out if f is not None]
