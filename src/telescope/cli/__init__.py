"""The command line: the only place that prints to people or exits.

Every command turns :class:`telescope.errors.TelescopeError` into one readable line on
stderr and a non-zero exit; an unexpected error is written in full to ``error.log``
of the run directory (when there is one) and reported in one line.
"""

from telescope.cli.main import main

__all__ = ["main"]
