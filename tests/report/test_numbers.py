"""Numbers in reports: integral floats (step counts) print as integers (NOTE [integral numbers print as integers])."""

import json

import pandas as pd

from telescope.report.html import _frame_html, _table
from telescope.report.numbers import number


def test_integral_floats_print_as_integers_and_others_keep_their_digits():
    assert number(12000.0) == "12000"          # {:.4g} would print 1.2e+04
    assert number(4304.0, 6) == "4304"
    assert number(0.0123456) == "0.01235"
    assert number(2.5e-7) == "2.5e-07"
    assert number(4304.5) == "4304"             # 4 significant digits still apply to non-integers
    assert number(7) == "7" and number(True) == "True" and number("x") == "x"
    assert number(float("nan")) == "—" and number(float("inf")) == "∞"


def test_report_tables_show_step_counts_as_integers():
    frame = pd.DataFrame({"step": [12000.0, float("nan")], "loss": [0.012345, 1.5]})
    cells = _frame_html(frame)
    assert ">12000<" in cells and "1.2e+04" not in cells and ">0.01235<" in cells
    assert ">12000<" in _table({"grok_step": 12000.0}) and "1.2e+04" not in _table({"grok_step": 12000.0})


def test_cli_headline_prints_step_counts_as_integers(tmp_path):
    from telescope.cli.main import headline

    (tmp_path / "summary.json").write_text(json.dumps({"grok_step": 123456789.0, "ratio": 0.5}))
    lines = headline(tmp_path)
    assert "  grok_step = 123456789" in lines and "  ratio = 0.5" in lines


def test_cli_headline_prints_a_studys_declared_headline_first(tmp_path):
    from telescope.cli.main import headline
    from telescope.experiments import get

    keys = {f"{s}/lr=0.1/{m}": 1.0 for s in ("adamw", "sgd") for m in ("a_err", "b_err", "c_err", "d_err",
                                                                        "ratio_linearized_to_telescope")}
    (tmp_path / "summary.json").write_text(json.dumps(keys, sort_keys=True))
    lines = headline(tmp_path, get("approximation").headline)
    assert [ln.split(" = ")[0].strip() for ln in lines[1:3]] == ["adamw/lr=0.1/ratio_linearized_to_telescope",
                                                                 "sgd/lr=0.1/ratio_linearized_to_telescope"]
    assert lines[1:3] != headline(tmp_path)[1:3]            # without the study's patterns: sorted order
