"""Figures of the grokking studies (paper Fig. 4 cols. 2–3, Fig. 12, Fig. 13): error and
effective parameters over optimization steps, one column per (α, output). When a run holds
several smoother methods (``methods=("exact", "sketch")``), the p⁰ row overlays them: exact
solid, sketch dashed with its ± 1 standard-error band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib

COLORS = {"train": "tab:green", "test": "tab:blue"}
STYLES = {"exact": "-", "sketch": "--"}


VALID = "smoother/valid"
FADED = dict(ls=":", alpha=0.45)          # p⁰ past its last valid step (NOTE [smoother validity])


def _mean_se(frame: pd.DataFrame, split: str, name: str) -> pd.DataFrame:
    """mean and standard error over seeds per step (se 0 with one seed), steps > 0 (log axes)."""
    part = frame[(frame["split"] == split) & (frame["name"] == name)]
    g = part.groupby("step")["value"]
    out = pd.DataFrame({"mean": g.mean(), "se": g.std(ddof=1) / np.sqrt(g.count())}).reset_index()
    out["se"] = out["se"].fillna(0.0)
    return out[out["step"] > 0]


def validity(frame: pd.DataFrame) -> tuple[float | None, float | None]:
    """(last valid step, first invalid step) of the stored ``smoother/valid`` flags of ``frame`` (one
    setting, any number of seeds and splits): p⁰ is valid at a step when every split's flag is 1 there
    and at every earlier logged step (telescope.lens.last_valid_step, read from storage here so that
    plots stay free of torch); minima over seeds. (None, None) when no flags are stored or every one
    holds; (None, step) when the first logged step already fails."""
    flags = frame[frame["name"] == VALID]
    if flags.empty:
        return None, None
    seed = flags["seed"] if "seed" in flags.columns else 0
    ok = flags.assign(seed=seed).groupby(["seed", "step"])["value"].min().unstack("step").sort_index(axis=1)
    last, first = [], []
    for _, row in ok.iterrows():
        steps, good = row.index.to_numpy(dtype=float), (row.to_numpy() == 1.0)
        bad = np.flatnonzero(~good)
        if bad.size:
            first.append(steps[bad[0]])
            last.append(steps[bad[0] - 1] if bad[0] > 0 else np.nan)
    if not first:
        return None, None
    lo = float(np.min(last))
    return (None if np.isnan(lo) else lo), float(np.min(first))


def stored_validity(part: pd.DataFrame, summary: dict | None, prefix: str) -> tuple[float | None, float | None]:
    """:func:`validity` of the stored flags; for runs stored before ``smoother/valid`` existed, the
    summary's ``step_unreliable`` (the test split under the same rule) and the logged step before it."""
    if (part["name"] == VALID).any():
        return validity(part)
    bad = (summary or {}).get(f"{prefix}/step_unreliable")
    if bad is None or not np.isfinite(bad):
        return None, None
    earlier = part.loc[part["step"] < bad, "step"]
    return (float(earlier.max()) if len(earlier) else None), float(bad)


def plot_valid(ax, s: pd.DataFrame, until: float | None, fmt: str, color, label: str, band=None) -> float:
    """``s`` (step, mean) solid up to step ``until`` and faded dotted past it (NOTE [smoother validity]);
    ``band`` (array like ``s``): a ± band over the valid part. ``until`` None: all valid. Returns the
    top of the valid part (mean + band; NaN if none), for :func:`clip_to_valid`."""
    steps = s["step"].to_numpy(dtype=float)
    ok = np.ones(len(s), bool) if until is None else steps <= until
    top = float("nan")
    if ok.any():
        m = s["mean"].to_numpy()[ok]
        ax.plot(steps[ok], m, fmt, color=color, label=label)
        if band is not None:
            ax.fill_between(steps[ok], m - band[ok], m + band[ok], color=color, alpha=0.15, lw=0)
        top = float(np.nanmax(m + (band[ok] if band is not None else 0.0)))
    if not ok.all():
        past = np.flatnonzero(~ok)
        keep = np.r_[past[0] - 1, past] if past[0] > 0 else past          # joined to the last valid point
        ax.plot(steps[keep], s["mean"].to_numpy()[keep], color=color, **FADED,
                label=None if ok.any() else label)
    return top


def clip_to_valid(ax, tops: list[float]) -> None:
    """y range of a p⁰ axis from its valid parts only: a run-away past the last valid step (p⁰ up to
    1e13 in issue 19) leaves the axis, faded, instead of flattening what can be read."""
    tops = [t for t in tops if np.isfinite(t)]
    if tops:
        ax.set_ylim(bottom=0.0, top=1.3 * max(max(tops), 1e-12))


def faded_entry(ax, until: float | None, first: float | None) -> None:
    """The legend entry that says why a p⁰ curve is faded (a proxy line, nothing drawn)."""
    if first is None:
        return
    where = f"after step {_step(until)}" if until is not None else "from the first step"
    ax.plot([], [], color="0.4", **FADED,
            label=f"p⁰ not readable {where}: self-check |s·y + c − f̃| > 3·|f − f̃|")


def _band(part: pd.DataFrame, split: str, s: pd.DataFrame) -> np.ndarray:
    """± band of p⁰: the standard error over seeds with several seeds (it holds the sketch's own
    estimation error, each seed drawing its probes), else the sketch's standard error, else 0."""
    if "seed" in part.columns and part["seed"].nunique() > 1:
        return s["se"].to_numpy()
    se = _mean_se(part, split, "smoother/p_eff_se")
    return se["mean"].to_numpy() if len(se) == len(s) else s["se"].to_numpy()


def _methods(metrics: pd.DataFrame) -> list[str]:
    if "method" not in metrics.columns:
        return ["exact"]
    present = set(metrics["method"])
    return [m for m in ("exact", "sketch") if m in present] + sorted(present - {"exact", "sketch"})


def _of_method(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    return frame if "method" not in frame.columns else frame[frame["method"] == method]


def _label(alpha: float, output: str) -> str:
    return f"α = {alpha:g}" + (", sigmoid output" if output == "sigmoid" else "")


def _seeds(frame: pd.DataFrame) -> int:
    return int(frame["seed"].nunique()) if "seed" in frame.columns else 1


def _panel_pair(plt, metrics, panels, title_prefix, summary=None, reference=None):
    """Three rows (error, p⁰, self-check) and one column per (α, output) of ``panels``; ``reference``
    (rows of one more setting, e.g. α = 6 for the control) is drawn in grey in the first two rows."""
    methods = _methods(metrics)
    several = len(methods) > 1
    fig, axes = plt.subplots(3, len(panels), figsize=(3.9 * len(panels), 8.4), squeeze=False, sharex=True)
    for col, (alpha, output) in enumerate(panels):
        sub = metrics[(metrics["alpha"] == alpha) & (metrics["output"] == output)]
        first = _of_method(sub, methods[0])          # one training per method: the error curves coincide
        n_seeds = _seeds(first)
        ax = axes[0][col]
        for split in ("train", "test"):
            s = _mean_se(first, split, "error")
            ax.plot(s["step"], s["mean"], color=COLORS[split],
                    label=split + (f" (mean ± s.e., {n_seeds} seeds)" if n_seeds > 1 else ""))
            ax.fill_between(s["step"], s["mean"] - s["se"], s["mean"] + s["se"], color=COLORS[split],
                            alpha=0.2, lw=0)
        ref_label = None
        if reference is not None and not reference.empty:
            ref = _of_method(reference, methods[0])
            ref_label = _label(float(ref["alpha"].iloc[0]), str(ref["output"].iloc[0]))
            s = _mean_se(ref, "test", "error")
            ax.plot(s["step"], s["mean"], color="0.45", lw=1.2, label=f"test, {ref_label} (reference)")
            ax.fill_between(s["step"], s["mean"] - s["se"], s["mean"] + s["se"], color="0.45", alpha=0.15, lw=0)
        ax.set_title(f"{title_prefix}{_label(alpha, output)}")
        ax = axes[1][col]
        tops, clip = [], False
        for method in methods:
            part = _of_method(sub, method)
            until, bad = stored_validity(part, summary, f"alpha={alpha:g}/output={output}/method={method}")
            clip |= bad is not None
            for split in ("train", "test"):
                s = _mean_se(part, split, "smoother/p_eff")
                tops.append(plot_valid(ax, s, until if bad is not None else None, STYLES.get(method, ":"),
                                       COLORS[split], f"p_{split}" + (f" ({method})" if several or method != "exact"
                                                                      else ""), band=_band(part, split, s)))
            faded_entry(ax, until, bad)
            if bad is not None:
                for r in (1, 2):
                    axes[r][col].axvline(bad, color="0.6", lw=0.8, ls="-.",
                                         label=f"first failing self-check, step {_step(bad)}")
        if reference is not None and not reference.empty:
            ref = _of_method(reference, methods[0])
            until, bad = validity(ref)
            clip |= bad is not None
            for split, fmt in (("train", "--"), ("test", "-")):
                s = _mean_se(ref, split, "smoother/p_eff")
                tops.append(plot_valid(ax, s, until if bad is not None else None, fmt, "0.45",
                                       f"p_{split}, {ref_label} (reference)"))
        if clip:
            clip_to_valid(ax, tops)
        ax = axes[2][col]                        # is the smoother a faithful account of f̃?
        for method in methods:
            part = _of_method(sub, method)
            for split in ("train", "test"):
                s = _mean_se(part, split, "smoother/residual")
                ax.plot(s["step"], s["mean"].clip(lower=1e-8), STYLES.get(method, ":"), color=COLORS[split],
                        label=f"|s·y + c − f̃|, {split}" + (f" ({method})" if several else ""))
                if n_seeds > 1:
                    ax.fill_between(s["step"], (s["mean"] - s["se"]).clip(lower=1e-8),
                                    (s["mean"] + s["se"]).clip(lower=1e-8), color=COLORS[split], alpha=0.15, lw=0)
        s = _mean_se(first, "test", "telescope/abs_err")
        ax.plot(s["step"], s["mean"].clip(lower=1e-8), ":", color="black", label="|f − f̃|, test")
        ax.plot(s["step"], (3 * s["mean"]).clip(lower=1e-8), ":", color="0.6", lw=0.8,
                label="3·|f − f̃|, test (validity bound, floor 0.02)")
        # the summary's step_near_edge: Adam's preconditioned sharpness stays ≥ 0.8 of its stability
        # threshold from here on (NOTE [adam edge of stability] in telescope/lens/stability.py); 0.8 is
        # NEAR_EDGE there, not imported so that plots stay free of torch
        edge = (summary or {}).get(f"alpha={alpha:g}/output={output}/method={methods[0]}/step_near_edge")
        if edge is not None and np.isfinite(edge):
            ax.axvline(edge, color="0.4", ls="--", lw=1, label=f"Adam: sharpness ≥ 0.8·edge from step {_step(edge)}")
        ax.set_yscale("log")
        ax.set_xlabel("optimization step")
        lo, hi = axes[1][col].get_ylim()
        axes[1][col].set_ylim(lo, hi + 0.75 * (hi - lo))     # headroom: the p legend sits above the curves
        lo, hi = axes[2][col].get_ylim()
        axes[2][col].set_ylim(lo, hi * (hi / lo) ** 0.8)        # the same on the log-scaled residual row
        for row in range(3):
            axes[row][col].set_xscale("log")
            axes[row][col].legend(loc="upper left" if row in (1, 2) else "best", fontsize=6)
        if col == 0:
            for row, ylabel in enumerate(("misclassification error", "effective parameters p⁰", "smoother residual")):
                axes[row][0].set_ylabel(ylabel)
    return fig


def _panels(metrics: pd.DataFrame) -> list[tuple[float, str]]:
    keys = metrics[["alpha", "output"]].drop_duplicates().sort_values(["output", "alpha"])
    return [(float(a), str(o)) for a, o in keys.itertuples(index=False)]


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3g}"


def _step(v) -> str:
    """A step count as an integer ("—" when absent)."""
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{int(round(v))}"


def _steps_text(summary: dict, alpha: float, output: str, method: str = "exact") -> str:
    prefix = f"alpha={alpha:g}/output={output}/method={method}"
    get = lambda k: summary.get(f"{prefix}/{k}")  # noqa: E731
    return (f"{_label(alpha, output)} ({method}): train error 0 at step {_step(get('step_fit'))} (test error "
            f"{_fmt(get('test_error_at_fit'))}, p_train/p_test {_fmt(get('p_train_at_fit'))}/"
            f"{_fmt(get('p_test_at_fit'))}), test error < 10 % at step {_step(get('step_generalize'))} "
            f"(p_train/p_test {_fmt(get('p_train_at_generalize'))}/{_fmt(get('p_test_at_generalize'))}); "
            f"final test error {_fmt(get('final_test_error'))}, p_train/p_test {_fmt(get('final_p_train'))}/"
            f"{_fmt(get('final_p_test'))}{' (past the last valid step)' if _invalid(get) else ''}"
            f"; {_validity_text(get)}")


def _invalid(get) -> bool:
    """Does p⁰ fail the self-check somewhere (``step_unreliable``: runs stored before the flag)?"""
    return get("step_first_invalid") is not None or get("step_unreliable") is not None


def _validity_text(get) -> str:
    """In words: from which step p⁰ cannot be read, and what Adam's sharpness did (NOTE [smoother
    validity], NOTE [adam edge of stability])."""
    first, last = get("step_first_invalid"), get("last_valid_step")
    if first is None and last is None and get("step_unreliable") is not None:     # stored before the flag
        return (f"p⁰ cannot be read from step {_step(get('step_unreliable'))} on (the test self-check "
                "|s·y + c − f̃| exceeds 3·|f − f̃|; this run predates the per-split flag)" + _sharpness_text(get))
    if first is None:
        text = (f"p⁰ passes the self-check at every logged step (to step {_step(last)})" if last is not None
                else "p⁰'s self-check is not stored in this run")
    elif last is None:
        text = f"p⁰ cannot be read at any logged step (the self-check fails from step {_step(first)})"
    else:
        text = (f"p⁰ cannot be read from step {_step(first)} on (the self-check |s·y + c − f̃| exceeds 3·|f − f̃|; "
                f"last valid step {_step(last)}), so the p⁰ values past it (faded) say nothing about the network")
    return text + _sharpness_text(get)


def _sharpness_text(get) -> str:
    """What Adam's preconditioned sharpness did (NOTE [adam edge of stability]); empty without Adam."""
    text = ""
    ratio, edge, at = get("max_sharpness_ratio"), get("step_near_edge"), get("sharpness_ratio_at_first_invalid")
    if ratio is not None:
        text += (f"; Adam's preconditioned sharpness (λ_max over its stability threshold) peaked at {_fmt(ratio)}"
                 + (f" and stayed ≥ 0.8 from step {_step(edge)} on" if edge is not None else
                    " but did not stay ≥ 0.8 to the end")
                 + (f", and was {_fmt(at)} at the first failing check" if at is not None else ""))
    return text


def run_text(metrics: pd.DataFrame, summary: dict) -> str:
    """The 'this run' sentence of a caption: one clause per (α, output, method)."""
    return "; ".join(_steps_text(summary, a, o, m) for a, o in _panels(metrics) for m in _methods(metrics))


def seeds_text(metrics: pd.DataFrame) -> str:
    n = _seeds(metrics)
    return f"mean ± s.e. over {n} seeds" if n > 1 else "one seed, so no seed bands"


VALIDITY_CAPTION = ("p⁰ is drawn solid while the smoother's self-check holds (|s·y + c − f̃| ≤ 3·|f − f̃| or ≤ 2 % of "
                    "the label range, on every split, NOTE [smoother validity]) and faded, dotted, past its last valid "
                    "step, where s·y + c no longer reproduces f̃ and p⁰ is no account of the network; the dash-dotted "
                    "line marks the first failing check")


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    panels = _panels(metrics)
    fig = _panel_pair(plt, metrics, panels, "", summary)
    overlay = (" The p⁰ row overlays the exact smoother (solid) and the sketch (dashed) "
               "computed along the same training." if len(_methods(metrics)) > 1 else "")
    figs = [Figure(save(fig, out_dir, "grokking_mnist.png"),
                   "Misclassification error (top) and effective parameters p⁰ of the telescoping smoother (middle) "
                   "on train (green) and test (blue) over optimization steps, one column per initialization scale α "
                   f"({seeds_text(metrics)}; with one seed the sketch's p⁰ band is ± 1 of its standard errors); "
                   "bottom: the smoother's self-check |s·y + c − f̃| against the telescoping error |f − f̃| and "
                   f"3·|f − f̃|. {VALIDITY_CAPTION}.{overlay} The paper (Fig. 4 col. 2, Fig. 12) reports that with "
                   "a large α the training error reaches zero early while the test error improves much later "
                   "(grokking), that the late improvement coincides with p_test falling below p_train, and that a "
                   f"larger α gives later grokking and a later gap. This run: {run_text(metrics, summary)}.",
                   "Grokking on MNIST with large initialization (Fig. 4, 12)")]
    figs.append(_test_overlay(plt, metrics, panels, out_dir, summary))
    return figs


def _test_overlay(plt, metrics, panels, out_dir, summary) -> Figure:
    """Fig. 4 style: test error and p_train/p_test of every (α, output) on shared axes."""
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, max(len(panels), 1)))
    method = _methods(metrics)[0]
    any_bad, tops = False, []
    for (alpha, output), color in zip(panels, colors):
        sub = _of_method(metrics[(metrics["alpha"] == alpha) & (metrics["output"] == output)], method)
        err = _mean_se(sub, "test", "error")
        axes[0].plot(err["step"], err["mean"], color=color, label=f"test, {_label(alpha, output)}")
        axes[0].fill_between(err["step"], err["mean"] - err["se"], err["mean"] + err["se"], color=color,
                             alpha=0.15, lw=0)
        until, bad = stored_validity(sub, summary, f"alpha={alpha:g}/output={output}/method={method}")
        any_bad |= bad is not None
        for split, style in (("train", "--"), ("test", "-")):
            p = _mean_se(sub, split, "smoother/p_eff")
            tops.append(plot_valid(axes[1], p, until if bad is not None else None, style, color,
                                   f"p_{split}, {_label(alpha, output)}", band=_band(sub, split, p)))
    if any_bad:
        axes[1].plot([], [], color="0.4", **FADED, label="p⁰ past its last valid step (self-check fails)")
        clip_to_valid(axes[1], tops)
    for ax, ylabel in zip(axes, ("test error", f"p⁰ ({method} smoother)")):
        ax.set_xscale("log")
        ax.set_xlabel("optimization step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6)
    return Figure(save(fig, out_dir, "grokking_overview.png"),
                  "Test error (left) and effective parameters on train (dashed) and test (solid) for every setting "
                  f"of this run on shared axes ({method} smoother; {seeds_text(metrics)}), as in the paper's Fig. 4 "
                  "(which overlays test curves only); p⁰ faded and dotted past its last valid step (the smoother's "
                  "self-check fails there, NOTE [smoother validity]).",
                  "Overview (Fig. 4 style)")
