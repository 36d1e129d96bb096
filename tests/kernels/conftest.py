import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The kernels tests are many tiny float64 ops: extra threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
