"""Adam's preconditioned sharpness: when the smoother's fixed-φ recursion stops damping its errors.

# NOTE [adam edge of stability]
# With Adam's preconditioner φ = √v̂ + ε held fixed (the paper's construction, NOTE
# [label-space state] in lens/smoother.py), the smoother's label-space recursion multiplies
# the batch residual every step by I − A with A = γ·a·J_B diag(1/φ) J_Bᵀ (a the loss scale,
# NOTE [loss scaling]), filtered through Adam's EMA momentum. Frozen, that recursion is
# stable only while λ_max(A) < 2(1 + β1)/(1 − β1) (= 38 for β1 = 0.9). After the training
# set is interpolated, Adam drives λ_max(A) up to that threshold and holds it there (the
# "adaptive edge of stability", Cohen et al. 2022), whatever γ: the recursion then amplifies
# the small f − f̃ mismatch it feeds back and p⁰ runs away (measured in docs/grokking.md).
# :func:`adam_sharpness` gives the ratio λ_max(A) / threshold so that a study can see the
# point coming instead of waiting for the residual self-check to fail (NOTE [smoother validity]
# in lens/smoother.py: the check decides validity; the ratio is reported beside it).
# NEAR_EDGE = 0.8: from a ratio of 0.8 on, the frozen recursion's slowest mode is damped by less
# than a fifth of its stable margin; issue 19 measured the run-away after the ratio had stayed
# at 0.8–0.98 (0.58 at step 3468 with a sane p⁰, 0.83 at 4550 just before the self-check failed).
"""

from __future__ import annotations

import numpy as np
import torch

from telescope.errors import ConfigError, ShapeError
from telescope.kernels.fastpath import no_fused_fastpath
from telescope.kernels.jacobians import detached_params, jacobian_rows
from telescope.lens.smoother import LOSSES, _loss_scale, adam_preconditioner


NEAR_EDGE = 0.8


def step_near_edge(steps, ratio, near: float = NEAR_EDGE) -> float:
    """First logged step from which the sharpness ratio (``adam_sharpness(...)["ratio"]`` per log
    point, NaN where not computed) stays at or above ``near`` at every later logged step; NaN if it
    never does (NOTE [adam edge of stability]). ``steps`` and ``ratio`` are (m,) arrays."""
    st = np.asarray(steps, dtype=float).reshape(-1)
    r = np.asarray(ratio, dtype=float).reshape(-1)
    if st.shape != r.shape:
        raise ShapeError(f"step_near_edge(steps=..., ratio=...): lengths differ, {st.size} and {r.size}")
    with np.errstate(invalid="ignore"):
        stays = np.flip(np.logical_and.accumulate(np.flip(r >= near)))
    hit = np.flatnonzero(stays)
    return float(st[hit[0]]) if hit.size else float("nan")


def adam_stability_threshold(beta1: float) -> float:
    """2(1 + β1)/(1 − β1): the largest eigenvalue of A for which Adam's EMA-momentum recursion
    r ← r − A m, m ← β1 m + (1 − β1) r is stable with A frozen (NOTE [adam edge of stability])."""
    if not 0.0 <= beta1 < 1.0:
        raise ConfigError(f"adam_stability_threshold(beta1={beta1}): β1 must lie in [0, 1)")
    return 2.0 * (1.0 + beta1) / (1.0 - beta1)


DENSE_ROWS = 2048    # |B|·k up to which A is formed densely (an eigvalsh of at most 2048² numbers)
LANCZOS_STEPS = 40  # Krylov dimension of the matrix-free path: λ_max converges first (tests: rel. 1e-8)


def adam_sharpness(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x_batch: torch.Tensor, *,
                   loss: str = "mse", seed: int = 0) -> dict[str, float]:
    """λ_max of A = γ·a·J_B diag(1/φ) J_Bᵀ on ``x_batch`` (|B| points, k outputs each: A is
    |B|k × |B|k) for an Adam/AdamW optimizer that has taken at least one step, with φ = √v̂ + ε read
    from its state (NOTE [adam edge of stability]).

    Returns ``{"sharpness": λ_max(A), "threshold": 2(1+β1)/(1−β1), "ratio": λ_max / threshold}``.
    Cost: up to |B|k = ``DENSE_ROWS``, the Jacobian on |B| points (|B|k × p, vmap(jacrev)) and an
    eigen-decomposition of A; beyond, matrix-free: ``LANCZOS_STEPS`` Lanczos steps, each one
    vector–Jacobian and one Jacobian–vector product on the batch (memory: a few p-vectors and
    ``LANCZOS_STEPS`` vectors of |B|k; ``seed`` draws the start vector). Call it at logged steps,
    not every step. ``loss`` is the training loss on a batch of this size ("mse", "half_mse" or
    "sum"; its scale a counts the k outputs, NOTE [loss scaling]).
    """
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        raise ConfigError(f"adam_sharpness(optimizer=...): expected torch.optim.Adam or AdamW, got "
                          f"{type(optimizer).__name__}")
    if loss not in LOSSES:
        raise ConfigError(f"adam_sharpness(loss={loss!r}): choose one of {', '.join(LOSSES)}")
    if not torch.is_tensor(x_batch) or x_batch.ndim < 1 or x_batch.shape[0] == 0:
        raise ShapeError(f"adam_sharpness(x_batch=...): expected a non-empty tensor (|B|, ...), got "
                         f"{getattr(x_batch, 'shape', type(x_batch).__name__)}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("adam_sharpness(model=...): the model has no trainable parameters")
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    weights, beta1 = {}, None
    for name, p in named:                                  # γ/φ per parameter, float64, shaped like p
        group = group_of.get(id(p))
        if group is None:
            raise ConfigError(f"adam_sharpness: parameter {name!r} is not in the optimizer")
        if "exp_avg_sq" not in optimizer.state.get(p, {}):
            raise ConfigError("adam_sharpness: the optimizer has not taken a step yet (no exp_avg_sq); "
                              "call it after optimizer.step()")
        beta1 = float(group["betas"][0])
        weights[name] = (float(group["lr"]) / adam_preconditioner(optimizer, p, group, torch.float64)).reshape(p.shape)
    with no_fused_fastpath(), torch.no_grad():
        k = model(x_batch[:1]).numel()
    n = x_batch.shape[0]
    scale = _loss_scale(loss, n, k)
    params = detached_params(model, [name for name, _ in named])
    with no_fused_fastpath():
        if n * k <= DENSE_ROWS:
            jac = jacobian_rows(model, params, x_batch)                # {name: (|B|, k, ...)}
            A = torch.zeros(n * k, n * k, dtype=torch.float64, device=x_batch.device)
            for name, _ in named:
                J = jac[name].reshape(n * k, -1).double()
                A += J @ (weights[name].reshape(-1)[:, None] * J.T)
            lam = float(torch.linalg.eigvalsh(A * scale)[-1])
        else:
            lam = _lanczos_max(_matrix_free_A(model, params, weights, x_batch, scale), n * k,
                               torch.device(x_batch.device), seed)
    threshold = adam_stability_threshold(beta1)
    return {"sharpness": lam, "threshold": threshold, "ratio": lam / threshold}


def _matrix_free_A(model, params: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], x: torch.Tensor,
                   scale: float):
    """v ↦ A v = scale · J diag(w) Jᵀ v for v of |B|k numbers (float64), by one vjp and one jvp."""
    def f(prm):
        return torch.func.functional_call(model, prm, (x,))

    out, pullback = torch.func.vjp(f, params)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        (g,) = pullback(v.reshape(out.shape).to(out.dtype))
        tangent = {name: (g[name].double() * weights[name]).to(params[name].dtype) for name in params}
        _, jv = torch.func.jvp(f, (params,), (tangent,))
        return scale * jv.reshape(-1).double()

    return matvec


def _lanczos_max(matvec, size: int, device: torch.device, seed: int) -> float:
    """Largest eigenvalue of a symmetric PSD operator of ``size`` by Lanczos with full
    reorthogonalisation (``LANCZOS_STEPS`` steps, fewer when the Krylov space closes)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(size, generator=gen, dtype=torch.float64).to(device)
    Q = [q / q.norm()]
    alphas, betas = [], []
    for _ in range(min(LANCZOS_STEPS, size)):
        w = matvec(Q[-1])
        alphas.append(float(w @ Q[-1]))
        basis = torch.stack(Q, 1)
        w = w - basis @ (basis.T @ w)
        w = w - basis @ (basis.T @ w)                      # twice: orthogonal to working precision
        b = float(w.norm())
        if b <= 1e-12 * max(abs(a) for a in alphas):
            break
        betas.append(b)
        Q.append(w / b)
    m = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(betas[:m - 1], dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(T)[-1])
