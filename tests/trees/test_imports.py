"""telescope.trees may use scikit-learn, but never storage, plotting or the CLI."""

import subprocess
import sys


def test_trees_imports_no_store_plots_cli_and_loads_sklearn_lazily():
    code = ("import sys, telescope.trees\n"
            "bad = [m for m in ('telescope.store', 'telescope.plots', 'telescope.cli', "
            "'telescope.experiments', 'matplotlib', 'sklearn') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"telescope.trees pulls in {out.stdout.strip()}"
