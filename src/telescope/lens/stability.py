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
# point coming instead of waiting for the residual self-check to fail.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, jacrev, vmap

from telescope.errors import ConfigError, ShapeError
from telescope.lens.smoother import LOSSES, _loss_scale


def adam_stability_threshold(beta1: float) -> float:
    """2(1 + β1)/(1 − β1): the largest eigenvalue of A for which Adam's EMA-momentum recursion
    r ← r − A m, m ← β1 m + (1 − β1) r is stable with A frozen (NOTE [adam edge of stability])."""
    if not 0.0 <= beta1 < 1.0:
        raise ConfigError(f"adam_stability_threshold(beta1={beta1}): β1 must lie in [0, 1)")
    return 2.0 * (1.0 + beta1) / (1.0 - beta1)


def adam_sharpness(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x_batch: torch.Tensor, *,
                   loss: str = "mse") -> dict[str, float]:
    """λ_max of A = γ·a·J_B diag(1/φ) J_Bᵀ on ``x_batch`` (|B| points) for an Adam/AdamW optimizer
    that has taken at least one step, with φ = √v̂ + ε read from its state (NOTE [adam edge of
    stability]).

    Returns ``{"sharpness": λ_max(A), "threshold": 2(1+β1)/(1−β1), "ratio": λ_max / threshold}``.
    Cost: the Jacobian of a scalar-output model on |B| points (|B| × p, vmap(jacrev)) and an
    eigen-decomposition of a |B| × |B| matrix; call it at logged steps, not every step.
    ``loss`` is the training loss on a batch of this size ("mse", "half_mse" or "sum").
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
    params = {n: p.detach() for n, p in named}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def f(ps, xi):
        return functional_call(model, (ps, buffers), (xi[None],)).reshape(-1)

    with torch.no_grad():
        out = f(params, x_batch[0])
    if out.numel() != 1:
        raise ShapeError(f"adam_sharpness(model=...): needs a scalar output per example, got {out.numel()}")
    jac = vmap(jacrev(lambda ps, xi: f(ps, xi)[0]), (None, 0))(params, x_batch)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    A = torch.zeros(x_batch.shape[0], x_batch.shape[0], dtype=torch.float64, device=x_batch.device)
    beta1 = None
    for name, p in named:
        group, state = group_of.get(id(p)), optimizer.state.get(p, {})
        if group is None:
            raise ConfigError(f"adam_sharpness: parameter {name!r} is not in the optimizer")
        if "exp_avg_sq" not in state:
            raise ConfigError("adam_sharpness: the optimizer has not taken a step yet (no exp_avg_sq); "
                              "call it after optimizer.step()")
        beta1, beta2 = group["betas"]
        step = float(state["step"])
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        phi = (v.double() / (1.0 - beta2 ** step)).sqrt() + group["eps"]
        J = jac[name].reshape(x_batch.shape[0], -1).double()
        A += J @ ((float(group["lr"]) / phi.reshape(-1))[:, None] * J.T)
    A *= _loss_scale(loss, x_batch.shape[0], 1)
    lam = float(torch.linalg.eigvalsh(A)[-1])
    threshold = adam_stability_threshold(float(beta1))
    return {"sharpness": lam, "threshold": threshold, "ratio": lam / threshold}
