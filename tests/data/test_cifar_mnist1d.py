import random
import sys

import numpy as np
import pytest
import torch

from telescope.data.cifar import cifar_catdog_task, load_cifar_catdog, to_grayscale
from telescope.errors import DataError, MissingExtraError


# ------------------------------------------------------------------ CIFAR-10 cat vs dog

def test_grayscale_matches_pillow_luma():
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    ours = to_grayscale(rgb).numpy() * 255
    pil = np.stack([np.asarray(Image.fromarray(im).convert("L"), dtype=np.float64) for im in rgb])
    assert ours.shape == (4, 5, 6)
    assert np.abs(ours - pil).max() <= 0.51          # Pillow rounds to integers
    pure = np.zeros((1, 1, 1, 3), np.uint8)
    pure[..., 1] = 255
    assert float(to_grayscale(pure)) == pytest.approx(0.587, abs=1e-6)


def test_cifar_task_shapes_balance_range_and_disjointness(data_dir):
    s = cifar_catdog_task(n_train=400, n_test=300, size=8, seed=3, root=data_dir)
    assert s.x_train.shape == (400, 64) and s.x_test.shape == (300, 64)
    assert s.x_train.dtype == torch.float32
    assert float(s.y_train.mean()) == 0.5 and float(s.y_test.mean()) == 0.5
    assert set(s.y_train.unique().tolist()) == {0.0, 1.0}
    assert 0.0 <= float(s.x_train.min()) and float(s.x_train.max()) <= 1.0
    train_rows = {r.numpy().tobytes() for r in s.x_train}
    assert not any(r.numpy().tobytes() in train_rows for r in s.x_test)
    again = cifar_catdog_task(n_train=400, n_test=300, size=8, seed=3, root=data_dir)
    assert torch.equal(s.x_train, again.x_train) and torch.equal(s.y_test, again.y_test)
    other = cifar_catdog_task(n_train=400, n_test=300, size=8, seed=4, root=data_dir)
    assert not torch.equal(s.x_train, other.x_train)


def test_cifar_task_is_the_grayscale_area_average_of_the_raw_images(data_dir):
    xs, ys = load_cifar_catdog("test", data_dir)
    assert xs.shape == (2000, 32, 32, 3) and xs.dtype == np.uint8
    assert np.bincount(ys).tolist() == [1000, 1000]
    s = cifar_catdog_task(n_train=10, n_test=2000, size=8, seed=0, root=data_dir)
    # every 8×8 test image is the mean over 4×4 blocks of the luma image of some raw image
    gray = (xs.astype(np.float64) / 255) @ np.array([0.299, 0.587, 0.114])
    blocks = gray.reshape(2000, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(2000, 64)
    dist = ((s.x_test.double().numpy()[:20, None, :] - blocks[None]) ** 2).sum(-1)
    nearest = dist.argmin(1)
    assert dist.min(1).max() < 1e-9
    assert np.array_equal(ys[nearest].astype(np.float32), s.y_test.numpy()[:20])


def test_cifar_label_noise_flips_exactly_that_fraction(data_dir):
    clean = cifar_catdog_task(n_train=200, n_test=10, seed=1, root=data_dir)
    noisy = cifar_catdog_task(n_train=200, n_test=10, seed=1, label_noise=0.2, root=data_dir)
    assert torch.equal(clean.x_train, noisy.x_train)
    assert int((clean.y_train != noisy.y_train).sum()) == 40
    assert torch.equal(clean.y_test, noisy.y_test)


def test_missing_cifar_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"cifar10_catdog_jpeg\.npz.*TELESCOPE_DATA"):
        load_cifar_catdog("train", tmp_path)


# ------------------------------------------------------------------ MNIST-1D

def test_mnist1d_missing_extra_names_the_extra(monkeypatch):
    from telescope.data.mnist1d import mnist1d_task

    monkeypatch.setitem(sys.modules, "mnist1d", None)      # import mnist1d now raises ImportError
    with pytest.raises(MissingExtraError, match=r"telescope\[mnist1d\]"):
        mnist1d_task()


def test_mnist1d_task_shapes_balance_noise_and_no_global_rng_side_effect():
    pytest.importorskip("mnist1d")
    from telescope.data.mnist1d import mnist1d_task

    np.random.seed(123)
    random.seed(123)
    expect_np, expect_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    s = mnist1d_task((0, 1), seed=0, num_samples=1000)     # 100 signals per class, 80/20 split
    assert np.random.rand() == expect_np and random.random() == expect_py
    assert s.x_train.shape[1] == 40 and s.x_test.shape[1] == 40
    assert 130 <= len(s.y_train) <= 190 and 10 <= len(s.y_test) <= 70
    assert len(s.y_train) + len(s.y_test) == 200
    assert abs(float(s.y_train.mean()) - 0.5) < 0.1
    train_rows = {r.numpy().tobytes() for r in s.x_train}
    assert not any(r.numpy().tobytes() in train_rows for r in s.x_test)
    sub = mnist1d_task((0, 1), n_train=100, n_test=20, seed=0, num_samples=1000)
    assert sub.x_train.shape == (100, 40) and float(sub.y_train.mean()) == 0.5
    noisy = mnist1d_task((0, 1), n_train=100, n_test=20, seed=0, label_noise=0.15, num_samples=1000)
    assert torch.equal(sub.x_train, noisy.x_train)
    assert int((sub.y_train != noisy.y_train).sum()) == 15
    with pytest.raises(DataError, match="num_samples"):
        mnist1d_task((0, 1), n_train=500, num_samples=1000)
