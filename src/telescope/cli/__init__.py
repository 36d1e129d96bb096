"""The command line: the only place that prints to people or exits.

Every command turns every error into one readable line on stderr and a non-zero exit;
an unexpected one also leaves its traceback in a log file that the line names
(NOTE [one-line failures] in :mod:`telescope.cli.errors`).
"""

from telescope.cli.main import main

__all__ = ["main"]
