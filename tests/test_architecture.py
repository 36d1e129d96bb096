"""The math core stays free of storage, plotting, CLI and scikit-learn (HOUSE.md)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["telescope.lens", "telescope.kernels", "telescope.flow", "telescope"])
def test_math_core_imports_nothing_heavy(module):
    code = (f"import sys, {module}\n"
            "bad = [m for m in ('telescope.store', 'telescope.cli', 'telescope.experiments', 'matplotlib', "
            "'sklearn', 'pandas') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"
