"""Figures of the grokking control (paper Fig. 4 col. 3, Fig. 13): α = 1 with and without a sigmoid.

Every preset trains the α = 6 reference with the same settings (NOTE [control reference] in
telescope.experiments.grokking_control); it is drawn in grey in every α = 1 panel, and the caption
compares p at matched steps and states the speed-up. A run stored without it (``--set
reference_alpha=none``) says in its caption that the reference is missing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from telescope.plots import Figure, save, setup_matplotlib
from telescope.plots.grokking_mnist import (VALIDITY_CAPTION, _fmt, _label, _methods, _panel_pair, _panels, _step,
                                            _test_overlay, run_text, seeds_text)

DEFAULT_REFERENCE = 6.0      # runs stored before ``reference_alpha`` existed used `--set alphas=1,6`


def _comparison_text(summary: dict, panels, reference: float, method: str) -> str:
    """Matched-step p and the speed-up, per control setting (NOTE [control reference])."""
    parts = []
    for alpha, output in panels:
        k = f"alpha={alpha:g}/output={output}/method={method}"
        get = lambda name: summary.get(f"{k}/{name}")  # noqa: E731
        if get("match_step") is None:
            continue
        reached = get("test_error_at_match") is not None and get("test_error_at_match") < 0.1
        text = (f"{_label(alpha, output)}: at step {_step(get('match_step'))} "
                + ("(its test error first < 10 %)" if reached else "(the last; its test error never < 10 %)")
                + f" p_train/p_test {_fmt(get('p_train_at_match'))}/{_fmt(get('p_test_at_match'))} vs α = "
                f"{reference:g}'s {_fmt(get('ref_p_train_at_match'))}/{_fmt(get('ref_p_test_at_match'))} "
                f"(α = {reference:g}'s test error there {_fmt(get('ref_test_error_at_match'))})")
        own_p = [get("p_train_at_match"), get("p_test_at_match")]
        ref_p = [get("ref_p_train_at_match"), get("ref_p_test_at_match")]
        if all(v is not None for v in own_p + ref_p):
            lower = [o < r for o, r in zip(own_p, ref_p)]
            text += (", lower on both splits" if all(lower) else
                     ", not lower than the reference's on " + " and ".join(
                         s for s, low in zip(("train", "test"), lower) if not low)
                     + " — the paper reports far fewer effective parameters than with a large α")
        if get("speedup") is not None:
            text += f"; 10 % test error {get('speedup'):.3g}× sooner than α = {reference:g}"
        elif get("speedup_at_least") is not None:
            text += (f"; α = {reference:g} has not reached 10 % test error by the run's end, so the speed-up is "
                     f"more than {get('speedup_at_least'):.3g}×")
        parts.append(text)
    return "; ".join(parts)


def figures(metrics: pd.DataFrame, config: dict, summary: dict, out_dir: Path) -> list[Figure]:
    plt = setup_matplotlib()
    panels = _panels(metrics)
    ref_alpha = config.get("reference_alpha", DEFAULT_REFERENCE)
    ref_alpha = DEFAULT_REFERENCE if ref_alpha is None else float(ref_alpha)
    reference = metrics[(metrics["alpha"] == ref_alpha) & (metrics["output"] == "linear")]
    own = [(a, o) for a, o in panels if (a, o) != (ref_alpha, "linear")]
    if reference.empty or not own:
        reference, own = None, panels
        ref_text = ("No α = 6 reference curve: this run's stored metrics hold α ∈ {"
                    + ", ".join(sorted({f"{a:g}" for a, _ in panels})) + "} only; `telescope run grokking-control` "
                    "with its default reference_alpha=6 stores one and draws it in grey.")
        comparison = ""
    else:
        ref_text = (f"Grey: α = {ref_alpha:g} with a linear output, trained with the same settings and steps in this "
                    "run (the large-initialization reference); red dotted: the matched step, the control's first logged "
                    "step with test error < 10 % (its last step if it never gets there).")
        comparison = _comparison_text(summary, own, ref_alpha, _methods(metrics)[0])
        comparison = f" Matched steps, this run: {comparison}." if comparison else ""
    shown = metrics if reference is None else metrics[~((metrics["alpha"] == ref_alpha)
                                                       & (metrics["output"] == "linear"))]
    fig = _panel_pair(plt, shown, own, "control: ", summary, reference=reference)
    if reference is not None:           # the matched step of the caption's comparison, in every α = 1 column
        method = _methods(metrics)[0]
        for col, (alpha, output) in enumerate(own):
            match = summary.get(f"alpha={alpha:g}/output={output}/method={method}/match_step")
            if match is None:
                continue
            for row in (0, 1):
                ax = fig.axes[row * len(own) + col]
                ax.axvline(match, color="tab:red", lw=0.8, ls=":", label=f"matched step {_step(match)}")
                ax.legend(fontsize=6)
    this_run = run_text(metrics, summary)
    return [Figure(save(fig, out_dir, "grokking_control.png"),
                   "Misclassification error (top) and effective parameters p⁰ (middle) on train (green) and test "
                   "(blue) with standard initialization (α = 1), without and with an output sigmoid "
                   f"({seeds_text(metrics)}); bottom: the smoother's self-check |s·y + c − f̃| against the telescoping "
                   f"error |f − f̃|. {VALIDITY_CAPTION}. {ref_text} The paper "
                   "(Fig. 4 col. 3, Fig. 13) reports a generalizing solution within about 10² steps (instead of 10⁵ "
                   "with a large α, a ~10³× speed-up), train and test behaving almost identically, and effective "
                   f"parameters far below the large-α runs, lowest with the sigmoid. This run: {this_run}."
                   f"{comparison}",
                   "Grokking control: standard initialization (Fig. 4, 13)"),
            _test_overlay(plt, metrics, panels, out_dir, summary)]
