"""Statistics of kernels: alignments, distances, spectra and row norms.

Plain functions on kernel tensors (typically ``empirical_ntk(..., output="trace")``,
an ``(n, n)`` Gram or an ``(n1, n2)`` cross kernel). Inputs are validated; results are
0-d tensors (or 1-d for per-row / spectral quantities) in the kernel's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from telescope.errors import ConfigError, ShapeError


def _as_tensor(fn: str, name: str, value) -> Tensor:
    if not isinstance(value, Tensor):
        raise ShapeError(f"{fn}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ShapeError(f"{fn}: {name} must be floating point, got {value.dtype}; use {name}.double()")
    return value


def _square(fn: str, name: str, K) -> Tensor:
    K = _as_tensor(fn, name, K)
    if K.dim() != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ShapeError(
            f"{fn}: {name} must be a non-empty square (n, n) Gram matrix, got shape "
            f"{tuple(K.shape)}; for a multi-output kernel pass output='trace' to empirical_ntk"
        )
    return K


def _targets(fn: str, y, n: int) -> Tensor:
    if isinstance(y, Tensor) and not y.is_floating_point() and not y.is_complex() and y.dtype != torch.bool:
        y = y.double()  # integer (e.g. one-hot) labels; the caller casts to the kernel's dtype
    y = _as_tensor(fn, "y", y)
    if y.dim() not in (1, 2) or y.shape[0] != n:
        raise ShapeError(f"{fn}: y must have shape ({n},) or ({n}, k) to match the kernel, got {tuple(y.shape)}")
    return y.reshape(n, -1)


def _centre(K: Tensor) -> Tensor:
    """H K H with H = I − 11ᵀ/n (double centring)."""
    return K - K.mean(dim=0, keepdim=True) - K.mean(dim=1, keepdim=True) + K.mean()


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum() / (torch.linalg.norm(a) * torch.linalg.norm(b))


def centered_kernel_alignment(K_a: Tensor, K_b: Tensor) -> Tensor:
    """Centred kernel alignment (Cortes, Mohri & Rostamizadeh 2012).

    ``⟨HK_aH, HK_bH⟩_F / (‖HK_aH‖_F ‖HK_bH‖_F)`` with ``H = I − 11ᵀ/n``; both ``(n, n)``.
    In [-1, 1]; 1 iff the centred kernels are proportional. NaN if either centred
    kernel is zero (a constant kernel).
    """
    fn = "centered_kernel_alignment"
    K_a, K_b = _square(fn, "K_a", K_a), _square(fn, "K_b", K_b)
    if K_a.shape != K_b.shape:
        raise ShapeError(f"{fn}: K_a {tuple(K_a.shape)} and K_b {tuple(K_b.shape)} differ in shape")
    return _cosine(_centre(K_a), _centre(K_b))


def kernel_target_alignment(K: Tensor, y: Tensor, *, centering: str = "double") -> Tensor:
    """Alignment of a Gram matrix ``K`` (n, n) with targets ``y`` (n,) or (n, k), e.g. one-hot labels.

    The one implementation in the package (studies log it as ``ntk/alignment``). With ``Y``
    the targets as columns (``Y Yᵀ`` the target kernel) and ``Y_c = Y − mean(Y)`` (column
    means, so ``Y_c Y_cᵀ = H Y Yᵀ H`` with ``H = I − 11ᵀ/n``):

    - ``"double"`` (Cortes, Mohri & Rostamizadeh 2012, the contract's ``ntk/alignment``):
      ``⟨HKH, Y_cY_cᵀ⟩_F / (‖HKH‖_F ‖Y_cY_cᵀ‖_F)``.
    - ``"one_sided"`` (the ``kalignment`` code of Kumar et al. 2024, digest c.4):
      ``y_cᵀ K_c y_c / (‖K_c‖_F ‖y_c‖²)`` with ``K_c`` the kernel with each column's mean
      removed, ``K − K.mean(axis=0)``. The numerator equals the double-centred one; only the
      normaliser differs. For (n, k) targets the numerator is ``tr(Y_cᵀ K_c Y_c)`` and
      ``‖y_c‖²`` becomes ``‖Y_c Y_cᵀ‖_F``.
    - ``"none"`` (Cristianini et al. 2002): ``⟨K, YYᵀ⟩_F / (‖K‖_F ‖YYᵀ‖_F)``.

    A 0-d tensor in [−1, 1]; NaN when a (centred) kernel or target vanishes. Integer targets
    are cast to ``K``'s dtype. Cost O(n² k).
    """
    fn = "kernel_target_alignment"
    K = _square(fn, "K", K)
    Y = _targets(fn, y, K.shape[0]).to(K.dtype)
    if centering == "double":
        Yc = Y - Y.mean(dim=0, keepdim=True)
        return _cosine(_centre(K), Yc @ Yc.T)
    if centering == "one_sided":
        Yc = Y - Y.mean(dim=0, keepdim=True)
        Kc = K - K.mean(dim=0, keepdim=True)
        return torch.trace(Yc.T @ Kc @ Yc) / (torch.linalg.norm(Kc) * torch.linalg.norm(Yc @ Yc.T))
    if centering == "none":
        return _cosine(K, Y @ Y.T)
    raise ConfigError(f"{fn}: centering={centering!r} is not one of ['double', 'one_sided', 'none']")


def kernel_distance(K_a: Tensor, K_b: Tensor) -> Tensor:
    """``1 − ⟨K_a, K_b⟩_F / (‖K_a‖_F ‖K_b‖_F)`` (Fort et al. 2020); any equal shapes.

    0 iff the kernels are positively proportional; scale-invariant.
    """
    fn = "kernel_distance"
    K_a, K_b = _as_tensor(fn, "K_a", K_a), _as_tensor(fn, "K_b", K_b)
    if K_a.shape != K_b.shape or K_a.numel() == 0:
        raise ShapeError(f"{fn}: K_a {tuple(K_a.shape)} and K_b {tuple(K_b.shape)} must be equal, non-empty shapes")
    return 1 - _cosine(K_a, K_b)


def relative_change(K_t: Tensor, K_0: Tensor) -> Tensor:
    """``‖K_t − K_0‖_F / ‖K_0‖_F``: how far the kernel moved from ``K_0``; any equal shapes."""
    fn = "relative_change"
    K_t, K_0 = _as_tensor(fn, "K_t", K_t), _as_tensor(fn, "K_0", K_0)
    if K_t.shape != K_0.shape or K_0.numel() == 0:
        raise ShapeError(f"{fn}: K_t {tuple(K_t.shape)} and K_0 {tuple(K_0.shape)} must be equal, non-empty shapes")
    return torch.linalg.norm(K_t - K_0) / torch.linalg.norm(K_0)


def top_eigenvalues(K: Tensor, count: int | None = None) -> Tensor:
    """The ``count`` largest eigenvalues of a symmetric ``(n, n)`` kernel, descending (all if None)."""
    fn = "top_eigenvalues"
    K = _square(fn, "K", K)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ConfigError(f"{fn}: count must be a positive int or None, got {count!r}")
    values = torch.linalg.eigvalsh((K + K.T) / 2).flip(0)
    return values if count is None else values[:count]


def spectrum_effective_rank(values: Tensor, *, method: str = "entropy") -> Tensor:
    """Effective rank of a non-negative spectrum ``values`` (m,): eigenvalues of a PSD kernel or
    singular values of a covariance (``telescope.measures.feature_effective_rank``).

    - ``"entropy"`` (Roy & Vetterli 2007): ``exp(−Σ p_i log p_i)``, ``p = λ / Σλ``.
    - ``"participation"``: ``(Σλ)² / Σλ²``.

    Both equal r for r equal non-zero values and lie in [1, m]; 0 for an all-zero spectrum.
    """
    fn = "spectrum_effective_rank"
    values = _as_tensor(fn, "values", values)
    if values.dim() != 1:
        raise ShapeError(f"{fn}: values must be a 1-d spectrum (m,), got shape {tuple(values.shape)}")
    if method not in ("entropy", "participation"):
        raise ConfigError(f"{fn}: method={method!r} is not one of ['entropy', 'participation']")
    total = values.sum()
    if not float(total) > 0.0:
        return torch.zeros((), dtype=values.dtype, device=values.device)
    if method == "participation":
        return total ** 2 / (values**2).sum()
    p = values / total
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


def effective_rank(K: Tensor, *, method: str = "entropy") -> Tensor:
    """Effective rank of a PSD ``(n, n)`` kernel from its eigenvalues ``λ`` (clipped at 0):
    :func:`spectrum_effective_rank` of them (``"participation"`` is ``tr(K)² / ‖K‖_F²``).

    In [1, n] (0 for a zero kernel).
    """
    fn = "effective_rank"
    K = _square(fn, "K", K)
    if method not in ("entropy", "participation"):
        raise ConfigError(f"{fn}: method={method!r} is not one of ['entropy', 'participation']")
    return spectrum_effective_rank(top_eigenvalues(K).clamp_min(0), method=method)


def kernel_weight_norms(K: Tensor) -> Tensor:
    """``‖k(x_i)‖₂`` per row: ``(n1,)`` for a kernel of shape ``(n1, n2)``, ``(n1, n2, k)``
    or ``(n1, n2, k, k)`` (the norm runs over everything but the first axis)."""
    fn = "kernel_weight_norms"
    K = _as_tensor(fn, "K", K)
    if K.dim() not in (2, 3, 4):
        raise ShapeError(f"{fn}: K must have shape (n1, n2), (n1, n2, k) or (n1, n2, k, k), got {tuple(K.shape)}")
    return torch.linalg.vector_norm(K.reshape(K.shape[0], -1), dim=1)
