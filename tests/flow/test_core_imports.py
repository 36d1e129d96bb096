"""The math core stays free of storage, CLI, plotting and scikit-learn."""

import subprocess
import sys


def test_flow_imports_only_the_math_stack():
    code = ("import sys, telescope.flow; "
            "bad = [m for m in ('telescope.store', 'telescope.cli', 'telescope.experiments', "
            "'matplotlib', 'sklearn', 'pandas') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
