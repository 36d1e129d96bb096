"""Figures of the approximation study (paper Fig. 2/7: errors; Fig. 8: accuracies; fact 4: fixed γ·t)."""

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


def _seeds_phrase(n: int) -> str:
    return f"mean ± s.e. over {n} seeds" if n > 1 else "one seed, no bands"


def _settings(test: pd.DataFrame, config: dict) -> list[str]:
    return [s for s in config["settings"] if s in set(test["setting"])]


def _key(summary: dict, setting: str, lr: float, name: str):
    return summary.get(f"{setting}/lr={lr:g}/{name}")


def error_findings(summary: dict, test: pd.DataFrame, settings: list[str]) -> str:
    """What this run shows for facts 1 and 2, in words, from the summary."""
    parts, smallest = [], []
    for setting in settings:
        lrs = sorted(test.loc[test["setting"] == setting, "lr"].unique())
        ratios = [_key(summary, setting, lr, "ratio_linearized_to_telescope") for lr in lrs]
        tel = [_key(summary, setting, lr, "telescope_abs_err") for lr in lrs]
        if None in ratios or None in tel:
            continue
        smallest.append((setting, lrs[0], ratios[0]))
        grows = len(tel) > 1 and all(b > a for a, b in zip(tel, tel[1:]))
        parts.append(f"{TITLES.get(setting, setting)}: |f − f̃| {tel[0]:.2g} at γ = {lrs[0]:g}"
                     + (f" to {tel[-1]:.2g} at γ = {lrs[-1]:g} ({'grows' if grows else 'does NOT grow monotonically'} "
                        "with γ)" if len(tel) > 1 else "")
                     + f", f_lin/f̃ ratio {ratios[0]:.0f}" + (f" to {ratios[-1]:.0f}" if len(ratios) > 1 else ""))
    if not smallest:
        return ""
    low = min(r for _, _, r in smallest)
    verdict = ("orders of magnitude (≥ 100×) in every setting, as the paper reports" if low >= 100 else
               f"only {low:.0f}× in the weakest setting: NOT orders of magnitude everywhere, unlike the paper")
    return (" This run, at the end of training: " + "; ".join(parts)
            + f". At the smallest γ the linearization is worse than f̃ by {verdict}." + _adamw_vs_sgd(summary, test))


def _adamw_vs_sgd(summary: dict, test: pd.DataFrame) -> str:
    """How much smaller AdamW's γ is than SGD's at the same final error (log-log interpolation
    of SGD's error in γ), for the AdamW γ whose error lies inside SGD's range."""
    curves = {}
    for setting in ("sgd", "adamw"):
        lrs = sorted(test.loc[test["setting"] == setting, "lr"].unique())
        errs = [_key(summary, setting, lr, "telescope_abs_err") for lr in lrs]
        if not lrs or None in errs:
            return ""
        curves[setting] = (np.log(lrs), np.log(errs))
    (lx, le), (ax, ae) = curves["sgd"], curves["adamw"]
    if len(lx) < 2 or np.any(np.diff(le) <= 0):
        return ""
    factors = [np.exp(np.interp(e, le, lx) - a) for a, e in zip(ax, ae) if le[0] <= e <= le[-1]]
    if not factors:
        return ""
    return (f" For the same error AdamW needs a γ {min(factors):.0f}–{max(factors):.0f}× smaller than SGD "
            "(SGD's error interpolated in log γ).")


def _fixed_gt_findings(summary: dict, settings: list[str]) -> str:
    parts = []
    for setting in settings:
        slope = summary.get(f"{setting}/fixed_gT/telescope_slope")
        spread = summary.get(f"{setting}/fixed_gT/linearized_spread")
        if slope is None:
            continue
        parts.append(f"{TITLES.get(setting, setting)} slope {slope:.2f}, f_lin spread {spread:.2f}×")
    return "; ".join(parts)


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    test = metrics[metrics["split"] == "test"]
    settings = _settings(test, config)
    seeds = int(test["seed"].nunique())
    figs: list[Figure] = []

    # --- Fig. 2/7: errors, one γ legend per panel (AdamW has its own γ) ---
    fig, axes = plt.subplots(1, len(settings), figsize=(3.2 * len(settings), 3.3), squeeze=False, sharey=True)
    for ax, setting in zip(axes[0], settings):
        sub = test[test["setting"] == setting]
        lrs = sorted(sub["lr"].unique())
        reds = plt.cm.Reds(np.linspace(0.45, 0.95, len(lrs)))
        greys = plt.cm.Greys(np.linspace(0.35, 0.8, len(lrs)))
        for lr, red, grey in zip(lrs, reds, greys):
            part = sub[sub["lr"] == lr]
            for name, color, style, label in (("telescope/abs_err", red, "-", "f̃"),
                                              ("linearized/abs_err", grey, "--", "f_lin")):
                s = _mean_se(part, name)
                s = s[s["step"] > 0]
                ax.plot(s["step"], s["mean"], style, color=color, label=f"{label}, γ={lr:g}")
                if seeds > 1:
                    ax.fill_between(s["step"], np.clip(s["mean"] - s["se"], 1e-12, None), s["mean"] + s["se"],
                                    color=color, alpha=0.2, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(TITLES.get(setting, setting))
        ax.set_xlabel("optimization step")
        ax.legend(loc="lower right", fontsize=6, ncol=2 if len(lrs) > 1 else 1)
    axes[0][0].set_ylabel("mean |f(x) − approx(x)| on test")
    figs.append(Figure(save(fig, out_dir, "approximation_error.png"),
                       "Mean absolute difference on the test set between the network and the telescoping model f̃ "
                       "(red, solid) and the linearization around initialization f_lin (grey, dashed), per setting; "
                       f"each panel's legend names its own learning rates γ ({_seeds_phrase(seeds)}). The paper "
                       "(Fig. 2, 7) reports that f̃ is orders of magnitude closer than f_lin, that its error is "
                       "negligible for small γ and grows with γ, and that AdamW needs a smaller γ than SGD for the "
                       "same error." + error_findings(summary, test, settings),
                       "Approximation error (Fig. 2, 7)"))

    # --- Fig. 8: accuracies, every γ ---
    fig, axes = plt.subplots(2, len(settings), figsize=(3.2 * len(settings), 5.6), squeeze=False, sharey=True,
                             sharex=True)
    for col, setting in enumerate(settings):
        sub = test[test["setting"] == setting]
        lrs = sorted(sub["lr"].unique())
        for row, (name, cmap, label) in enumerate((("telescope/error", plt.cm.Reds, "f̃"),
                                                   ("linearized/error", plt.cm.Blues, "f_lin"))):
            ax = axes[row][col]
            colors = cmap(np.linspace(0.45, 0.95, len(lrs)))
            greys = plt.cm.Greys(np.linspace(0.3, 0.6, len(lrs)))
            for lr, color, grey in zip(lrs, colors, greys):
                part = sub[sub["lr"] == lr]
                for curve, c, lw, alpha, lab in ((_mean_se(part, "error"), grey, 2.5, 0.6, f"network, γ={lr:g}"),
                                                 (_mean_se(part, name), color, 1.0, 1.0, f"{label}, γ={lr:g}")):
                    x = curve["step"].clip(lower=1)
                    ax.plot(x, 1 - curve["mean"], color=c, lw=lw, alpha=alpha, label=lab)
                    if seeds > 1:
                        ax.fill_between(x, 1 - curve["mean"] - curve["se"], 1 - curve["mean"] + curve["se"],
                                        color=c, alpha=0.15, lw=0)
            ax.set_xscale("log")
            if row == 0:
                ax.set_title(TITLES.get(setting, setting))
            if col == 0:
                ax.set_ylabel(f"test accuracy ({label})")
            ax.legend(loc="lower right", fontsize=5.5)
            if row == 1:
                ax.set_xlabel("optimization step")
    gaps = []
    for setting in settings:
        lrs = sorted(test.loc[test["setting"] == setting, "lr"].unique())
        tel = [_key(summary, setting, lr, "max_acc_gap_telescope_pp") for lr in lrs]
        lin = [_key(summary, setting, lr, "max_acc_gap_linearized_pp") for lr in lrs]
        if None not in tel and None not in lin and tel:
            gaps.append(f"{TITLES.get(setting, setting)} f̃ {min(tel):.1f}–{max(tel):.1f} pp, "
                        f"f_lin {min(lin):.1f}–{max(lin):.1f} pp")
    visible = []
    for setting in settings:
        for lr in sorted(test.loc[test["setting"] == setting, "lr"].unique()):
            gap = _key(summary, setting, lr, "max_acc_gap_telescope_pp")
            if gap is not None and gap > 1.0:
                visible.append(f"{TITLES.get(setting, setting)} at γ = {lr:g} ({gap:.1f} pp)")
    figs.append(Figure(save(fig, out_dir, "approximation_accuracy.png"),
                       "Test accuracy (threshold 0.5) of the network (thick grey) against the telescoping model "
                       "(top, red) and the linearization around initialization (bottom, blue), at every γ of each "
                       f"setting (darker = larger γ; {_seeds_phrase(seeds)}). The paper (Fig. 8) reports no visible "
                       "difference for f̃ and a clear departure of f_lin later in training."
                       + (" This run, largest accuracy gap to the network over all logged steps and γ: "
                          + "; ".join(gaps) + "." if gaps else "")
                       + (" f̃'s accuracy departs visibly (> 1 pp, ten test images) from the network's, unlike the "
                          "paper, in: " + ", ".join(visible) + "." if visible else ""),
                       "Accuracy of the approximations (Fig. 8)"))

    # --- fact 4: errors at a fixed γ·t (NOTE [approximation fixed gamma T]) ---
    multi = [s for s in settings if summary.get(f"{s}/fixed_gT/telescope_slope") is not None]
    if multi:
        from matplotlib import ticker

        fig, axes = plt.subplots(1, len(multi), figsize=(3.0 * len(multi), 3.0), squeeze=False, sharey=True)
        for ax, setting in zip(axes[0], multi):
            lrs = sorted(test.loc[test["setting"] == setting, "lr"].unique())
            tel = np.array([summary[f"{setting}/fixed_gT/lr={lr:g}/telescope_abs_err"] for lr in lrs])
            lin = np.array([summary[f"{setting}/fixed_gT/lr={lr:g}/linearized_abs_err"] for lr in lrs])
            steps = [int(summary[f"{setting}/fixed_gT/lr={lr:g}/step"]) for lr in lrs]
            ax.plot(lrs, tel, "o-", color="tab:red", label="f̃")
            ax.plot(lrs, lin, "s--", color="grey", label="f_lin")
            ax.plot(lrs, tel[0] * np.asarray(lrs) / lrs[0], ":", color="black", lw=1, label="∝ γ")
            for lr, t, e in zip(lrs, steps, tel):
                ax.annotate(f"t={t}", (lr, e), textcoords="offset points", xytext=(3, -10), fontsize=6)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(lrs)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            gt = summary[f"{setting}/fixed_gT/gamma_T"]
            ax.set_title(f"{TITLES.get(setting, setting)} (γ·t = {gt:g})")
            ax.set_xlabel("learning rate γ")
            ax.legend(loc="best", fontsize=7)
        axes[0][0].set_ylabel("mean |f − approx| on test at γ·t fixed")
        figs.append(Figure(save(fig, out_dir, "approximation_fixed_gamma_t.png"),
                           "Errors of f̃ (red) and f_lin (grey) at the step t where γ·t equals the smallest γ times "
                           "the run's steps, against γ; dotted: a line ∝ γ through the smallest γ "
                           f"({'means over ' + str(seeds) + ' seeds, no bands' if seeds > 1 else 'one seed'}). The digest's own check (§9 fact 4, not a paper "
                           "claim) expects f̃'s error ∝ γ (log-log slope 1) and f_lin's flat. This run, slope of "
                           "f̃'s error in γ and max/min of f_lin's: " + _fixed_gt_findings(summary, multi) + ".",
                           "Fixed γ·t: error against γ (fact 4)"))
    return figs
