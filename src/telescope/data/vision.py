"""Image classification sets as (n, C, H, W) float tensors, normalised per channel.

* ``mnist``: training images from the full files or the shared 5k subset, test set 10k.
* ``fashion-mnist``: IDX files in ``<data_dir>/fashion-mnist/`` or the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
* ``cifar10``: the full CIFAR-10 python batches in ``<data_dir>/cifar10/cifar-10-batches-py``
  when present; otherwise the shared cat/dog copy (2 classes, JPEG-derived — not the exact
  CIFAR-10 pixels).

:func:`match_shape` maps a split onto another task's input shape (resize, replicate
channels), so a network pretrained on MNIST can be fine-tuned on 3×32×32 CIFAR images.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from telescope.data.core import Split, data_dir
from telescope.data.images import _read_idx, load_mnist
from telescope.errors import ConfigError, DataError, ShapeError

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("mnist", "fashion-mnist", "cifar10")


def _fashion(root: Path | None) -> tuple[np.ndarray, ...]:
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for folder in (data_dir(root) / "fashion-mnist", FASHION_SYSTEM_DIR):
        if all((folder / n).exists() for n in names):
            return tuple(_read_idx(folder / n) for n in names)
    raise DataError(
        f"Fashion-MNIST not found in {data_dir(root) / 'fashion-mnist'} or {FASHION_SYSTEM_DIR}: expected "
        f"{', '.join(names)}; install the Debian package dataset-fashion-mnist or copy the files there")


def _cifar(root: Path | None) -> tuple[tuple[np.ndarray, ...], tuple[str, ...]]:
    base = data_dir(root) / "cifar10"
    full = base / "cifar-10-batches-py"
    if full.exists():
        def load(name):
            with open(full / name, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            return d[b"data"].reshape(-1, 3, 32, 32), np.asarray(d[b"labels"], dtype=np.int64)
        parts = [load(f"data_batch_{i}") for i in range(1, 6)]
        xtr = np.concatenate([p[0] for p in parts])
        ytr = np.concatenate([p[1] for p in parts])
        xte, yte = load("test_batch")
        classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
        return (xtr, ytr, xte, yte), classes
    catdog = base / "cifar10_catdog_jpeg.npz"
    if catdog.exists():
        with np.load(catdog) as z:
            arrays = (z["x_train"].transpose(0, 3, 1, 2), z["y_train"].astype(np.int64),
                      z["x_test"].transpose(0, 3, 1, 2), z["y_test"].astype(np.int64))
        return arrays, ("cat", "dog")
    raise DataError(f"CIFAR-10 not found: expected {full} (the python batches) or {catdog}")


def classification(dataset: str, root: str | Path | None = None, *, n_train: int | None = None,
                   n_test: int | None = None, seed: int = 0) -> tuple[Split, tuple[str, ...]]:
    """(Split with x (n, C, H, W) float32 normalised per channel and y (n,) int64, class names).

    ``n_train``/``n_test`` take seeded random subsets (the 5k MNIST subset is sorted by class).
    """
    root = Path(root) if root else None
    if dataset == "mnist":
        xtr, ytr = load_mnist("train", root)
        xte, yte = load_mnist("test", root)
        xtr, xte = xtr[:, None], xte[:, None]
        classes = tuple(str(i) for i in range(10))
    elif dataset == "fashion-mnist":
        xtr, ytr, xte, yte = _fashion(root)
        xtr, xte = xtr[:, None], xte[:, None]
        classes = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
    elif dataset == "cifar10":
        (xtr, ytr, xte, yte), classes = _cifar(root)
    else:
        raise ConfigError(f"classification(dataset={dataset!r}): choose one of {', '.join(DATASETS)}")
    rng = np.random.default_rng(seed)
    if n_train is not None and n_train < len(xtr):
        keep = rng.choice(len(xtr), n_train, replace=False)
        xtr, ytr = xtr[keep], ytr[keep]
    if n_test is not None and n_test < len(xte):
        keep = rng.choice(len(xte), n_test, replace=False)
        xte, yte = xte[keep], yte[keep]
    xtr = torch.as_tensor(np.asarray(xtr), dtype=torch.float32) / 255.0
    xte = torch.as_tensor(np.asarray(xte), dtype=torch.float32) / 255.0
    mean = xtr.mean(dim=(0, 2, 3), keepdim=True)
    std = xtr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    split = Split((xtr - mean) / std, torch.as_tensor(np.asarray(ytr), dtype=torch.int64),
                  (xte - mean) / std, torch.as_tensor(np.asarray(yte), dtype=torch.int64))
    return split, classes


def augment_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crops (zero padding ``pad``) and horizontal flips, per example (CIFAR augmentation)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    idx_r = dy[:, None] + torch.arange(h)[None]  # (n, h) rows of the padded image
    idx_c = dx[:, None] + torch.arange(w)[None]  # (n, w) columns
    rows = padded.gather(2, idx_r[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad))
    out = rows.gather(3, idx_c[:, None, None, :].expand(n, x.shape[1], h, w))
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def match_shape(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """(n, C, H, W) → (n, channels, size, size): bilinear resize, then channel replication.

    A 1-channel set becomes ``channels`` identical channels (MNIST as RGB); otherwise the
    channel counts must agree. Resizing (28 → 32 for MNIST into a CIFAR network) rather
    than zero-padding leaves no artificial border in normalised images. Cost: one
    interpolation over the images, O(n · channels · size²).
    """
    if x.ndim != 4:
        raise ShapeError(f"match_shape: x must be (n, C, H, W), got shape {tuple(x.shape)}")
    c = x.shape[1]
    if c != channels and c != 1:
        raise ShapeError(f"match_shape: cannot map {c} channels to channels={channels}; "
                         "only 1-channel images are replicated")
    if x.shape[2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=size < max(x.shape[2:]))
    return x.expand(-1, channels, -1, -1).contiguous() if c != channels else x
