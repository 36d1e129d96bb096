"""A network's features: each linear layer's pre-activations, their rank, and linear probes.

Deep Grokking (Fan, Pascanu & Jaggi 2024) tracks, for every linear layer, the numerical
rank of the covariance of its pre-activations on the test set; the onset of
generalization coincides with a drop of that rank in the later layers, and a linear probe
on a layer's features tells how much of the label it already carries. The centred
kernel–target alignment that goes on the same time axis is
:func:`telescope.kernels.kernel_target_alignment`. Torch only.
Digest: shared/papers/grokking-and-kernel-dynamics.md (a.3).

# NOTE [feature rank tolerance]
# ``numerical_rank`` with ``rtol=None`` is the authors' measure exactly:
# ``torch.linalg.matrix_rank(torch.cov(A.T))`` with matrix_rank's default tolerance,
# σ_i > max(d, d)·eps(dtype)·σ_max of the d×d covariance (the paper's text says max(n, d);
# the code uses the covariance's own size). In float64 the threshold is ~1e-13·σ_max, so
# this counts *exactly* linearly independent directions: a dead ReLU unit in layer l−1
# removes one from layer l's pre-activation rank. Rounding noise δ in the activations
# enters the covariance squared: float32 noise gives ~1e-14·σ_max, right at the float64
# threshold for d in the hundreds, so counts can flip by rounding. We therefore compute
# the activations themselves in float64 (a float64 copy of the network).
# Because that count hinges on dead units, two robust variants go with it:
# ``numerical_rank(..., rtol=1e-3)`` (singular values above 1e-3·σ_max) and
# ``feature_effective_rank`` (Roy & Vetterli 2007: exp of the entropy of σ/Σσ), which vary
# continuously and do not jump when one unit dies.
# ``dead_units`` counts the ReLU units a layer's pre-activations leave at zero on every
# input; each is a constant feature, so the next layer's default-tolerance rank is at most
# d − dead (in float64 the bound is usually met with equality: the count is the number of
# live units). A dead unit gets no gradient, so it stays dead: this rank can only fall as
# fast as units die.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from telescope.errors import ShapeError
from telescope.kernels.statistics import spectrum_effective_rank


@torch.no_grad()
def layer_features(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every ``nn.Linear`` of a sequential ``model`` on ``x`` (n, d_in):
    one (n, d_l) tensor per linear layer, pre-activation, in module order."""
    feats = []
    h = x
    for module in model:
        h = module(h)
        if isinstance(module, nn.Linear):
            feats.append(h)
    return feats


def as_float64(model: nn.Module) -> nn.Module:
    """``model`` itself when all its parameters are float64, else a float64 copy
    (NOTE [feature rank tolerance]: ranks need float64 arithmetic)."""
    if all(p.dtype == torch.float64 for p in model.parameters()):
        return model
    return copy.deepcopy(model).double()


def _check_features(fn: str, features: torch.Tensor) -> None:
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ShapeError(f"{fn}(features): expected a 2-d tensor (n_samples, n_features), got {got}; "
                         "flatten the layer's output to (n, d) first")
    if features.shape[0] < 2:
        raise ShapeError(f"{fn}(features): need at least 2 samples for a covariance, got "
                         f"{features.shape[0]}; pass more inputs")
    if not features.is_floating_point():
        raise ShapeError(f"{fn}(features): expected a floating tensor, got {features.dtype}; "
                         "cast with .double()")


def feature_covariance(features: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance over samples, ``torch.cov(features.T)``: (n, d) → (d, d).

    Kept in the dtype of ``features`` (pass float64 for the authors' rank). Cost O(n d²).
    """
    _check_features("feature_covariance", features)
    return torch.cov(features.T).reshape(features.shape[1], features.shape[1])


def covariance_spectrum(features: torch.Tensor) -> torch.Tensor:
    """Singular values (descending) of the feature covariance: (n, d) → (d,). Cost O(n d² + d³)."""
    return torch.linalg.svdvals(feature_covariance(features))


def numerical_rank(features: torch.Tensor, rtol: float | None = None) -> int:
    """Numerical rank of the covariance of ``features`` (n, d) (NOTE [feature rank tolerance]).

    ``rtol=None``: ``matrix_rank``'s default tolerance, d·eps(dtype)·σ_max — the measure of
    Deep Grokking's code. ``rtol=r``: the number of singular values above r·σ_max.
    A constant feature matrix has rank 0. Returns an int in [0, min(n − 1, d)] up to rounding.
    """
    if rtol is not None and not (0.0 <= rtol < 1.0):
        raise ShapeError(f"numerical_rank(rtol={rtol}): choose None (matrix_rank's default) or a "
                         "relative tolerance in [0, 1), e.g. 1e-3")
    cov = feature_covariance(features)
    if rtol is None:
        return int(torch.linalg.matrix_rank(cov))
    s = torch.linalg.svdvals(cov)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    return int((s > rtol * s[0]).sum())


def dead_units(features: torch.Tensor) -> int:
    """How many of the d units of ``features`` (n, d) (a layer's pre-activations) are ≤ 0 on
    every one of the n inputs, i.e. ReLU units that output 0 on all of them
    (NOTE [feature rank tolerance]). Returns an int in [0, d]."""
    _check_features("dead_units", features)
    return int((features <= 0).all(dim=0).sum())


def feature_effective_rank(features: torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli) of the covariance of ``features`` (n, d): exp(H(p)),
    p = σ/Σσ of the covariance's singular values (:func:`telescope.kernels.spectrum_effective_rank`).

    Lies in [1, d]; equals k for k equal non-zero singular values and 0 for constant features.
    """
    return float(spectrum_effective_rank(covariance_spectrum(features)))


def tunnel_length(ranks: dict[str, int] | list[int], width: int, fraction: float = 0.75) -> int:
    """How many layers have rank below ``fraction · width`` (Masarczyk et al.'s "tunnel").

    ``ranks``: the ranks of the width-``width`` layers only (leave out the output layer,
    whose rank is at most the number of outputs). Deep Grokking uses 300 of 400 = 0.75.
    """
    values = list(ranks.values()) if isinstance(ranks, dict) else list(ranks)
    return int(sum(1 for r in values if r < fraction * width))


def probe_accuracy(train_feats: torch.Tensor, y_train: torch.Tensor, test_feats: torch.Tensor,
                   y_test: torch.Tensor, ridge: float = 1e-3, classes: int = 10) -> float:
    """Test accuracy of a ridge classifier on one-hot targets fit to (N, d) training features.

    ``y_train`` (N,) and ``y_test`` (M,) are integer labels in [0, classes); ``test_feats``
    is (M, d). Features are standardised with the training mean and std (constant columns
    dropped), an intercept is added, and W = (XᵀX + λI)⁻¹XᵀY with λ = ridge·tr(XᵀX)/d, in
    float64. Cost O(N d² + d³).
    """
    xtr, xte = train_feats.double(), test_feats.double()
    mean, std = xtr.mean(0), xtr.std(0)
    keep = std > 1e-12 * max(float(std.max()), 1e-300)
    xtr = (xtr[:, keep] - mean[keep]) / std[keep]
    xte = (xte[:, keep] - mean[keep]) / std[keep]
    ones = lambda a: torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], 1)  # noqa: E731
    xtr, xte = ones(xtr), ones(xte)
    targets = torch.nn.functional.one_hot(y_train, classes).double()
    gram = xtr.T @ xtr
    lam = ridge * float(torch.trace(gram)) / gram.shape[0]
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    w = torch.linalg.solve(gram + lam * eye, xtr.T @ targets)
    return float(((xte @ w).argmax(1) == y_test).double().mean())
