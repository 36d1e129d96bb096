"""Feature rank of a layer's activations, and the kernel–target alignment of a tangent kernel.

Deep Grokking (Fan, Pascanu & Jaggi 2024) tracks, for every linear layer, the numerical
rank of the covariance of its pre-activations on the test set; the onset of
generalization coincides with a drop of that rank in the later layers. This module
holds the rank measures (torch only) and the centred kernel–target alignment used to put
kernel alignment on the same time axis. Digest: shared/papers/grokking-and-kernel-dynamics.md (a.3).

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
# ``effective_rank`` (Roy & Vetterli 2007: exp of the entropy of σ/Σσ), which vary
# continuously and do not jump when one unit dies.
"""

from __future__ import annotations

import torch

from telescope.errors import ShapeError


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


def effective_rank(features: torch.Tensor) -> float:
    """Effective rank exp(H(p)), p = σ/Σσ of the covariance's singular values (Roy & Vetterli).

    Lies in [1, d]; equals k for k equal non-zero singular values and 0 for constant features.
    """
    s = covariance_spectrum(features)
    total = float(s.sum())
    if total <= 0.0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def tunnel_length(ranks: dict[str, int] | list[int], width: int, fraction: float = 0.75) -> int:
    """How many layers have rank below ``fraction · width`` (Masarczyk et al.'s "tunnel").

    ``ranks``: the ranks of the width-``width`` layers only (leave out the output layer,
    whose rank is at most the number of outputs). Deep Grokking uses 300 of 400 = 0.75.
    """
    values = list(ranks.values()) if isinstance(ranks, dict) else list(ranks)
    return int(sum(1 for r in values if r < fraction * width))


def centered_alignment(kernel: torch.Tensor, targets: torch.Tensor) -> float:
    """Centred kernel–target alignment (Cortes, Mohri & Rostamizadeh 2012).

    A = ⟨HKH, HYYᵀH⟩_F / (‖HKH‖_F ‖HYYᵀH‖_F), H = I − 11ᵀ/n.
    ``kernel``: (n, n) symmetric; ``targets``: (n,) or (n, k) (e.g. one-hot labels).
    Returns a float in [−1, 1]; 0 when either centred matrix vanishes. Cost O(n² k).
    """
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ShapeError(f"centered_alignment(kernel): expected (n, n), got {tuple(kernel.shape)}")
    y = targets.reshape(targets.shape[0], -1).to(kernel.dtype)
    if y.shape[0] != kernel.shape[0]:
        raise ShapeError(f"centered_alignment(targets): expected {kernel.shape[0]} rows to match the "
                         f"kernel, got {tuple(targets.shape)}")
    kc = kernel - kernel.mean(0, keepdim=True) - kernel.mean(1, keepdim=True) + kernel.mean()
    yc = y - y.mean(0, keepdim=True)
    target = yc @ yc.T
    denom = float(torch.linalg.norm(kc) * torch.linalg.norm(target))
    if denom == 0.0:
        return 0.0
    return float((kc * target).sum() / denom)
