import pytest

from telescope.sweeps import SweepSpec, parse_grid, run_sweep

# settings=sgd keeps one training unit per run: each tiny run is about a second of CPU
TINY_SETS = {"settings": "sgd"}


def tiny_spec(grid=("width=16,32",), seeds=2, sets=TINY_SETS, preset="tiny"):
    return SweepSpec("approximation", preset, parse_grid(grid), seeds=seeds, sets=dict(sets))


@pytest.fixture(name="tiny_spec", scope="session")
def tiny_spec_fixture():
    """The spec builder, for tests: ``tiny_spec(grid=(...), seeds=2, sets={...})``."""
    return tiny_spec


@pytest.fixture(scope="session")
def local_sweep(tmp_path_factory):
    """A finished 2 widths × 2 seeds sweep of approximation/tiny on the local backend (2 workers)."""
    out = tmp_path_factory.mktemp("local")
    result = run_sweep(tiny_spec(), out, workers=2)
    assert result.ok and len(result.ran) == 4, result
    return result.path
