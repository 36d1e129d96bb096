"""CIFAR-10 cat vs dog as a binary regression task (the double-descent study, paper Fig. 3).

The shared copy ``cifar10/cifar10_catdog_jpeg.npz`` is **JPEG-derived**: every image was
stored as a lossy JPEG in its source and decoded to RGB, so pixels differ from the
CIFAR-10 binary release by compression artefacts ("CIFAR-10-like"; shared/data/README.md
§4). Numbers from it are not comparable to published CIFAR-10 numbers.

# NOTE [grayscale]
# RGB → gray uses the ITU-R BT.601 luma weights (0.299, 0.587, 0.114), the same as
# Pillow's ``convert("L")``, then area averaging 32×32 → size×size (NOTE [downsampling]
# in telescope.data.images). The paper says only "grayscaled and downsized to 8×8"
# (digest §5.1, §10.7). Pixels are scaled to [0, 1]; no standardisation, as for MNIST.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from telescope.data.core import Split, data_dir
from telescope.data.images import downsample, flip_labels, pick_balanced
from telescope.errors import ConfigError, DataError

CIFAR_CATDOG = "cifar10/cifar10_catdog_jpeg.npz"
LUMA = (0.299, 0.587, 0.114)


def load_cifar_catdog(split: str, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 32, 32, 3) uint8 RGB and labels (n,) uint8 (0 = cat, 1 = dog).

    ``split``: ``"train"`` (10,000 images, 5,000 per class) or ``"test"`` (2,000). Sorted by
    class in the file: shuffle before use.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"load_cifar_catdog(split={split!r}): choose 'train' or 'test'")
    path = data_dir(root) / CIFAR_CATDOG
    if not path.exists():
        raise DataError(
            f"load_cifar_catdog: {path} not found. Point --data-dir or TELESCOPE_DATA at a folder with "
            f"{CIFAR_CATDOG} (arrays x_train, y_train, x_test, y_test: uint8 32×32×3 RGB cat/dog images, "
            "0 = cat, 1 = dog), e.g. the project's shared data folder.")
    return _read(str(path), path.stat().st_mtime_ns, split)


@functools.lru_cache(maxsize=2)
def _read(path: str, mtime_ns: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decompressing takes seconds: keep the last two splits read (read-only arrays)."""
    with np.load(path) as z:
        x, y = z[f"x_{split}"], z[f"y_{split}"]
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def to_grayscale(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(n, H, W, 3) RGB (uint8 0–255 or float 0–1) → (n, H, W) float32 in [0, 1] (NOTE [grayscale])."""
    x = torch.as_tensor(np.array(images))  # a copy: cached arrays are read-only
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ConfigError(f"to_grayscale(images): expected (n, H, W, 3) RGB, got shape {tuple(x.shape)}")
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    x = x.to(torch.float32) / scale
    return x @ torch.tensor(LUMA, dtype=torch.float32)


def cifar_catdog_task(*, n_train: int = 1000, n_test: int = 1000, size: int = 8, seed: int = 0,
                      label_noise: float = 0.0, root: str | Path | None = None) -> Split:
    """Cat (0) vs dog (1), grayscale, ``size``×``size``, flattened to (n, size²) in [0, 1].

    Class-balanced draws under ``seed`` from the training and the test images (disjoint
    by construction); ``label_noise`` flips that fraction of training labels.
    """
    rng = np.random.default_rng(seed)
    xtr, ytr = load_cifar_catdog("train", root)
    xte, yte = load_cifar_catdog("test", root)
    itr = pick_balanced(ytr, (0, 1), n_train, rng, "training")
    ite = pick_balanced(yte, (0, 1), n_test, rng, "test")
    y_train = torch.as_tensor(ytr[itr].astype(np.float32))
    y_test = torch.as_tensor(yte[ite].astype(np.float32))
    flip_labels(y_train, label_noise, rng, "cifar_catdog_task")
    x_train = downsample(to_grayscale(xtr[itr]), size).reshape(n_train, -1)
    x_test = downsample(to_grayscale(xte[ite]), size).reshape(n_test, -1)
    return Split(x_train, y_train, x_test, y_test)
