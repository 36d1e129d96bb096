"""report.html: the config, the summary and every figure of a study with its caption.

Pages are self-contained (PNG figures are embedded as base64) so they can be mailed or
archived. Figures come from :mod:`telescope.plots`, which reads stored metrics only.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telescope.errors import DataError
from telescope.store import read_json, read_metrics

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


def _table(mapping: dict[str, Any]) -> str:
    rows = []
    for key, value in mapping.items():
        if isinstance(value, float):
            text = f"{value:.6g}"
        elif isinstance(value, (list, dict)):
            text = json.dumps(value)
        else:
            text = str(value)
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(text)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def render_page(title: str, sections: list[Section], intro: str = "") -> str:
    nav = ""
    if len(sections) > 1:
        items = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
        nav = f"<nav><h2>Contents</h2><ul>{items}</ul></nav>"
    body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.body)}</section>'
                   for s in sections)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{intro}{nav}{body}"
            "</body></html>")


def run_section(run_dir: Path, anchor: str | None = None) -> Section:
    """Figures, summary and config of one run directory (figures written to ``figures/``)."""
    from telescope import plots

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise DataError(f"telescope report: {run_dir} is not a run directory (no config.json)")
    record = read_json(run_dir / "config.json")
    experiment = record.get("experiment", "?")
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    done = (run_dir / "DONE").exists()
    section = Section(anchor or run_dir.name, f"{experiment} — {run_dir.name}")
    status = "finished" if done else "incomplete (no DONE): figures show the parts finished so far"
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


def build_report(run_dir: str | Path) -> Path:
    """Write ``figures/*.png`` and ``report.html`` in ``run_dir``; returns the page's path."""
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists():
        sections = [run_section(run_dir)]
        title = sections[0].title
    else:
        runs = sorted(p.parent for p in run_dir.glob("*/config.json"))
        if not runs:
            raise DataError(f"telescope report: no run directories (with config.json) in {run_dir}")
        sections = [run_section(r) for r in runs]
        title = f"telescope report — {run_dir.name}"
    page = run_dir / "report.html"
    page.write_text(render_page(title, sections), encoding="utf-8")
    return page


def build_index(root: str | Path) -> Path:
    """One page with a section for every run directory found anywhere under ``root``."""
    root = Path(root)
    runs = sorted(p.parent for p in root.rglob("config.json"))
    if not runs:
        raise DataError(f"telescope report --all: no run directories under {root}")
    sections = [run_section(r, anchor=f"run{i}") for i, r in enumerate(runs)]
    page = root / "report.html"
    page.write_text(render_page(f"telescope — all runs under {root}", sections), encoding="utf-8")
    return page
