import pytest
import torch


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """These problems are tiny: one thread avoids BLAS spin-waits on a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
