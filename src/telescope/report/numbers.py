"""How a number reads in a report, a table cell or the CLI's headline.

NOTE [integral numbers print as integers]: step counts, widths and epochs reach the
summaries as floats (a mean over seeds, a column with a missing value), and ``{:.4g}``
prints 12000.0 as ``1.2e+04``. A float that is integral (and below 10^15, where floats
still hold every integer) prints as an integer; any other float keeps ``digits``
significant digits; NaN prints as ``—`` (nothing measured).
"""

from __future__ import annotations

import math

__all__ = ["number"]


def number(value: float | int, digits: int = 4) -> str:
    """``value`` as text: ``12000.0`` → ``"12000"``, ``0.012345`` → ``"0.01235"`` (digits=4), NaN → ``"—"``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"
