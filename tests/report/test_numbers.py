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
