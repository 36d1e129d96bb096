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
    torch.manual_seed(0)
    yield
