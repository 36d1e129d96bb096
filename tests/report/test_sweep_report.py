"""Sweep reports: the mean ± s.e. table, figures, the --all index, and the page in headless Chromium."""

import json
import math
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from telescope.report import build_index, build_report
from telescope.report.aggregate import sweep_table
from telescope.store import read_json
from telescope.sweeps import SweepSpec, parse_grid, run_one, run_sweep


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A finished 2 widths × 2 seeds sweep and one single run, side by side under one folder."""
    root = tmp_path_factory.mktemp("studies")
    spec = SweepSpec("approximation", "tiny", parse_grid(["width=16,32"]), seeds=2, sets={"settings": "sgd"})
    sweep = run_sweep(spec, root / "sweeps", workers=2)
    assert sweep.ok
    single = run_one("approximation", "tiny", 7, {"settings": "sgd"}, root / "runs")
    return root, sweep.path, single.path


def test_table_is_mean_and_standard_error_over_seeds(studies):
    _, sweep, _ = studies
    page = build_report(sweep)
    table = pd.read_csv(sweep / "table.csv")
    runs = pd.read_csv(sweep / "runs.csv")
    assert len(runs) == 4 and set(runs["status"]) == {"done"}
    key = "sgd/lr=0.05/telescope_abs_err"
    for width in (16, 32):
        values = []
        for r in read_json(sweep / "sweep.json")["runs"]:
            if r["point"]["width"] == str(width):
                values.append(read_json(sweep / r["name"] / "summary.json")[key])
        row = table[(table["width"] == width) & (table["metric"] == key)].iloc[0]
        assert row["n"] == 2 and row["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert row["se"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(2), rel=1e-12)
    text = page.read_text()
    assert "Contents" in text and "mean ± s.e." in text and "Summary values against width" in text
    assert text.count("<img") == 1 + 2 * 2  # the sweep figure + the study's two figures per grid point
    assert "width=16; runs of seeds 0, 1 pooled" in text


def test_single_seed_points_have_no_standard_error():
    runs = pd.DataFrame({"run": ["a", "b", "c"], "seed": [0, 1, 0], "status": ["done", "done", "failed"],
                         "w": [1, 1, 2], "m": [1.0, 3.0, np.nan]})
    table = sweep_table(runs, ["w"])
    assert table.to_dict("records") == [{"w": 1, "metric": "m", "mean": 2.0, "se": 1.0, "n": 2}]
    runs.loc[2, "status"] = "done"
    runs.loc[2, "m"] = 5.0
    single = sweep_table(runs, ["w"]).set_index("w")
    assert single.loc[2, "n"] == 1 and np.isnan(single.loc[2, "se"])


def test_report_all_indexes_sweeps_and_runs_by_study(studies):
    root, sweep, single = studies
    page = build_index(root)
    text = page.read_text()
    assert (sweep / "report.html").exists() and (single / "report.html").exists()
    assert f"sweeps/{sweep.name}/report.html" in text and f"runs/{single.name}/report.html" in text
    # the sweep's runs are covered by the sweep's sections, not listed again as single runs
    assert text.count("<section id=\"run") == 1 and 'id="s0-overview"' in text
    nav = re.search(r"<nav>(.*?)</nav>", text).group(1)
    assert nav.count("<li>") == text.count("<section ")
    # `telescope report` on a folder of sweeps indexes them too
    assert build_report(root / "sweeps") == root / "sweeps" / "report.html"
    assert 'id="s0-table"' in (root / "sweeps" / "report.html").read_text()


def test_single_run_report_unchanged(studies):
    _, _, single = studies
    text = build_report(single).read_text()
    assert "<nav>" not in text and text.count("<img") == 2 and "Summary" in text
    assert (single / "figures" / "approximation_error.png").exists()


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

IMG_CHECK = """<img id="control" src="data:image/png;base64,AAAA">
<script>window.addEventListener('load', function () {
  var out = document.createElement('pre'); out.id = 'img-check';
  out.textContent = JSON.stringify(Array.from(document.images).map(function (i) {
    return [i.id, i.complete, i.naturalWidth]; }));
  document.body.appendChild(out); });</script></body>"""


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("headless Chromium not installed (apt-get install -y chromium)")


def test_report_page_renders_in_headless_chromium(studies, tmp_path):
    from matplotlib.image import imread

    chromium = _chromium()
    _, sweep, _ = studies
    page = build_report(sweep)
    flags = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]

    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,1800", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = imread(shot)[..., :3]
    ink = (pixels < 0.9).any(axis=-1).mean()
    assert pixels.shape[:2] == (1800, 1200) and ink > 0.02 and pixels.std() > 0.05, (ink, pixels.std())

    probe = tmp_path / "probe.html"  # the page plus a script that reports every image's naturalWidth
    probe.write_text(page.read_text().replace("</body>", IMG_CHECK), encoding="utf-8")
    dom = subprocess.run([*flags, "--dump-dom", "--virtual-time-budget=10000", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = json.loads(re.search(r'<pre id="img-check">(.*?)</pre>', dom, re.S).group(1))
    real = [f for f in found if f[0] != "control"]
    assert len(real) == page.read_text().count("<img") == 5
    assert all(complete and width > 0 for _, complete, width in real), real
    assert [f[2] for f in found if f[0] == "control"] == [0]  # a broken image is caught by this check


def test_grid_points_keep_the_grid_order_and_a_single_run_passes_its_summary(tmp_path, monkeypatch):
    """Grid values 8, 16 are listed as given (as strings '16' sorts before '8'), and a
    point with one run hands its summary.json to the study's figures."""
    from telescope import plots

    spec = SweepSpec("approximation", "tiny", parse_grid(["width=8,16"]), seeds=1, sets={"settings": "sgd"})
    sweep = run_sweep(spec, tmp_path / "sweeps", workers=1)
    assert sweep.ok
    module = plots.module_for("approximation")
    seen = []
    real = module.figures

    def spy(metrics, config, summary, out_dir):
        seen.append((config["width"], sorted(summary)))
        return real(metrics, config, summary, out_dir)

    monkeypatch.setattr(module, "figures", spy)
    page = build_report(sweep.path).read_text()
    assert [w for w, _ in seen] == [8, 16]
    assert all(keys and any(k.endswith("ratio_linearized_to_telescope") for k in keys) for _, keys in seen)
    assert page.index("approximation: width=8") < page.index("approximation: width=16")
