"""Ten-class digit subsets: balanced vs first N, and the train+test pool for N above the 5k subset."""

import gzip
import struct

import numpy as np
import pytest
import torch

from telescope.data import load_digit_classes
from telescope.errors import ConfigError, DataError


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x}


def test_train_plus_test_pool_reaches_7000_with_a_disjoint_test_set(data_dir):
    data = load_digit_classes(7000, pool="train+test", test_keep=5000, n_test=2000, root=data_dir)
    assert torch.equal(torch.bincount(data.y_train, minlength=10), torch.full((10,), 700))
    assert data.x_test_full.shape == (5000, 784) and data.x_test.shape == (2000, 784)
    assert torch.equal(data.x_test, data.x_test_full[:2000])
    # the kept test images never appear among the training images (compared pixel row by row)
    assert not (_rows(data.x_train) & _rows(data.x_test_full))
    # and the pool did take test-file images: 7000 > the 5,000 training images on disk
    plain = load_digit_classes(10, root=data_dir)
    assert len(plain.x_test_full) == 10000
    with pytest.raises(DataError, match="pool='train\\+test'"):
        load_digit_classes(7000, pool="train", root=data_dir)


def test_pool_and_subset_are_checked_at_the_door(data_dir):
    with pytest.raises(ConfigError, match="pool='both'"):
        load_digit_classes(100, pool="both", root=data_dir)
    with pytest.raises(ConfigError, match="test_keep=100, n_test=2000"):
        load_digit_classes(100, pool="train+test", test_keep=100, root=data_dir)
    with pytest.raises(DataError, match="subset='first'"):
        load_digit_classes(100, subset="first", root=data_dir)


def _idx(path, array: np.ndarray) -> None:
    magic = 0x800 | array.ndim
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">I" + "I" * array.ndim, magic, *array.shape))
        fh.write(array.astype(np.uint8).tobytes())


def test_first_subset_takes_the_first_n_in_file_order(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(60, 28, 28))
    y_train = np.arange(60) % 10
    _idx(folder / "train-images-idx3-ubyte.gz", x_train)
    _idx(folder / "train-labels-idx1-ubyte.gz", y_train)
    _idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, size=(30, 28, 28)))
    _idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(30) % 10)
    data = load_digit_classes(25, subset="first", n_test=10, root=tmp_path)
    assert torch.equal(data.y_train, torch.as_tensor(y_train[:25], dtype=torch.int64))
    assert torch.allclose(data.x_train, torch.as_tensor(x_train[:25].reshape(25, -1) / 255.0))
    # first N of the pooled files: the training file, then the test file from test_keep on
    pooled = load_digit_classes(65, subset="first", pool="train+test", test_keep=20, n_test=10, root=tmp_path)
    assert torch.equal(pooled.y_train[60:], torch.arange(20, 25) % 10)
    assert pooled.x_test_full.shape == (20, 784)
