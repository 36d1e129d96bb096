import numpy as np
import pytest
import torch

from telescope.data import binary_task, downsample, load_mnist
from telescope.errors import DataError


def test_downsample_is_area_averaging():
    x = np.random.default_rng(0).random((3, 28, 28))
    small = downsample(x, 8)
    assert small.shape == (3, 8, 8)
    assert torch.allclose(small.mean(dim=(1, 2)), torch.as_tensor(x, dtype=torch.float32).mean(dim=(1, 2)), atol=0.02)
    assert torch.equal(downsample(small, 8), small)


def test_digits_task_is_balanced_disjoint_and_seeded():
    a = binary_task("digits", (3, 5), n_train=200, n_test=100, seed=1)
    b = binary_task("digits", (3, 5), n_train=200, n_test=100, seed=1)
    assert torch.equal(a.x_train, b.x_train) and a.x_train.shape == (200, 64)
    assert abs(float(a.y_train.mean()) - 0.5) < 0.05
    train_rows = {tuple(r.tolist()) for r in a.x_train}
    assert not any(tuple(r.tolist()) in train_rows for r in a.x_test)
    noisy = binary_task("digits", (3, 5), n_train=200, n_test=100, seed=1, label_noise=0.2)
    assert int((noisy.y_train != a.y_train).sum()) == 40


def test_mnist_task_from_shared_data(data_dir):
    s = binary_task("mnist", (3, 5), n_train=1000, n_test=1000, root=data_dir)
    assert s.x_train.shape == (1000, 64) and s.x_test.shape == (1000, 64)
    assert float(s.y_train.mean()) == 0.5 and float(s.y_test.mean()) == 0.5
    assert 0 <= float(s.x_train.min()) and float(s.x_train.max()) <= 1


def test_missing_mnist_names_files_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz.*telescope data download mnist"):
        load_mnist("test", tmp_path)
