"""The network's telescoping kernel weights k_t(x) and their norms ‖k_t(x)‖₂ (digest §6.1, §6.5).

In the telescoping model (Eq. 5) step t adds −γ_t Σ_i K_t(x, x_i) g_it to f(x), where for
mini-batch training with a batch-mean loss the weight of training point i is
k_t(x)_i = 1{i ∈ B_t}/|B_t| · K_t(x, x_i). The paper compares max_x ‖k_t(x)‖₂ on test and
on training points (its R, :func:`telescope.trees.max_weight_norm_ratio`) with the same
quantity of a gradient-boosted tree, whose kernel rows are bounded by 1.

# NOTE [network kernel weights]
Only the batch is non-zero, so ‖k_t(x)‖₂ = ‖K_t(x, x_B)‖₂ / |B_t| needs kernel rows against
the batch only. K_t is taken at θ_{t−1} (the parameters the step's gradients were computed
at). Two kernels are returned: the plain tangent kernel K(x, x_i) = ∇f(x)ᵀ∇f(x_i) and, with
Adam, the preconditioned kernel K^φ(x, x_i) = ∇f(x)ᵀ diag(1/φ_t) ∇f(x_i), with φ_t = √v̂_t + ε
the bias-corrected second moment after step t (:func:`adam_phi`); for SGD K^φ = K. The
learning rate γ_t is NOT included: with a constant γ it is a common factor of the numerator
and the denominator of R and cancels exactly (it would matter only under a schedule). Adam's
momentum mixing (the update uses m̂_t, an average of past gradients, not g_t) is not included
either: the weights describe the kernel the step's gradient enters through, not the realised
update (which :class:`telescope.lens.Lens` tracks).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from telescope.errors import ShapeError
from telescope.kernels.jacobians import jacobian_rows
from telescope.lens.smoother import adam_preconditioner


def batch_kernel_rows(model: nn.Module, params: Mapping[str, Tensor], x: Tensor, x_batch: Tensor,
                      phi: Tensor | None = None, *, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """Tangent-kernel rows against a batch: ``(K(x, x_B), K^φ(x, x_B))``, each ``(n, b)``.

    ``model`` has one scalar output per example (``model(x)`` of shape ``(n,)`` or ``(n, 1)``);
    ``params`` (``{name: tensor}``, e.g. θ_{t−1} saved before the step) are the parameters
    the Jacobians are taken at, in the order they are flattened; ``x`` is ``(n, d…)``,
    ``x_batch`` ``(b, d…)``; ``phi`` is ``(P,)``, flattened and concatenated like ``params``
    (P = their total size), or None for K^φ = K (the same tensor is then returned twice).
    Jacobian rows by :func:`telescope.kernels.jacobians.jacobian_rows`, ``chunk`` rows of x at
    a time: memory O((chunk + b) · P), time O(n · P · b). NOTE [network kernel weights].
    """
    n_params = sum(int(v.numel()) for v in params.values())
    if phi is not None and tuple(phi.shape) != (n_params,):
        raise ShapeError(f"batch_kernel_rows(phi=...): expected shape ({n_params},) (the parameters flattened "
                         f"and concatenated), got {tuple(phi.shape)}; pass adam_phi(optimizer, params)")
    if x.shape[1:] != x_batch.shape[1:]:
        raise ShapeError(f"batch_kernel_rows(x, x_batch): per-example shapes differ, {tuple(x.shape[1:])} vs "
                         f"{tuple(x_batch.shape[1:])}; pass points of the same kind")

    def flat(rows: Tensor) -> Tensor:
        j = jacobian_rows(model, dict(params), rows)
        if any(j[k].shape[1] != 1 for k in params):
            raise ShapeError(f"batch_kernel_rows(model): expected one output per example, got "
                             f"{j[next(iter(params))].shape[1]}; kernel weights here are for scalar regression")
        return torch.cat([j[k].reshape(rows.shape[0], -1) for k in params], dim=1)

    jb = flat(x_batch)                                               # (b, P)
    rhs = jb.T if phi is None else torch.cat([jb.T, (jb / phi).T], dim=1)
    out = torch.cat([flat(xc) @ rhs for xc in x.split(chunk)])
    b = x_batch.shape[0]
    return (out, out) if phi is None else (out[:, :b], out[:, b:])


def adam_phi(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> Tensor:
    """φ_t = √v̂_t + ε of every parameter after the optimizer's step t, ``(P,)``: flattened and
    concatenated in the order of ``params`` (amsgrad and parameter groups included, through
    :func:`telescope.lens.smoother.adam_preconditioner`). ``optimizer`` is Adam or AdamW."""
    params = list(params)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    return torch.cat([adam_preconditioner(optimizer, p, group_of[id(p)], p.dtype) for p in params])


def batch_kernel_weight_norms(model: nn.Module, params: Mapping[str, Tensor], points: Mapping[str, Tensor],
                        x_batch: Tensor, phi: Tensor | None = None, *, chunk: int = 2048
                        ) -> dict[str, tuple[Tensor, Tensor]]:
    """‖k_t(x)‖₂ = ‖K(x, x_B)‖₂ / |B| for every point of every named set.

    ``points``: ``{name: (n_name, d…)}``. Returns ``{name: (plain, preconditioned)}``, each
    ``(n_name,)`` in float64 (the norm, computed in the kernel's dtype, divided by |B| in
    float64), the second with K^φ (the first again when ``phi`` is None). Arguments as in
    :func:`batch_kernel_rows`. NOTE [network kernel weights].
    """
    nb = x_batch.shape[0]
    out = {}
    for name, x in points.items():
        k, k_phi = batch_kernel_rows(model, params, x, x_batch, phi, chunk=chunk)
        plain = k.norm(dim=1).double() / nb
        out[name] = (plain, plain if phi is None else k_phi.norm(dim=1).double() / nb)
    return out


class KernelWeightRecorder:
    """:func:`telescope.train.fit` hooks that measure the kernel weight norms at chosen steps.

    Pass the instance's :meth:`before_step` in ``before_step=[...]`` and the instance in
    ``callbacks=[...]``. At every step t in ``steps`` it keeps θ_{t−1} before the step and,
    after it, calls ``record(t, norms)`` with ``norms`` = :func:`batch_kernel_weight_norms` of the
    named ``points`` against the batch B_t (``x_train[B_t]``), with Adam's φ_t when
    ``precondition`` (the optimizer must then be Adam or AdamW). ``x_train``: ``(n, d…)``, the
    rows the batch indices of ``fit`` point into. One parameter copy and the Jacobians per
    recorded step; nothing at other steps. NOTE [network kernel weights].
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, x_train: Tensor,
                 points: Mapping[str, Tensor], steps: Iterable[int], *, precondition: bool,
                 record: Callable[[int, dict[str, tuple[Tensor, Tensor]]], None], chunk: int = 2048):
        self.model, self.optimizer, self.x_train, self.points = model, optimizer, x_train, dict(points)
        self.steps, self.precondition, self.record, self.chunk = set(steps), precondition, record, chunk
        self._idx: Tensor | None = None
        self._before: dict[str, Tensor] | None = None

    def before_step(self, step: int, idx: Tensor) -> None:
        self._idx = idx
        self._before = ({k: v.detach().clone() for k, v in self.model.named_parameters()}
                        if step in self.steps else None)

    def __call__(self, step: int, loss: float) -> None:
        if self._before is None:
            return
        phi = adam_phi(self.optimizer, self.model.parameters()) if self.precondition else None
        norms = batch_kernel_weight_norms(self.model, self._before, self.points, self.x_train[self._idx], phi,
                                    chunk=self.chunk)
        self._before = None
        self.record(step, norms)
