"""MNIST (IDX files and the 5k training subset), scikit-learn's 8×8 digits, and the
binary, downsampled tasks the telescoping paper uses.

# NOTE [downsampling]
# 28×28 → 8×8 uses area averaging (``adaptive_avg_pool2d``: each output pixel is the
# mean of the input pixels its cell covers, fractional cells weighted), the
# resampling that keeps total ink. The paper does not state its method (digest §10.7).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import struct
import urllib.request
from pathlib import Path

import numpy as np
import torch

from telescope.data.core import Split, data_dir
from telescope.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MNIST_FILES = {
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
}
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_SUBSET = "mnist_train5k.npz"


def _mnist_dir(root: str | Path | None) -> Path:
    return data_dir(root) / "mnist"


def _missing(root: Path, files: list[str]) -> DataError:
    return DataError(
        f"MNIST files not found in {root}: {', '.join(files)}. Point --data-dir or TELESCOPE_DATA at a "
        "folder with mnist/<file>, or fetch the canonical files with `telescope data download mnist`.")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(split: str, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) uint8.

    ``split="test"``: the 10,000 test images. ``split="train"``: the full 60,000 training
    images when ``train-*-idx*.gz`` are present, else the shared 5,000-image subset
    ``mnist_train5k.npz`` (500 per class, sorted by class).
    """
    folder = _mnist_dir(root)
    if split == "test":
        names = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
        missing = [n for n in names if not (folder / n).exists()]
        if missing:
            raise _missing(folder, missing)
        return _read_idx(folder / names[0]), _read_idx(folder / names[1])
    if split == "train":
        names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
        if all((folder / n).exists() for n in names):
            return _read_idx(folder / names[0]), _read_idx(folder / names[1])
        if (folder / MNIST_SUBSET).exists():
            with np.load(folder / MNIST_SUBSET) as z:
                return z["x"], z["y"]
        raise _missing(folder, names + [f"(or {MNIST_SUBSET})"])
    raise ConfigError(f"load_mnist(split={split!r}): choose 'train' or 'test'")


def download_mnist(root: str | Path | None = None) -> Path:
    """Download the four canonical MNIST files and verify their sha256 (asked for by a user)."""
    folder = _mnist_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    for name, digest in MNIST_FILES.items():
        target = folder / name
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            continue
        log.info("downloading %s", name)
        try:
            with urllib.request.urlopen(MNIST_MIRROR + name, timeout=60) as resp:
                data = resp.read()
        except OSError as exc:
            raise DataError(f"download of {name} failed ({exc}); copy the file into {folder} by hand") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise DataError(f"download of {name}: checksum mismatch; nothing was written")
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return folder


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (1,797 images, always available): (n, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.uint8)


def downsample(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(n, H, W) → (n, size, size) float32 by area averaging (NOTE [downsampling])."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return torch.nn.functional.adaptive_avg_pool2d(x[:, None], size)[:, 0]


def pick_balanced(y: np.ndarray, classes: tuple[int, int], n: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """``n`` indices, as balanced between the two classes as the data allow, shuffled."""
    idx = [np.flatnonzero(y == c) for c in classes]
    half = n // 2
    take = [min(half + (n % 2 if i == 0 else 0), len(ix)) for i, ix in enumerate(idx)]
    short = n - sum(take)
    for i in range(2):  # fill from the other class if one runs out
        extra = min(short, len(idx[i]) - take[i])
        take[i] += extra
        short -= extra
    if short > 0:
        raise DataError(f"binary_task: asked for {n} {what} examples of classes {classes}, only "
                        f"{sum(len(ix) for ix in idx)} exist")
    chosen = np.concatenate([rng.choice(ix, size=k, replace=False) for ix, k in zip(idx, take)])
    return rng.permutation(chosen)


def flip_labels(y: torch.Tensor, fraction: float, rng: np.random.Generator, what: str) -> torch.Tensor:
    """Flip exactly round(fraction·n) of the {0, 1} labels ``y`` in place, chosen under ``rng``."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"{what}(label_noise={fraction}): give a fraction in [0, 1)")
    if fraction > 0:
        flip = rng.choice(len(y), size=int(round(fraction * len(y))), replace=False)
        y[flip] = 1.0 - y[flip]
    return y


def digit_group_task(positive: tuple[int, ...], *, n_train: int = 5000, n_test: int = 1000, size: int = 8,
                     seed: int = 0, label_noise: float = 0.0, root: str | Path | None = None) -> Split:
    """All ten MNIST digits as one binary task: label 1 for the digits in ``positive``, else 0.

    E.g. ``positive=(5, 6, 7, 8, 9)`` (digit ≥ 5) or ``(1, 3, 5, 7, 9)`` (odd). ``n_train``
    training images (the shared 5,000-image subset holds 5,000: all of them) and ``n_test``
    test images are drawn balanced in the binary labels under ``seed``; 28×28 is
    area-averaged to ``size``×``size`` and flattened to (n, size²) in [0, 1];
    ``label_noise`` flips that fraction of training labels.
    """
    group = [int(d) for d in positive]
    if not group or not all(0 <= d <= 9 for d in group) or len(set(group)) == 10:
        raise ConfigError(f"digit_group_task(positive={positive}): give some, not all, of the digits 0–9")
    rng = np.random.default_rng(seed)
    parts = []
    for split, n, what in (("train", n_train, "training"), ("test", n_test, "test")):
        images, digits = load_mnist(split, root)
        labels = np.isin(digits, group).astype(np.int64)
        pick = pick_balanced(labels, (0, 1), n, rng, what)
        parts += [downsample(images[pick] / 255.0, size).reshape(n, -1),
                  torch.as_tensor(labels[pick].astype(np.float32))]
    flip_labels(parts[1], label_noise, rng, "digit_group_task")
    return Split(*parts)


def binary_task(dataset: str, classes: tuple[int, int] = (3, 5), *, n_train: int = 1000,
                n_test: int = 1000, size: int = 8, seed: int = 0, label_noise: float = 0.0,
                root: str | Path | None = None) -> Split:
    """Two digit classes as a regression task with labels {0, 1} (first class → 0).

    ``dataset``: ``"mnist"`` (28×28 downsampled to ``size``; training images from the
    training files or the 5k subset, test images from the test set) or ``"digits"``
    (scikit-learn's 8×8 digits, split into disjoint train/test parts). Inputs are
    flattened to (n, size²) in [0, 1]. Class-balanced draws under ``seed``;
    ``label_noise`` flips that fraction of training labels (chosen under ``seed``).
    """
    if len(classes) != 2 or classes[0] == classes[1]:
        raise ConfigError(f"binary_task(classes={classes}): give two different digits")
    rng = np.random.default_rng(seed)
    if dataset == "mnist":
        xtr, ytr = load_mnist("train", root)
        xte, yte = load_mnist("test", root)
        itr = pick_balanced(ytr, classes, n_train, rng, "training")
        ite = pick_balanced(yte, classes, n_test, rng, "test")
        xtr, ytr, xte, yte = xtr[itr] / 255.0, ytr[itr], xte[ite] / 255.0, yte[ite]
    elif dataset == "digits":
        x, y = load_digits()
        keep = np.flatnonzero(np.isin(y, classes))
        perm = rng.permutation(keep)
        if n_train + n_test > len(perm):
            raise DataError(f"binary_task('digits'): only {len(perm)} examples of classes {classes}; "
                            f"asked for n_train={n_train} + n_test={n_test}")
        itr, ite = perm[:n_train], perm[n_train:n_train + n_test]
        xtr, ytr, xte, yte = x[itr], y[itr], x[ite], y[ite]
    else:
        raise ConfigError(f"binary_task(dataset={dataset!r}): choose 'mnist' or 'digits'")
    to_label = lambda y: torch.as_tensor((y == classes[1]).astype(np.float32))  # noqa: E731
    y_train, y_test = to_label(ytr), to_label(yte)
    flip_labels(y_train, label_noise, rng, "binary_task")
    x_train = downsample(xtr, size).reshape(len(itr), -1)
    x_test = downsample(xte, size).reshape(len(ite), -1)
    return Split(x_train, y_train, x_test, y_test)
