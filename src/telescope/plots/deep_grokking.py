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
                        label=f"layer {layer}" + (" (output)" if layer == depth else ""))
        ax.set_ylabel("linear-probe accuracy" if col == 0 else "")
        ax.set_xlabel("optimization step")
        for row in range(4):
            axes[row][col].set_xscale("log")
            _mark(axes[row][col], summary, key)
    axes[1][-1].legend(fontsize=6, loc="lower left", ncol=2)
    axes[2][-1].legend(fontsize=7, loc="upper left")
    if axes[3][-1].get_legend_handles_labels()[0]:      # probe curves (the marks have no labels)
        axes[3][-1].legend(fontsize=6, loc="upper left", ncol=2)
    figs.append(Figure(save(fig, out_dir, "deep_grokking_rank_accuracy.png"),
                       "Per-layer feature rank of the hidden pre-activations on the test images (row 1: numerical "
                       "rank of the covariance in float64 with matrix_rank's default tolerance, the authors' measure; "
                       f"row 2: singular values above {rtol:g}·σ_max; grey line: 0.75·width, the tunnel threshold), "
                       "train/test accuracy (row 3) and per-layer linear-probe accuracy (row 4). Dotted line: train "
                       "accuracy reaches 95%; dashed line: test accuracy is halfway through its rise. The paper "
                       "(Fig. 1) reports that train accuracy saturates first, test accuracy rises much later, and "
                       "the rise coincides with a drop of the later layers' rank.",
                       "Rank, accuracy and probes over training (Fig. 1)"))

    figs.append(_linear_panel(plt, metrics, config, summary, units, out_dir))

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


def _linear_panel(plt, metrics: pd.DataFrame, config: dict, summary: dict, units: list[tuple],
                  out_dir: Path) -> Figure:
    """Accuracy and the second-last layer's ranks on a linear step axis, one column per run:
    the transition sits in the last half-decade of a log axis, here it gets the width it takes."""
    width = config.get("width", 0)
    fig, axes = plt.subplots(3, len(units), figsize=(4.2 * len(units), 7.5), squeeze=False, sharex="col")
    for col, key in enumerate(units):
        frame = _unit(metrics, key)
        depth = int(key[1])
        ax = axes[0][col]
        for split, color in (("train", "tab:blue"), ("test", "tab:red")):
            c = _curve(frame, split, "accuracy")
            ax.plot(c["step"], c["value"], color=color, label=f"{split} accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(_label(key))
        ax = axes[1][col]
        layer = depth - 1
        for name, style, what in (("feature_rank", "-", "default tol. (authors)"),
                                  ("feature_rank_f32tol", "-.", "float32 tol."),
                                  ("feature_rank_rel", "--", f"rtol {config.get('rank_rtol', 1e-3):g}")):
            c = _curve(frame, "test", f"{name}/{layer}")
            if len(c):
                ax.plot(c["step"], c["value"], style, label=f"rank, {what}")
        c = _curve(frame, "test", f"dead_units/{layer - 1}")
        if len(c) and width:
            ax.plot(c["step"], width - c["value"], ":", color="k", label=f"width − dead units of layer {layer - 1}")
        ax.set_ylim(bottom=0)
        ax = axes[2][col]
        colors = plt.cm.viridis(np.linspace(0, 0.95, depth))
        for layer_ in range(1, depth):
            c = _curve(frame, "test", f"effective_rank/{layer_}")
            ax.plot(c["step"], c["value"], color=colors[layer_ - 1], label=f"layer {layer_}")
        ax.set_xlabel("optimization step (linear)")
        for row in range(3):
            _mark(axes[row][col], summary, key)
            axes[row][col].ticklabel_format(axis="x", style="plain")
    axes[0][0].set_ylabel("accuracy")
    axes[1][0].set_ylabel("rank of second-last layer")
    axes[2][0].set_ylabel("effective rank")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    axes[1][-1].legend(fontsize=6, loc="lower left")
    axes[2][-1].legend(fontsize=6, loc="upper right", ncol=2)
    fig.tight_layout()
    return Figure(save(fig, out_dir, "deep_grokking_linear.png"),
                  "The transition on a linear step axis (on the log axes of the other figures it is squeezed into "
                  "the last half-decade). Row 1: train/test accuracy. Row 2: the second-last layer's rank in the "
                  "authors' measure (matrix_rank's default tolerance on the float64 covariance), with the tolerance "
                  "their code would apply to float32 features, at relative tolerance rank_rtol, and the bound "
                  "width − (units of the layer below that are ≤ 0 on every test image): the authors' rank can only "
                  "fall as ReLU units die. Row 3: effective rank of every hidden layer. Dotted / dashed vertical "
                  "lines: train accuracy reaches 95% / test accuracy is halfway through its rise. The paper "
                  "(Fig. 1) reports a significant rank decrease at the start of the test-accuracy rise.",
                  "The transition on a linear axis")


# NOTE [deep grokking sweep figure]
# The report calls ``sweep_figures(table, manifest, out_dir)`` with ``out_dir`` = the sweep
# directory's ``figures/``; the paper's depth and weight-decay figures (Fig. 2, 5, 6, 7)
# overlay *curves* of the grid points, so this reads each finished run's stored metrics
# from ``out_dir.parent / <run>`` (the sweep directory), pools seeds per grid point, and
# draws them on a linear step axis. The transition times from ``table`` (mean ± s.e. over
# seeds) go in a second panel row.

def sweep_figures(table: pd.DataFrame, manifest: dict, out_dir: Path) -> list[Figure]:
    """Curves of every grid point overlaid (NOTE [deep grokking sweep figure])."""
    from telescope.report.sweep_figures import summary_vs_grid
    from telescope.store import read_json, read_metrics, run_status

    sweep_dir = Path(out_dir).parent
    keys = list(manifest["spec"]["grid"])
    points: dict[str, list[pd.DataFrame]] = {}
    for entry in sorted(manifest["runs"], key=lambda e: tuple(_grid_order(_grid_text(e["point"][k])) for k in keys)):
        run_dir = sweep_dir / entry["name"]
        if run_status(run_dir) != "done":
            continue
        config = read_json(run_dir / "config.json")["config"]
        label = ", ".join(f"{k}={_grid_text(config.get(k, entry['point'][k]))}" for k in keys) or "all runs"
        points.setdefault(label, []).append(read_metrics(run_dir))
    if not points:
        return summary_vs_grid(table, manifest, Path(out_dir))
    plt = setup_matplotlib()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    palette = plt.cm.tab10(np.arange(len(points)) % 10)
    for (label, frames), color in zip(points.items(), palette):
        metrics = pd.concat(frames, ignore_index=True)
        depth = int(metrics["depth"].iloc[0])
        for split, style in (("train", ":"), ("test", "-")):  # colours: grid points (one figure legend);
            c = _curve(metrics, split, "accuracy")                # line styles: named in the axis labels
            axes[0].plot(c["step"], c["value"], style, color=color, label=label if split == "test" else None)
        for name, style in (("feature_rank", "-"), ("feature_rank_rel", "--")):
            c = _curve(metrics, "test", f"{name}/{depth - 1}")
            axes[1].plot(c["step"], c["value"], style, color=color)
        c = _curve(metrics, "test", f"effective_rank/{depth - 1}")
        axes[2].plot(c["step"], c["value"], color=color)
        for name, style in (("weight_norm", "-"), ("weight_norm/last_layer", "--")):
            c = _curve(metrics, "train", name)
            axes[3].plot(c["step"], c["value"], style, color=color)
    axes[0].set_ylabel("accuracy (dotted: train, solid: test)")
    axes[0].set_ylim(0, 1.02)
    axes[1].set_ylabel("rank of second-last layer\n(solid: default tol., dashed: rtol)")
    axes[2].set_ylabel("effective rank of second-last layer")
    axes[3].set_ylabel("weight norm (solid: all, dashed: last layer)")
    axes[3].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("optimization step (linear)")
        ax.ticklabel_format(axis="x", style="plain")
    fig.tight_layout()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=min(len(points), 6), fontsize=8,
               bbox_to_anchor=(0.5, 1.08))
    seeds = manifest["spec"].get("seeds", 1)
    figs = [Figure(save(fig, out_dir, "deep_grokking_sweep_curves.png"),
                   f"Every grid point of the sweep ({', '.join(keys)}; {seeds} seed(s), the mean curve over seeds) "
                   "on one linear step axis: train/test accuracy, the second-last layer's rank (authors' default "
                   "tolerance and relative tolerance), its effective rank, and the weight norm. The paper reports "
                   "(Fig. 2, 5) that deeper nets delay both the train and the test rise, and (Fig. 6, 7) that "
                   "γ = 0.005 fails or generalizes without grokking, 0.01 groks and 0.05 generalizes in two "
                   "stages; the weight norm decays smoothly without marking the transition.",
                   "Grid points overlaid (Fig. 2, 5, 6, 7)")]
    times = table[table["metric"].isin(["fit_step", "rise_start_step", "grok_step"])] if len(table) else table
    if len(times) and keys:
        fig, ax = plt.subplots(figsize=(6.8, 3.4))
        steps = table[table["metric"] == "steps"].set_index(keys[0])["mean"]
        order = sorted(dict.fromkeys(steps.index.tolist()), key=_grid_order)
        any_open = False
        for metric, marker in (("fit_step", "o"), ("rise_start_step", "^"), ("grok_step", "s")):
            part = times[times["metric"] == metric].sort_values(keys)
            x = [order.index(v) for v in part[keys[0]]]
            line = ax.errorbar(x, part["mean"], yerr=part["se"].fillna(0.0).to_numpy(), marker=marker, capsize=2,
                               ls="none", ms=7,
                               label={"fit_step": "train accuracy ≥ 95%", "rise_start_step": "test rise starts (10%)",
                                      "grok_step": "test rise midpoint"}[metric])
            missing = [v for v in order if v not in set(part[keys[0]])]
            if missing:  # not reached by the last step: an open marker at the run's length
                any_open = True
                ax.plot([order.index(v) for v in missing], [steps[v] for v in missing], marker, mfc="none",
                        color=line[0].get_color(), ms=9)
        if any_open:
            ax.plot([], [], "o", mfc="none", color="grey", label="open: none by the last step")
        ax.set_xticks(range(len(order)), [_grid_text(v) for v in order])
        ax.set_xlabel(keys[0])
        ax.set_ylabel("optimization step")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.tight_layout()
        figs.append(Figure(save(fig, out_dir, "deep_grokking_sweep_times.png"),
                           f"When each grid point fits its training set and when its test accuracy rises, against "
                           f"{keys[0]} (mean ± s.e. over seeds; an open marker at the run's length where the run "
                           "never got there: no fit, or no test rise after it). The "
                           "paper (Fig. 2 top) reports that 4 → 8 → 12 layers delays both rises.",
                           f"Transition times against {keys[0]}"))
    return figs


def _grid_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _grid_order(value) -> tuple:
    """Sort grid values numerically where they are numbers ("12" after "8"; tuple fields arrive as "4" or "4,8")."""
    try:
        return (0, tuple(float(v) for v in str(value).split(",")))
    except ValueError:
        return (1, str(value))
