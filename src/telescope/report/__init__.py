"""Self-contained HTML reports (figures embedded) for runs, sweeps and folders of them."""

from telescope.report.html import build_index, build_report, render_page

__all__ = ["build_index", "build_report", "render_page"]
