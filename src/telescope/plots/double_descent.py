"""Figures of the double-descent study (paper Fig. 3, 9, 10): MSE and effective parameters vs width."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

# What the paper reports per data setting (digest §5.1–5.3, §9 facts 6–9).
PAPER = {
    "cifar": "Fig. 3 (true CIFAR-10): test MSE rises towards the interpolation threshold and falls again past it; "
             "train MSE falls monotonically; p_train rises monotonically while p_test falls past the threshold.",
    "mnist_noisy": "Fig. 9 left: with 20% label noise the double-descent shape appears, and the post-threshold "
                   "test improvement coincides with p_train and p_test diverging.",
    "mnist": "Fig. 9 right: without label noise no deterioration of test error at any width; train and test "
             "error improve monotonically.",
    "mnist1d_noisy": "Fig. 10: the drop in test error past the threshold comes with a decrease of p_test as "
                     "width grows.",
}
# Does the paper report a test-MSE peak for this data setting? (facts 6, 8, 9)
PAPER_PEAK = {"cifar": True, "mnist_noisy": True, "mnist": False, "mnist1d_noisy": True}
TITLES = {
    "cifar": "CIFAR-10 cat/dog (JPEG-derived)", "mnist_noisy": "MNIST 3/5, 20% noise", "mnist": "MNIST 3/5",
    "mnist1d_noisy": "MNIST-1D 0/1, 15% noise", "digits_noisy": "digits 3/5, 20% noise", "digits": "digits 3/5",
    "mnist_all_noisy": "MNIST ≥5 vs <5, 20% noise",
}
METHOD_STYLE = {"exact": dict(ls="-", marker="o"), "sketch": dict(ls="--", marker="s")}


def final_values(metrics: pd.DataFrame) -> pd.DataFrame:
    """Last logged value of every (dataset, method, width, seed, split, name): the end of
    training (runs stored before the ``method`` tag count as "exact")."""
    if "method" not in metrics:
        metrics = metrics.assign(method="exact")
    metrics = metrics.assign(method=metrics["method"].fillna("exact"))
    last = metrics.sort_values("step").groupby(["dataset", "method", "width", "seed", "split", "name"]).tail(1)
    return last


def _methods(last: pd.DataFrame, dataset: str) -> list[str]:
    present = set(last.loc[last["dataset"] == dataset, "method"])
    return [m for m in METHOD_STYLE if m in present]


def _curve(last: pd.DataFrame, dataset: str, split: str, name: str, method: str | None = None) -> pd.DataFrame:
    if method is None:
        method = _methods(last, dataset)[0]
    part = last[(last["dataset"] == dataset) & (last["split"] == split) & (last["name"] == name)
                & (last["method"] == method)]
    g = part.groupby("width")["value"]
    out = pd.DataFrame({"mean": g.mean(), "se": g.std(ddof=1) / np.sqrt(g.count())}).reset_index()
    out["se"] = out["se"].fillna(0.0)
    return out.sort_values("width")


def _threshold_width(last: pd.DataFrame, dataset: str) -> float | None:
    """Width where the raw parameter count (d + 2)·h + 1 equals n (interpolation threshold)."""
    sub = last[(last["dataset"] == dataset) & (last["split"] == "train")]
    p = sub[sub["name"] == "n_params"].groupby("width")["value"].mean()
    n = sub[sub["name"] == "n_train"]["value"]
    if p.empty or n.empty:
        return None
    widths = p.index.to_numpy(dtype=float)
    if len(widths) < 2:
        return None
    per_unit = (p.iloc[-1] - p.iloc[0]) / (widths[-1] - widths[0])       # d + 2
    return float((float(n.iloc[0]) - (p.iloc[0] - per_unit * widths[0])) / per_unit)


def _describe_mse(summary: dict, dataset: str) -> str:
    """The test-MSE curve in words: peak or not (NOTE [double-descent peak criterion] in
    telescope.experiments.double_descent), against the constant predictor and the paper."""
    get = lambda k: summary.get(f"{dataset}/{k}")  # noqa: E731
    parts = []
    if get("test_mse_peak") is not None:
        rise, fall = get("test_mse_rise_into_peak"), get("test_mse_fall_after_peak")
        size = (f"rise into it {100 * rise:.0f}%, fall after it {100 * fall:.0f}% of its value"
                if rise is not None and fall is not None else "")
        if get("test_mse_peak") == 1.0:
            parts.append(f"test MSE has a peak at width {get('test_mse_peak_width'):g} ({size})")
        else:
            parts.append("test MSE has no peak by the criterion (rise and fall each > 15% of the peak value"
                         + (", and > 2 s.e." if (get("seeds") or 1) > 1 else "") + ")"
                         + (f"; the closest interior bump: {size}" if size and rise > 0 and fall > 0 else
                            "; no interior width lies above the widths on both sides" if size else ""))
        expected = PAPER_PEAK.get(dataset)
        if expected is not None and (get("test_mse_peak") == 1.0) != expected:
            parts.append("this CONTRADICTS the paper, which reports " + ("a peak" if expected else "no peak"))
    elif get("test_mse_peak_width") is not None:   # a summary written before the peak criterion
        parts.append(f"largest interior test MSE at width {get('test_mse_peak_width'):g} (an older summary: "
                     "no peak criterion applied)")
    if get("constant_test_mse") is not None and get("widths_better_than_constant") is not None:
        better, total = int(get("widths_better_than_constant")), int(get("widths"))
        parts.append(f"the constant predictor ȳ_train has test MSE {get('constant_test_mse'):.3f}; "
                     + ("every width beats it" if better == total else
                        "NO width beats it: every net predicts the test labels worse than a constant" if better == 0 else
                        f"{better} of {total} widths beat it"))
    return "; ".join(parts)


def _describe(summary: dict, dataset: str, method: str = "exact") -> str:
    pre = f"{dataset}/" if method == "exact" else f"{dataset}/{method}/"
    get = lambda k: summary.get(pre + k, summary.get(f"{dataset}/{k}"))  # noqa: E731
    parts = []
    mse = _describe_mse(summary, dataset)
    if mse:
        parts.append(mse)
    if get("p_train_monotone_fraction") is not None:
        parts.append(f"p_train non-decreasing on {100 * get('p_train_monotone_fraction'):.0f}% of width steps, "
                     f"p_test largest at width {get('p_test_peak_width'):g} ({get('p_test_peak'):.1f}) and ends at "
                     f"{get('p_test_widest'):.1f} vs p_train {get('p_train_widest'):.1f} at the widest net")
        if get("telescope_abs_err_max") is not None:
            tel, res = get("telescope_abs_err_max"), get("smoother_residual_max")
            parts.append(f"largest mean |f − f̃| on test over the widths {tel:.3g}, largest smoother residual "
                         f"|s·y + c − f̃| {res:.3g} ("
                         + (f"{res / tel:.1f}× the largest telescoping error" if tel > 0 else
                            "the telescoping error is 0")
                         + ("; fact 5 expects it within the telescoping error" if res > 2 * tel else "")
                         + "): p describes the network only to that accuracy")
    else:
        parts.append("effective parameters were not tracked in this run")
    return f"{TITLES.get(dataset, dataset)} ({method} smoother): " + "; ".join(parts) + "."


def _compare(summary: dict, dataset: str) -> str:
    get = lambda k: summary.get(f"{dataset}/{k}")  # noqa: E731
    if get("sketch_vs_exact_p_train_rel_max") is None:
        return ""
    return (f" Sketch vs exact on {TITLES.get(dataset, dataset)}: largest relative difference of p_train "
            f"{100 * get('sketch_vs_exact_p_train_rel_max'):.1f}%, of p_test "
            f"{100 * get('sketch_vs_exact_p_test_rel_max'):.1f}%; within 4 standard errors at "
            f"{100 * get('sketch_p_train_within_4se_fraction'):.0f}% (train) and "
            f"{100 * get('sketch_p_test_within_4se_fraction'):.0f}% (test) of the widths.")


def _settings(config: dict, datasets: list[str]) -> str:
    """The training settings that apply to the plotted datasets (MNIST-1D has its own γ and epochs)."""
    others = [d for d in datasets if d != "mnist1d_noisy"]
    parts = [f"n = {config.get('n_train')}, momentum {config.get('momentum')}, batch {config.get('batch_size')}, "
             f"patience {config.get('patience')} epochs"]
    if others:
        parts.append(f"γ = {config.get('lr')}, at most {config.get('max_epochs')} epochs")
    if "cifar" in datasets and config.get("lr_cifar"):
        parts.append(f"cifar γ = {config.get('lr_cifar')}")
    if "mnist1d_noisy" in datasets:
        parts.append(f"MNIST-1D γ = {config.get('lr_1d')}, at most {config.get('max_epochs_1d')} epochs")
    return " Settings: " + "; ".join(parts)


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    from matplotlib import ticker

    last = final_values(metrics)
    datasets = [d for d in config["datasets"] if d in set(last["dataset"])]
    if not datasets:
        return []
    has_p = bool((last["name"] == "smoother/p_eff").any())
    has_err = bool((last["name"] == "smoother/residual").any())
    rows = 1 + has_p + has_err
    seeds = int(metrics["seed"].nunique())
    fig, axes = plt.subplots(rows, len(datasets), figsize=(3.4 * len(datasets), 2.8 * rows), squeeze=False,
                             sharex="col")
    for col, dataset in enumerate(datasets):
        threshold = _threshold_width(last, dataset)
        ax = axes[0][col]
        for split, color in (("train", "tab:blue"), ("test", "tab:red")):
            c = _curve(last, dataset, split, "mse")
            ax.plot(c["width"], c["mean"], "o-", ms=3, color=color, label=f"{split} MSE")
            if seeds > 1:
                ax.fill_between(c["width"], c["mean"] - c["se"], c["mean"] + c["se"], color=color, alpha=0.2, lw=0)
        constant = summary.get(f"{dataset}/constant_test_mse")
        ax.axhline(0.25 if constant is None else constant, color="black", ls=":", lw=1,
                   label="constant 0.5 (test MSE 0.25)" if constant is None else "constant ȳ_train, test MSE")
        ax.set_title(TITLES.get(dataset, dataset))
        if col == 0:
            ax.set_ylabel("MSE at end of training")
        if has_p:
            axp = axes[1][col]
            methods = _methods(last, dataset)
            for method in methods:
                style = METHOD_STYLE[method]
                for split, color, label in (("train", "tab:blue", "p_train"), ("test", "tab:red", "p_test")):
                    c = _curve(last, dataset, split, "smoother/p_eff", method)
                    if c.empty:
                        continue
                    if len(methods) > 1 or method != "exact":
                        label = f"{label} ({method})"
                    axp.plot(c["width"], c["mean"], ms=3, color=color, label=label, **style)
                    se = c["se"]
                    if method == "sketch" and int(c.shape[0]) and (se == 0).all():
                        # one seed: show the sketch's own standard error instead
                        se = _curve(last, dataset, split, "smoother/p_eff_se", method)["mean"].to_numpy()
                    if seeds > 1 or method == "sketch":
                        axp.fill_between(c["width"], c["mean"] - se, c["mean"] + se, color=color, alpha=0.2, lw=0)
            if col == 0:
                axp.set_ylabel("effective parameters p")
        if has_err:
            axe = axes[1 + has_p][col]
            method = _methods(last, dataset)[0]
            for name, color, label in (("telescope/abs_err", "tab:purple", "mean |f − f̃|"),
                                       ("smoother/residual", "tab:orange", "residual |s·y + c − f̃|")):
                c = _curve(last, dataset, "test", name, method)
                if c.empty:
                    continue
                axe.plot(c["width"], c["mean"], "o-", ms=3, color=color, label=label)
                if seeds > 1:
                    axe.fill_between(c["width"], (c["mean"] - c["se"]).clip(lower=1e-12), c["mean"] + c["se"],
                                     color=color, alpha=0.2, lw=0)
            axe.set_yscale("log")
            if col == 0:
                axe.set_ylabel("on test, end of training")
        for row in range(rows):
            a = axes[row][col]
            a.set_xscale("log")
            widths = sorted(set(last.loc[last["dataset"] == dataset, "width"]))
            if len(widths) <= 12:
                a.set_xticks(widths)
            a.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            a.xaxis.set_minor_formatter(ticker.NullFormatter())
            if row == 1 + has_p and has_err:
                a.yaxis.set_minor_formatter(ticker.NullFormatter())
            if threshold is not None and threshold > 0:
                a.axvline(threshold, color="grey", ls="--", lw=1,
                          label="(d+2)h+1 = n" if row == 0 and col == 0 else None)
            if col == 0:
                a.legend(loc="best", fontsize=7)
        axes[rows - 1][col].set_xlabel("hidden units h")
    all_methods = [m for m in METHOD_STYLE if m in set(last["method"])]
    caption = (
        "End-of-training train/test MSE (top; dotted: the constant predictor's test MSE)"
        + (", effective parameters p_train, p_test from the telescoping smoother" if has_p else "")
        + (" and, bottom, the telescoping error mean |f − f̃| and the smoother's self-check residual "
           "mean |s·y + c − f̃| on test (log scale)" if has_err else "")
        + " vs hidden width, "
        + (f"mean ± s.e. over {seeds} seeds" if seeds > 1 else "one seed (no bands: no spread to show)")
        + "; the dashed line marks the interpolation threshold (d + 2)·h + 1 = n."
        + (" Solid lines/circles: exact smoother; dashed lines/squares: sketched smoother "
           f"(K = {config.get('probes')} probe label vectors, band ± its standard error when one seed); both "
           "follow the same trained network." if len(all_methods) > 1 else "")
        + (f" Effective parameters from the sketched smoother (K = {config.get('probes')} probe label vectors, "
           "band ± its standard error)." if all_methods == ["sketch"] else "")
        + (" Paper: " + " ".join(PAPER[d] for d in datasets if d in PAPER)
           if any(d in PAPER for d in datasets) else "")
        + " This run: " + " ".join(_describe(summary, d, m) for d in datasets for m in _methods(last, d))
        + "".join(_compare(summary, d) for d in datasets)
        + (" The CIFAR images are the shared JPEG-derived copy (lossy re-encoding of CIFAR-10), not the original "
           "pixels." if "cifar" in datasets else "")
        + _settings(config, datasets)
        + ".")
    figs = [Figure(save(fig, out_dir, "double_descent.png"), caption, "Double descent and effective parameters "
                   "(Fig. 3, 9, 10)")]
    return figs
