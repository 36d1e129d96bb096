"""Ten-class digit tasks: an MNIST training subset of size N and the test images, or
scikit-learn's 8×8 digits split in two (used by the deep-grokking study).

# NOTE [ten-class digit subsets]
# Deep Grokking trains on the *first* N MNIST training images (``Subset(train, range(N))``).
# The shared offline data hold a 5,000-image subset sorted by class, where "first N" would
# be a few digits only. ``subset="balanced"`` takes N/10 images per class, drawn under the
# generator and shuffled (the first N of MNIST are close to balanced, so this is the same
# kind of sample); ``subset="first"`` takes the first N images of the full 60k training
# file and needs it in the data directory. Pixels in [0, 1], no normalisation (as the
# authors). ``x_test`` is the first ``n_test`` test images (the test file is not sorted);
# ``x_test_full`` all of them. scikit-learn's digits are split into disjoint test and
# training draws.
#
# ``pool="train+test"`` is for training sets larger than the shared 5k subset (the paper's
# N = 7000): the test file is cut in two, its first ``test_keep`` images stay the test set
# (``x_test_full``; ``x_test`` its first ``n_test``) and the rest join the training pool,
# from which the balanced draw is taken; the two sets are disjoint by construction. With
# ``subset="first"`` the training images are the first n_train of the training file
# followed, if needed, by the pooled test images in file order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from telescope.data.core import data_dir
from telescope.data.images import load_digits, load_mnist
from telescope.errors import ConfigError, DataError


@dataclass(frozen=True)
class DigitClasses:
    """Training and test images, flattened to (n, d) float64 in [0, 1], integer labels (n,) int64.

    ``x_test`` (n_test, d) is what per-step metrics use; ``x_test_full`` every test image
    (the same tensor for scikit-learn's digits).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_test_full: torch.Tensor
    y_test_full: torch.Tensor


def balanced_indices(y: np.ndarray, n: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """``n // 10`` indices of each of the ten classes of ``y``, drawn under ``rng`` and shuffled."""
    per = n // 10
    parts = []
    for c in range(10):
        pool = np.flatnonzero(y == c)
        if len(pool) < per:
            raise DataError(f"load_digit_classes: asked for {n} {what} images ({per} per class), only "
                            f"{len(pool)} of digit {c} are available; lower n_train or use the full MNIST files")
        parts.append(rng.permutation(pool)[:per])
    return rng.permutation(np.concatenate(parts))


def _has_full_mnist(root: str | Path | None) -> bool:
    folder = data_dir(root) / "mnist"
    return all((folder / f"train-{kind}-idx{d}-ubyte.gz").exists() for kind, d in (("images", 3), ("labels", 1)))


def load_digit_classes(n_train: int, *, dataset: str = "mnist", subset: str = "balanced", n_test: int = 2000,
                       data_seed: int = 0, pool: str = "train", test_keep: int = 5000,
                       root: str | Path | None = None) -> DigitClasses:
    """A training subset of ``n_train`` images and the test images (NOTE [ten-class digit subsets]).

    ``dataset``: ``"mnist"`` or ``"digits"`` (scikit-learn's 8×8, always available).
    ``subset``: ``"balanced"`` (n_train/10 per class) or ``"first"`` (MNIST's first n_train).
    ``pool``: ``"train"`` (training file only) or ``"train+test"`` (MNIST: test images from
    index ``test_keep`` on join the training pool; the first ``test_keep`` stay the test set).
    """
    fn = "load_digit_classes"
    if pool not in ("train", "train+test"):
        raise ConfigError(f"{fn}(pool={pool!r}): choose 'train' or 'train+test'")
    if subset not in ("balanced", "first"):
        raise ConfigError(f"{fn}(subset={subset!r}): choose 'balanced' or 'first'")
    rng = np.random.default_rng(data_seed)
    if dataset == "mnist":
        if subset == "first" and not _has_full_mnist(root):
            raise DataError(f"{fn}(subset='first'): needs the full MNIST training files "
                            "(train-*-idx*.gz) in the data directory; only the 5k subset was found. Use "
                            "subset=balanced or fetch them with `telescope data download mnist`")
        xtr, ytr = load_mnist("train", root)
        xte, yte = load_mnist("test", root)
        if pool == "train+test":
            if not 0 < test_keep < len(yte) or n_test > test_keep:
                raise ConfigError(f"{fn}(test_keep={test_keep}, n_test={n_test}): with pool='train+test' keep "
                                  f"between n_test and {len(yte) - 1} test images as the test set")
            xtr, ytr = np.concatenate([xtr, xte[test_keep:]]), np.concatenate([ytr, yte[test_keep:]])
            xte, yte = xte[:test_keep], yte[:test_keep]
        if n_train > len(ytr):
            raise DataError(f"{fn}(n_train={n_train}): only {len(ytr)} training images exist (pool={pool!r}); "
                            "lower n_train, use pool='train+test' or the full MNIST files")
        itr = np.arange(n_train) if subset == "first" else balanced_indices(ytr, n_train, rng, "training")
        x_train, y_train = xtr[itr] / 255.0, ytr[itr]
        x_full, y_full = xte / 255.0, yte
        x_test, y_test = x_full[:n_test], y_full[:n_test]
    else:  # scikit-learn's 8x8 digits: disjoint train / test draws
        x, y = load_digits()
        perm = rng.permutation(len(y))
        test_idx, rest = perm[:n_test], perm[n_test:]
        itr = rest[balanced_indices(y[rest], n_train, rng, "training (digits)")]
        x_train, y_train = x[itr], y[itr]
        x_test, y_test = x[test_idx], y[test_idx]
        x_full, y_full = x_test, y_test
    return DigitClasses(_as_x(x_train), _as_y(y_train), _as_x(x_test), _as_y(y_test), _as_x(x_full), _as_y(y_full))


def _as_x(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(len(a), -1))


def _as_y(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.int64))
