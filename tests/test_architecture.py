"""One table of the imports each room of the house may not make (HOUSE.md, the picture at the top).

Each row is checked in a fresh interpreter: the room and every module under it are imported
(the lazily loaded study modules of ``plots`` included) with the ``telescope`` package's own
``__init__`` kept out of the way, so that a room is charged only for what it pulls in itself;
the last row checks the public ``import telescope`` as a user makes it. A forbidden module in
``sys.modules`` afterwards fails the row and names the culprit.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ABOVE_THE_CORE = ("telescope.experiments", "telescope.store", "telescope.plots", "telescope.cli",
                  "telescope.sweeps", "telescope.report")
BELOW_THE_STUDIES = ("telescope.train", "telescope.data", "telescope.models", "telescope.trees")
HEAVY = ("sklearn", "matplotlib", "pandas")

# room -> modules it may not import (directly or through anything it imports)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # the math core: torch, numpy, the standard library and telescope.errors (flow also uses scipy)
    "telescope.kernels": ABOVE_THE_CORE + BELOW_THE_STUDIES + HEAVY + ("scipy",),
    "telescope.lens": ABOVE_THE_CORE + BELOW_THE_STUDIES + HEAVY + ("scipy",),
    "telescope.flow": ABOVE_THE_CORE + BELOW_THE_STUDIES + HEAVY,
    "telescope.measures": ABOVE_THE_CORE + BELOW_THE_STUDIES + HEAVY + ("scipy",),
    # trees may use scikit-learn, but load it lazily (inside the functions that need it)
    "telescope.trees": ABOVE_THE_CORE + HEAVY,
    "telescope.train": ABOVE_THE_CORE + HEAVY,
    "telescope.models": ABOVE_THE_CORE + HEAVY,
    # plots read stored results only: never torch, the math core or the CLI (a study registry
    # without torch is allowed, so that plots and experiments can share one list of studies)
    "telescope.plots": ("torch", "telescope.cli", "telescope.sweeps", "telescope.kernels", "telescope.lens",
                        "telescope.flow", "telescope.measures"),
    "telescope.report": ("torch", "telescope.cli", "telescope.kernels", "telescope.lens", "telescope.flow",
                         "telescope.measures"),
}
PUBLIC = ("telescope.store", "telescope.cli", "telescope.experiments", "telescope.plots") + HEAVY

_ROOM = """
import importlib, importlib.util, json, pkgutil, sys, types
spec = importlib.util.find_spec("telescope")
parent = types.ModuleType("telescope")          # the package without its top-level re-exports
parent.__path__ = list(spec.submodule_search_locations)
sys.modules["telescope"] = parent
room = importlib.import_module(ROOM)
for info in pkgutil.walk_packages(getattr(room, "__path__", []), ROOM + "."):
    importlib.import_module(info.name)
print(json.dumps([m for m in FORBIDDEN if m in sys.modules]))
"""

_PUBLIC = """
import json, sys, telescope
print(json.dumps([m for m in FORBIDDEN if m in sys.modules]))
"""


def _loaded(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_nothing_it_may_not(room):
    code = f"ROOM = {room!r}\nFORBIDDEN = {FORBIDDEN[room]!r}\n" + _ROOM
    bad = _loaded(code)
    assert bad == [], f"{room} (or a module under it) imports {bad}; see the table in {__file__}"


def test_the_public_package_imports_nothing_heavy():
    bad = _loaded(f"FORBIDDEN = {PUBLIC!r}\n" + _PUBLIC)
    assert bad == [], f"import telescope pulls in {bad}"
