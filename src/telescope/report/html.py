"""report.html: the config, the summary and every figure of a study with its caption.

Pages are self-contained (PNG figures are embedded as base64) so they can be mailed or
archived. Figures come from :mod:`telescope.plots`, which reads stored metrics only.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telescope.errors import DataError, TelescopeError
from telescope.store import read_json, read_metrics, run_status
from telescope.report.numbers import number

log = logging.getLogger(__name__)

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.92em;color:#444;margin-top:.4em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
details{margin:.5em 0} code{background:#f4f4f4;padding:0 .2em} .muted{color:#777}
nav ul{columns:2}
"""


@dataclass
class Section:
    anchor: str
    title: str
    body: list[str] = field(default_factory=list)
    group: str = ""  # the study it belongs to: the table of contents groups by it


def _table(mapping: dict[str, Any]) -> str:
    rows = []
    for key, value in mapping.items():
        if isinstance(value, float):
            text = number(value, 6)
        elif isinstance(value, (list, dict)):
            text = json.dumps(value)
        else:
            text = str(value)
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(text)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _nav(sections: list[Section]) -> str:
    groups: dict[str, list[Section]] = {}
    for s in sections:
        groups.setdefault(s.group, []).append(s)

    def items(secs: list[Section]) -> str:
        return "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in secs)

    if len(groups) == 1:
        return f"<nav><h2>Contents</h2><ul>{items(sections)}</ul></nav>"
    parts = "".join(f"<h3>{html.escape(g or 'other')}</h3><ul>{items(secs)}</ul>" for g, secs in groups.items())
    return f"<nav><h2>Contents</h2>{parts}</nav>"


def render_page(title: str, sections: list[Section], intro: str = "") -> str:
    nav = _nav(sections) if len(sections) > 1 else ""
    body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.body)}</section>'
                   for s in sections)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{intro}{nav}{body}"
            "</body></html>")


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except ValueError as exc:
        raise DataError(f"telescope report: {path} is unreadable ({type(exc).__name__}: {exc})") from None


def run_section(run_dir: Path, anchor: str | None = None) -> Section:
    """Figures, summary and config of one run directory (figures written to ``figures/``)."""
    from telescope import plots

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise DataError(f"telescope report: {run_dir} is not a run directory (no config.json)")
    record = _read_json(run_dir / "config.json")
    experiment = record.get("experiment", "?")
    summary = _read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    done = run_status(run_dir) == "done"
    section = Section(anchor or run_dir.name, f"{experiment} — {run_dir.name}", group=experiment)
    status = "finished" if done else "incomplete (no trusted DONE): figures show the parts finished so far"
    preset = record.get("meta", {}).get("preset", "?")
    section.body.append(f"<p class='muted'>preset <code>{html.escape(str(preset))}</code> · {status} · "
                        f"<code>{html.escape(str(run_dir))}</code></p>")
    module = plots.module_for(experiment)
    metrics = read_metrics(run_dir)
    if module is not None and len(metrics):
        out_dir = run_dir / "figures"
        for fig in module.figures(metrics, record["config"], summary, out_dir):
            if fig.title:
                section.body.append(f"<h3>{html.escape(fig.title)}</h3>")
            section.body.append(f"<figure>{_img(out_dir / fig.filename)}"
                                f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    elif not len(metrics):
        section.body.append("<p>No metrics stored yet.</p>")
    if summary:
        section.body.append("<details open><summary>Summary</summary>" + _table(summary) + "</details>")
    section.body.append("<details><summary>Config</summary>" + _table(record["config"]) + "</details>")
    return section


def _figure(fig, out_dir: Path, prefix: str = "") -> str:
    head = f"<h3>{html.escape(fig.title)}</h3>" if fig.title else ""
    return (f"{head}<figure>{_img(out_dir / fig.filename)}"
            f"<figcaption>{html.escape(prefix + fig.caption)}</figcaption></figure>")


def _frame_html(frame) -> str:
    table = frame.to_html(index=False, border=0, na_rep="—", float_format=number, escape=True)
    return f"<div style='overflow-x:auto'>{table}</div>"


def _mean_se_wide(table, keys: list[str]):
    """Grid points as rows, one ``mean ± s.e.`` column per summary value."""
    import math

    import pandas as pd

    def cell(row) -> str:
        se = row["se"]
        return number(row['mean']) + ("" if se is None or (isinstance(se, float) and math.isnan(se))
                                        else f" ± {se:.2g}") + f" (n={int(row['n'])})"

    if not len(table):
        return pd.DataFrame()
    t = table.assign(cell=table.apply(cell, axis=1))
    if not keys:
        return t.set_index("metric")[["cell"]].T.reset_index(drop=True)
    wide = t.pivot(index=keys, columns="metric", values="cell")
    if wide.shape[1] > wide.shape[0]:  # many summary values, few grid points: one row per value
        wide = wide.T
        wide.columns = [", ".join(f"{k}={v}" for k, v in zip(keys, c if isinstance(c, tuple) else (c,)))
                        for c in wide.columns]
        wide.index.name = "summary value"
    else:
        wide.columns.name = None
    return wide.reset_index()


MAX_POINT_FIGURES = 8


def sweep_sections(sweep_dir: Path, prefix: str = "") -> list[Section]:
    """Overview, mean ± s.e. table, figures against the grid, the study's figures per grid point, runs."""
    import pandas as pd

    from telescope import plots
    from telescope.report.aggregate import grid_keys, write_tables
    from telescope.report.sweep_figures import sweep_figures

    sweep_dir = Path(sweep_dir)
    manifest = read_json(sweep_dir / "sweep.json")
    spec = manifest["spec"]
    experiment = spec["experiment"]
    keys = grid_keys(manifest)
    runs, table = write_tables(sweep_dir)
    fig_dir = sweep_dir / "figures"
    title = f"sweep {experiment} — {sweep_dir.name}"
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    overview = Section(f"{prefix}overview", title, group=experiment)
    grid_text = " × ".join(f"{k} ∈ {{{', '.join(v)}}}" for k, v in spec["grid"].items()) or "no grid"
    overview.body.append(
        f"<p>preset <code>{html.escape(spec['preset'])}</code> · {html.escape(grid_text)} × seeds "
        f"{html.escape(str(spec['seeds']))} · {len(runs)} runs: "
        + ", ".join(f"{n} {html.escape(str(s))}" for s, n in sorted(counts.items()))
        + f" · <code>{html.escape(str(sweep_dir))}</code></p>")
    if spec.get("sets"):
        overview.body.append("<details><summary>Fixed overrides (--set)</summary>" + _table(spec["sets"])
                             + "</details>")
    failed = runs[runs["status"] == "failed"] if len(runs) else runs
    for _, row in failed.iterrows():
        info = read_json(sweep_dir / row["run"] / "FAILED")
        overview.body.append(
            f"<details><summary>FAILED {html.escape(row['run'])}: {html.escape(str(info.get('error')))}</summary>"
            f"<pre>{html.escape(str(info.get('traceback', '')))}</pre></details>")
    sections = [overview]

    agg = Section(f"{prefix}table", f"{experiment}: summary over seeds (mean ± s.e.)", group=experiment)
    if len(table):
        agg.body.append("<p class='muted'>Each cell: mean ± standard error over the finished seeds of the grid "
                        "point (n seeds). Tidy form in <code>table.csv</code>, one row per run in "
                        "<code>runs.csv</code>.</p>")
        agg.body.append(_frame_html(_mean_se_wide(table, keys)))
        for fig in sweep_figures(experiment, table, manifest, fig_dir):
            agg.body.append(_figure(fig, fig_dir))
    else:
        agg.body.append("<p>No finished runs yet.</p>")
    sections.append(agg)

    module = plots.module_for(experiment)
    done = runs[runs["status"] == "done"] if len(runs) else runs
    if module is not None and len(done):
        points = list(done.groupby(keys, sort=False)) if keys else [((), done)]
        # the grid's own order (the user's, e.g. depths 4, 8, 12), not the strings' (12, 4, 8)
        order = {k: [str(v) for v in spec["grid"].get(k, [])] for k in keys}

        def rank(point) -> tuple:
            values = point[0] if isinstance(point[0], tuple) else (point[0],)
            return tuple(order[k].index(str(v)) if str(v) in order[k] else len(order[k])
                         for k, v in zip(keys, values))

        points.sort(key=rank)
        for i, (values, group) in enumerate(points):
            if i >= MAX_POINT_FIGURES:
                break
            values = values if isinstance(values, tuple) else (values,)
            label = ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "all runs"
            frames = [read_metrics(sweep_dir / r) for r in group["run"]]
            frames = [f for f in frames if len(f)]
            if not frames:
                continue
            metrics = pd.concat(frames, ignore_index=True)
            record = read_json(sweep_dir / group["run"].iloc[0] / "config.json")
            out_dir = fig_dir / f"point{i}"
            sec = Section(f"{prefix}point{i}", f"{experiment}: {label}", group=experiment)
            seeds = ", ".join(str(s) for s in sorted(group["seed"]))
            # a single run's own summary (its figures draw its marks: fit step, rise, ...); pooled seeds: none
            summary_path = sweep_dir / group["run"].iloc[0] / "summary.json"
            summary = read_json(summary_path) if len(group) == 1 and summary_path.exists() else {}
            for fig in module.figures(metrics, record["config"], summary, out_dir):
                sec.body.append(_figure(fig, out_dir, f"[{label}; runs of seeds {seeds} pooled] "))
            sections.append(sec)

    listing = Section(f"{prefix}runs", f"{experiment}: runs", group=experiment)
    if len(runs):
        shown = runs[["run", "seed", "status", *keys]].copy()
        shown["run"] = [f"{r}" for r in shown["run"]]
        listing.body.append(_frame_html(shown))
    sections.append(listing)
    return sections


def build_report(run_dir: str | Path) -> Path:
    """Write figures and ``report.html`` in a run, sweep or folder-of-runs directory; returns the page."""
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists():
        sections = [run_section(run_dir)]
        title = sections[0].title
    elif (run_dir / "sweep.json").exists():
        sections = sweep_sections(run_dir)
        title = sections[0].title
    elif any(run_dir.glob("*/sweep.json")):
        return build_index(run_dir)  # a folder holding sweeps: index them (and any single runs)
    else:
        runs = sorted(p.parent for p in run_dir.glob("*/config.json"))
        if not runs:
            raise DataError(f"telescope report: no run directories (with config.json) in {run_dir}")
        sections = [run_section(r) for r in runs]
        title = f"telescope report — {run_dir.name}"
    page = run_dir / "report.html"
    page.write_text(render_page(title, sections), encoding="utf-8")
    return page


def find_studies(root: str | Path) -> tuple[list[Path], list[Path]]:
    """``(sweep directories, run directories outside any sweep)`` anywhere under ``root``."""
    root = Path(root)
    sweeps = sorted(p.parent for p in root.rglob("sweep.json"))
    runs = sorted(p.parent for p in root.rglob("config.json") if not any(s in p.parents for s in sweeps))
    return sweeps, runs


def build_index(root: str | Path) -> Path:
    """One page for everything under ``root``: each sweep (aggregated) and each single run, by study.

    Each sweep and run also gets its own ``report.html``; the index links to them and
    embeds the same sections, with a table of contents grouped by study.
    """
    root = Path(root)
    sweeps, runs = find_studies(root)
    if not sweeps and not runs:
        raise DataError(f"telescope report --all: no runs or sweeps (config.json / sweep.json) under {root}")
    sections: list[Section] = []
    studies = [(lambda d=sweep, i=i: sweep_sections(d, prefix=f"s{i}-"), sweep) for i, sweep in enumerate(sweeps)]
    studies += [(lambda d=run, i=i: [run_section(d, anchor=f"run{i}")], run) for i, run in enumerate(runs)]
    unreadable = 0
    for i, (make, directory) in enumerate(studies):
        try:
            secs = make()
        except (TelescopeError, OSError, ValueError, KeyError) as exc:  # one bad run does not stop the index
            unreadable += 1
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            log.warning("telescope report --all: %s is unreadable, left out (%s)", directory, reason)
            section = Section(f"bad{i}", f"unreadable — {directory.name}", group="unreadable")
            section.body.append(f"<p><code>{html.escape(str(directory))}</code>: {html.escape(reason)}</p>")
            sections.append(section)
            continue
        page = directory / "report.html"
        page.write_text(render_page(secs[0].title, secs), encoding="utf-8")
        link = html.escape(page.relative_to(root).as_posix())
        secs[0].body.insert(0, f"<p class='muted'>own page: <a href='{link}'>{link}</a></p>")
        sections.extend(secs)
    sections.sort(key=lambda s: (s.group == "unreadable", s.group))  # stable: each sweep's sections stay together
    intro = (f"<p class='muted'>{len(sweeps)} sweep(s) and {len(runs)} single run(s) under "
             f"<code>{html.escape(str(root))}</code>"
             + (f"; {unreadable} unreadable, listed at the end" if unreadable else "") + ".</p>")
    page = root / "report.html"
    page.write_text(render_page(f"telescope — all runs under {root}", sections, intro), encoding="utf-8")
    return page
