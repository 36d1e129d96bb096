import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _data_dir() -> Path | None:
    env = os.environ.get("TELESCOPE_DATA")
    if env and Path(env).exists():
        return Path(env)
    if SHARED_DATA.exists():
        return SHARED_DATA
    return None


@pytest.fixture
def data_dir() -> Path:
    path = _data_dir()
    if path is None:
        pytest.skip("no data directory: set TELESCOPE_DATA to the shared data folder")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seed torch, and run every test on one intra-op thread: the problems are tiny, and extra
    threads only add spin-waits on a busy shared machine (``make test`` also sets OMP_NUM_THREADS=1)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
