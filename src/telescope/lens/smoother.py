"""The trained network as a smoother of the training labels, and its effective parameters.

For a squared loss the telescoping model is linear in the training labels,
f̃_t(x) = s_t(x)·y + c_t(x) (digest §4.2–4.3). :class:`SmootherSpec` declares the
training set and loss; passed to ``Lens(model, probes, smoother=spec)`` it builds a
:class:`SmootherTracker` that updates s and c after every optimizer step, on the
training inputs and on every probe set, for the optimizer actually used.
``lens.effective_parameters()`` then gives p^0 = (n/|I|) Σ_{x∈I} ‖s(x)‖² per split.

# NOTE [label-space state]
# Every quantity that is linear in the labels is held as one matrix with n·k + 1
# columns: columns 0..nk−1 multiply the (flattened) labels y, the last column is the
# constant part. A row r of R (tracked points × (nk+1)) is [s(x), c(x)], so
# f̃(x) ≈ R[x] @ [y, 1]; a p × (nk+1) matrix V stands for the parameter-space vector
# V @ [y, 1]. The training objective's gradient is then, with f replaced by f̃ in the
# residuals (that is the one approximation; it is exact for a model linear in its
# parameters),
#     −∇L ≈ G @ [y, 1],   G = a · J_B^T (Ê_B − R_B)            (p × (nk+1))
# with J_B the batch Jacobian (|B|k × p), Ê_B the batch's label selector with a zero
# constant column, R_B the batch rows of R and a the loss scale (NOTE [loss scaling]).
# Each optimizer maps G to the step Δ (Δθ ≈ Δ @ [y, 1]) exactly as it maps a gradient
# to a step (PyTorch semantics, hyperparameters read from its param_groups every step,
# Adam's preconditioner φ_t = √v̂_t + ε read from its state after the step and held
# fixed), carrying p × (nk+1) buffers where the optimizer carries p-vectors: momentum
# buffer / exp_avg ↔ M, and θ_{t−1} ↔ D (= D^S | D^C of the digest §4.3, corrected
# forms), needed when weight decay acts. Then R += J_all @ Δ over all tracked points.
# These are the digest's U^S/U^C/D^S/D^C recursions with γ_t folded into Δ.
#
# NOTE [loss scaling]
# The recursion must mirror the real update, so the scale a of −∇L = a Σ_{i∈B} J_i(y_i − f_i)
# comes from the declared loss: "mse" (mean over the batch and the k outputs of (f−y)²,
# torch's mse_loss) a = 2/(|B|k); "half_mse" a = 1/(|B|k) (the paper's ½(y−f)²
# averaged over the batch); "sum" a = 2.
#
# NOTE [multi-output smoother]
# With k > 1 outputs (e.g. one-hot targets) we keep the full (n·k) smoother: s(x) is a
# k × (n·k) block, every output of x weighted over every label of every training point.
# A per-output smoother (output j of x as a function of label column j only) is not
# exact: a gradient step on output j's residual moves every output through the shared
# parameters, so f̃ would not equal s·y + c even for a model linear in its parameters.
# The full form costs k² times the scalar state; it is exact, and for k independent
# copies of one scalar problem it reduces to S ⊗ I_k. p^0 is reported per output:
# p^0 = (n/|I|) Σ_{x∈I} ‖s(x)‖_F² / k, which equals the scalar p^0 in that case.
#
# NOTE [kernel shortcut]
# For plain SGD (no momentum, no weight decay) Δ = γ a J_B^T(Ê_B − R_B), so
# ΔR = a · K(all, B) (Ê_B − R_B) with kernel rows K(x, x_B) = J(x)·diag(γ)·J_B^T (the
# per-parameter learning rates of the param groups on the diagonal). No p × (nk+1)
# matrix is formed: cost 2·N·p·|B|k (kernel rows) + 2·N·|B|k·(nk+1) per step instead
# of 2·|B|k·p·(nk+1) + 2·N·p·(nk+1), and memory drops from p·(nk+1) to N·|B|k.
# benchmarks/smoother.py measures the speed-up; tests check it equals the general path.
#
# NOTE [sketch]
# The recursion is linear in the label vector it is fed, so nothing in it needs the
# label columns to be I_n: ``method="sketch"`` replaces them by the basis
# B = [P | y] (nk × (K+1)), P the K probe label vectors (Rademacher or Gaussian
# entries, E[P P^T]/K = I), plus the constant column as before. Ê_B becomes the batch
# rows of B, every p × (nk+1) buffer becomes p × (K+2), and the rows of R become
# [u_1(x) .. u_K(x), s(x)·y, c(x)] with u_k = s(x)·P[:, k]. c and s·y are kept exactly
# (so predictions and residuals work as for the exact path); ‖s(x)‖² = E[u_k(x)²] is
# estimated by (1/K) Σ_k u_k(x)², and p̂ = (n/|I|) Σ_{x∈I} (1/K) Σ_k u_k(x)² / k is
# the mean over k of K independent unbiased estimates p̂_k, so its standard error is
# std_k(p̂_k)/√K. ``probes="identity"`` uses P = √(nk)·I (K = nk): then
# (1/K) Σ_k u_k² = ‖s(x)‖² exactly and p̂ = p⁰ (a test hook; standard error reported 0).
# Cost: the exact path's with L = nk+1 replaced by K+2; the derivative information of the
# model (NOTE [structured products], lens/products.py) costs the same for both.
#
# NOTE [Jacobian products]
# Every product with the model's Jacobian (J_Bᵀ E for G, J_all Δ for ΔR, J_all dθ for the
# smoother's own f̃, the kernel rows) goes through lens/products.py: nn.Linear layers in
# closed form from their captured activations and output gradients, vmap(jacrev) rows for
# any other parameter. Forming J by vmap(jacrev) dominated the sketch's step (its products
# are small) and capped its speed-up over the exact path near 7× at n = 1000; the closed
# form costs one forward and k backward passes per chunk. ``SmootherSpec(jacobian_method=
# "jacrev")`` uses rows for every parameter: the reference the tests and benchmarks/smoother.py
# compare against (:class:`~telescope.lens.products.JacobianMethod`).
#
# NOTE [optimizer rules]
# Each optimizer family maps the gradient G (p × L) to the step Δ by one function of ``RULES``,
# applied to a *segment*: a run of consecutive parameters of the flat p-vector that share a param
# group and a step count (usually every parameter: one segment, a handful of elementwise ops on
# the whole p × L buffers instead of a loop over layers). Hyperparameters are read from the param
# groups as Python numbers every step (schedules act); step counts are the smoother's own, equal to
# the optimizer's because the smoother sees every step from the first (checked at the first step);
# Adam's second moments are gathered into one flat p-vector with one foreach copy. Nothing in a
# step reads a tensor back to the host (NOTE [fused step]). A family is found by exact type for
# torch.optim.SGD, isinstance for Adam/AdamW, or a class attribute ``smoother_rule`` naming a rule
# (telescope.train.optim.EMAMomentumSGD sets "ema"), so the math core imports no optimizer module.
#
# NOTE [fused step]
# The step is launch-bound on a GPU (issue 16): its cost is the number of operations it dispatches
# and the host syncs it waits for, not its arithmetic. So: the lens keeps θ_{t−1} and Δθ in flat
# p-vectors with per-parameter views (one foreach copy in, one subtraction for Δθ); the batch
# indices are range-checked on the host before the optimizer steps (CPU indices: no device sync;
# indices on a device cost one sync, so pass CPU indices as telescope.train.fit does); the batch
# rows of Ê_B − R_B come from two index_selects; hyperparameters are Python numbers (NOTE
# [optimizer rules]); views of the persistent buffers are made once; metrics (p⁰, residuals) are
# computed only when asked. When every parameter has closed-form products (NOTE [structured
# products]) a side costs activations-sized memory, so one forward and k backward passes capture
# every tracked point at once (up to _CAPTURE_BYTES), and products on that side run in chunks whose
# temporaries stay near _TEMP_BYTES. The batch keeps its own capture: gathering its rows from the
# capture of every point would save one more (~19 operations of 256 in benchmarks/lens_ops.py),
# but a forward pass over another number of rows rounds differently in float32, and the studies'
# metrics would move at that level (1.8e-9 relative in grokking-control's p⁰). benchmarks/lens_ops.py counts the operations and syncs
# per step with torch.profiler on the CPU; docs/smoother.md has the counts.
#
# NOTE [smoother validity]
# p⁰ is an account of the network only while f̃ = s·y + c holds for the smoother it is read
# from. The smoother's one approximation (NOTE [label-space state]) is f̃ in place of f in the
# residuals, so its self-check |s·y + c − f̃| stays of the order of the telescoping error
# |f − f̃| while the recursion damps what it feeds back; when the recursion stops damping (Adam
# at its edge of stability, NOTE [adam edge of stability] in lens/stability.py) the self-check
# grows geometrically, by orders of magnitude within a few hundred steps (issue 19: 0.014 at
# step 4550, 1.02 at 5971, 631 at 10281, with |f − f̃| near 0.005–0.01 throughout). The rule,
# per split and log point (means over the split's points):
#     valid  ⇔  residual ≤ max(3·|f − f̃|, 0.02·(max y − min y))  and both are finite.
# Factor 3: while the recursion is stable the measured ratio stays below 3 (issue 19's table:
# 0.0139 against 0.0050 at step 4550, just before the run-away; test residual over test |f − f̃|
# at most 0.60 and 1.74 on the tiny grokking-mnist and grokking-control presets with 2 seeds). Where
# the check fails fast (issue 19's exact run) the factor hardly matters; where it fails slowly it is
# the floor that decides: in a quick-preset grokking-mnist run (sketch, 8000 steps) the test residual
# grows 0.0027 → 0.053 from step 1246 to 8000 while |f − f̃| stays near 0.0017, and any factor from
# 1.5 to 10 gives the same first failing step (4304, where the residual passes 0.02); 30 never fires. Floor 0.02 of the
# label range (0.02 for {0, 1} labels): below it neither number says anything about the other
# (both are ~1e-16 on a model linear in its parameters, ~1e-4 early in training) and an error of
# 2 % of the label range changes no prediction that matters (the decision margin of {0, 1}
# labels is 0.5). The rule is the studies' former ``step_unreliable`` rule (residual > 3·|f − f̃|
# and > 0.02, labels {0, 1}) made label-scale aware; a NaN or inf now counts as invalid.
# It uses no optimizer state, so it holds for every optimizer; for Adam, the preconditioned
# sharpness ratio (lens/stability.py, logged by the grokking studies as ``adam/sharpness_ratio``)
# is the early warning that comes before the check fails, reported beside it, not folded in.
# Cost: one forward pass over the tracked points and the residuals, computed when asked
# (``metrics()``, ``validity()``, ``Lens.effective_parameters()``), never in the step: the
# step stays free of host syncs (NOTE [fused step]). ``smoother/valid`` (1.0 / 0.0) is logged
# beside ``smoother/p_eff``; :func:`last_valid_step` turns a run's flags into the step up to
# which p⁰ can be read.
"""

from __future__ import annotations

import enum
import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from telescope.errors import ConfigError, ShapeError, UnsupportedModelError
from telescope.lens.products import JacobianMethod, JacobianProducts, Prepared, Side
from telescope.lens.recorder import check_placement

log = logging.getLogger(__name__)


class Method(str, enum.Enum):
    """What the smoother keeps of s(x) (``SmootherSpec(method=...)``; strings accepted).

    Costs per step with N tracked points (train + probes), n training points, k outputs, p
    parameters, batch |B|: products with the Jacobian of about 2·(|B| + N)·k·p·L flops, state
    N·k·L + (1 to 3)·p·L numbers, where L is the number of label columns below. The derivative
    information of the model (one forward and k backward passes per chunk for nn.Linear layers,
    NOTE [Jacobian products]) costs the same for both.

    ``EXACT``
        s(x) itself: L = nk + 1. p⁰ without estimation error. Pick it while p·(nk+1) numbers fit
        in memory (n up to a few thousand for small networks) and a step's 2·(|B|+N)·k·p·(nk+1)
        flops are affordable.
    ``SKETCH``
        K random projections u_j(x) = s(x)·r_j plus s(x)·y and c(x): L = K + 2 (NOTE [sketch]),
        about nk/K times less memory and arithmetic; p̂ is unbiased with standard error
        std_j(p̂_j)/√K (9–12 % at K = 32 in docs/smoother.md). Pick it for large n, or when the step
        must stay close to a plain step's cost and a few percent of error on p⁰ is acceptable.
    """

    EXACT = "exact"
    SKETCH = "sketch"

    def __str__(self) -> str:
        return self.value


class Path(str, enum.Enum):
    """How the smoother turns a batch gradient into its update (``SmootherSpec(path=...)``).

    ``GENERAL``
        The p × L update matrices, mirroring the optimizer step by step (NOTE [label-space state],
        NOTE [optimizer rules]): any supported optimizer. Memory 1 to 3 buffers of p·L numbers
        (step; momentum or Adam's first moment; θ with weight decay); time about
        2·|B|k·p·L + 2·N·k·p·L flops per step.
    ``KERNEL``
        Plain SGD only (no momentum, no weight decay): kernel rows K(x, x_B), no p × L buffer
        (NOTE [kernel shortcut]). Time 2·N·p·|B|k + 2·N·|B|k·L flops, memory N·|B|k·k numbers.
        Faster than GENERAL whenever |B|k < L (22.9× in benchmarks/smoother.py).
    ``AUTO``
        KERNEL when the optimizer allows it, else GENERAL: both are exact, and the shortcut is
        never slower where it applies.
    """

    AUTO = "auto"
    GENERAL = "general"
    KERNEL = "kernel"

    def __str__(self) -> str:
        return self.value


VALID_FACTOR = 3.0      # NOTE [smoother validity]: residual ≤ 3·|f − f̃| ...
VALID_FLOOR = 0.02      # ... or ≤ 0.02 of the label range


def self_check_valid(residual: Any, telescope_err: Any, label_range: float = 1.0) -> np.ndarray:
    """NOTE [smoother validity]: residual ≤ max(3·|f − f̃|, 0.02·label_range), both finite.

    ``residual`` and ``telescope_err`` are floats or arrays of the same shape (mean |s·y + c − f̃|
    and mean |f − f̃| over a split, one entry per log point); ``label_range`` is max y − min y of
    the training targets (1 for {0, 1} labels). Returns a bool array of that shape (0-d for floats).
    """
    r = np.asarray(residual, dtype=float)
    e = np.asarray(telescope_err, dtype=float)
    if r.shape != e.shape:
        raise ShapeError(f"self_check_valid(residual=..., telescope_err=...): shapes differ, {r.shape} and {e.shape}; "
                         "give one value of each per log point")
    if not (isinstance(label_range, numbers.Real) and math.isfinite(label_range) and label_range >= 0):
        raise ConfigError(f"self_check_valid(label_range={label_range!r}): give max y − min y of the training "
                          "targets, a finite number ≥ 0")
    with np.errstate(invalid="ignore"):
        return np.isfinite(r) & np.isfinite(e) & (r <= np.maximum(VALID_FACTOR * e, VALID_FLOOR * label_range))


def last_valid_step(steps: Any, valid: Any) -> float:
    """The last logged step before the first invalid one (NOTE [smoother validity]): p⁰ can be read
    at every logged step up to it. ``steps`` (m,) increasing, ``valid`` (m,) bools or 1.0/0.0
    (a NaN flag counts as invalid). The last step when every flag is valid; NaN when the first is not
    (or m = 0)."""
    st = np.asarray(steps, dtype=float).reshape(-1)
    ok = np.asarray(valid, dtype=float).reshape(-1)
    if st.shape != ok.shape:
        raise ShapeError(f"last_valid_step(steps=..., valid=...): lengths differ, {st.size} and {ok.size}")
    bad = np.flatnonzero(~(ok == 1.0))
    if bad.size == 0:
        return float(st[-1]) if st.size else float("nan")
    return float(st[bad[0] - 1]) if bad[0] > 0 else float("nan")


def label_range(y: torch.Tensor) -> float:
    """max y − min y of training targets (the scale of NOTE [smoother validity]'s floor); 1.0 for
    constant targets. One host sync: call it once, not in a step."""
    if y.numel() == 0:
        return 1.0
    lo, hi = torch.aminmax(y.detach().reshape(-1).double())
    span = float(hi - lo)
    return span if span > 0 else 1.0


LOSSES = ("mse", "half_mse", "sum")
PATHS = tuple(p.value for p in Path)
METHODS = tuple(m.value for m in Method)
DISTRIBUTIONS = ("rademacher", "gaussian")


def _choice(kind: type[enum.Enum], value: Any, where: str) -> Any:
    """``kind(value)`` or a ConfigError naming ``where`` (the call and the value received) and the choices."""
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{where}: choose one of {', '.join(m.value for m in kind)}") from None


def __getattr__(name: str):
    # EMAMomentumSGD moved to telescope.train.optim (issue 16); old imports still resolve
    if name == "EMAMomentumSGD":
        from telescope.train.optim import EMAMomentumSGD

        return EMAMomentumSGD
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, eq=False)          # holds tensors: compare specs by identity
class SmootherSpec:
    """What the smoother needs: the training set and the loss it is trained with.

    Parameters
    ----------
    x_train : Tensor (n, *input_shape)
        The training inputs; ``lens.step(optimizer, batch=idx)`` indexes them.
    y_train : Tensor (n,) or (n, k)
        The training targets, shaped like the model's output on ``x_train``.
    loss : "mse" | "half_mse" | "sum"
        The user's training loss on a batch (NOTE [loss scaling]).
    dtype : "float64" | "float32"
        dtype of the smoother state (s, c and the p × (nk+1) buffers). float64 keeps
        10^5-step recursions free of round-off; float32 halves memory and is faster on GPUs.
    path : :class:`Path` or "auto" | "general" | "kernel"
        ``"kernel"``: the kernel shortcut (plain SGD only, NOTE [kernel shortcut]);
        ``"general"``: the p × (nk+1) update matrices (any supported optimizer);
        ``"auto"``: the shortcut when the optimizer allows it, else the general path.
    memory_budget_gb : float
        Refuse (ConfigError) before allocating state larger than this many GB (1e9 bytes);
        see :meth:`memory_estimate`.
    chunk_size : int
        Tracked points per Jacobian chunk (memory: chunk_size · k · p entries).
    method : :class:`Method` or "exact" | "sketch"
        ``"exact"`` keeps s(x) itself (nk label columns); ``"sketch"`` keeps K random
        projections u_k(x) = s(x)·r_k and estimates ‖s(x)‖² and p^0 from them, with a
        standard error (NOTE [sketch]): state p × (K+2) instead of p × (nk+1).
    probes : int | "identity"
        K, the number of probe label vectors (sketch only; ≥ 2 for a standard error);
        ``"identity"`` uses the nk scaled unit vectors and reproduces the exact p^0.
    seed : int
        Seed of the probe vectors (sketch only).
    distribution : "rademacher" | "gaussian"
        Entries of the probe vectors (sketch only); Rademacher has the lower variance.
    jacobian_method : :class:`~telescope.lens.products.JacobianMethod` or "auto" | "jacrev"
        How products with the model's Jacobian are formed (NOTE [Jacobian products]): ``"auto"``
        (closed form for nn.Linear layers) or ``"jacrev"`` (vmap(jacrev) rows, the reference).

    Supported optimizers: ``torch.optim.SGD`` (momentum, dampening, nesterov, coupled
    weight decay), ``Adam``/``AdamW`` (coupled/decoupled weight decay, amsgrad) and
    :class:`EMAMomentumSGD`; learning-rate schedules and warmup are read each step.
    Cost per step (general path), N tracked points, L = nk + 1 (K + 2 for the sketch):
    derivative information of the batch and of all tracked points (for nn.Linear layers one
    forward and k backward passes per chunk, otherwise per-example Jacobians, about |B|+N
    vmapped backward passes; NOTE [Jacobian products]), at most 2·|B|k·p·L + 2·Nk·p·L flops
    of dense products and a few elementwise passes over p × L buffers.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    loss: str = "mse"
    dtype: str = "float64"
    path: str = "auto"
    memory_budget_gb: float = 4.0
    chunk_size: int = 512
    method: str = "exact"
    probes: Any = 32
    seed: int = 0
    distribution: str = "rademacher"
    jacobian_method: Any = JacobianMethod.AUTO

    def __post_init__(self):
        if not torch.is_tensor(self.x_train) or self.x_train.ndim < 1 or self.x_train.shape[0] == 0:
            raise ShapeError(f"SmootherSpec(x_train=...): expected a non-empty tensor (n, ...), got "
                             f"{getattr(self.x_train, 'shape', type(self.x_train).__name__)}")
        if not torch.is_tensor(self.y_train) or self.y_train.ndim not in (1, 2) \
                or self.y_train.shape[0] != self.x_train.shape[0]:
            raise ShapeError(f"SmootherSpec(y_train=...): expected targets (n,) or (n, k) with n = "
                             f"{self.x_train.shape[0]}, got {getattr(self.y_train, 'shape', type(self.y_train).__name__)}")
        if not self.y_train.is_floating_point():
            raise ShapeError(f"SmootherSpec(y_train=...): targets must be floating point (squared loss), got "
                             f"{self.y_train.dtype}; convert with .float() or .double()")
        if self.loss not in LOSSES:
            raise ConfigError(f"SmootherSpec(loss={self.loss!r}): choose one of {', '.join(LOSSES)} "
                              "(the smoother exists for squared losses only)")
        if self.dtype not in ("float64", "float32"):
            raise ConfigError(f"SmootherSpec(dtype={self.dtype!r}): choose 'float64' or 'float32'")
        object.__setattr__(self, "path", _choice(Path, self.path, f"SmootherSpec(path={self.path!r})"))
        if not self.memory_budget_gb > 0:
            raise ConfigError(f"SmootherSpec(memory_budget_gb={self.memory_budget_gb}): give a positive budget")
        if int(self.chunk_size) < 1:
            raise ConfigError(f"SmootherSpec(chunk_size={self.chunk_size}): give a positive chunk size")
        object.__setattr__(self, "method", _choice(Method, self.method, f"SmootherSpec(method={self.method!r})"))
        object.__setattr__(self, "jacobian_method",
                           _choice(JacobianMethod, self.jacobian_method,
                                   f"SmootherSpec(jacobian_method={self.jacobian_method!r})"))
        if self.probes != "identity" and (isinstance(self.probes, bool) or self.probes is None
                                          or not isinstance(self.probes, numbers.Integral) or self.probes < 1):
            raise ConfigError(f"SmootherSpec(probes={self.probes!r}): give a positive int K (number of probe "
                              "vectors) or 'identity'")
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"SmootherSpec(distribution={self.distribution!r}): choose one of "
                              f"{', '.join(DISTRIBUTIONS)}")

    def label_columns(self, k: int = 1) -> int:
        """Columns of R and of the p × · buffers: nk + 1 (exact) or K + 2 (sketch: K probes, y, 1)."""
        if self.method == "exact":
            return self.n * k + 1
        K = self.n * k if self.probes == "identity" else int(self.probes)
        return K + 2

    @property
    def n(self) -> int:
        return int(self.x_train.shape[0])

    def memory_estimate(self, n_points: int, n_params: int, k: int = 1, *, buffers: int = 2,
                        batch_size: int | None = None, path: str = "general") -> int:
        """Bytes of smoother state for ``n_points`` tracked points (train + probes), p =
        ``n_params``, k outputs and ``buffers`` p × (nk+1) matrices (p × (K+2) for the sketch, and
        the same substitution in the formula below) (general path: the step
        Δ, plus one for momentum/Adam and one for weight decay; the kernel path has none).

        = itemsize · [N k (nk+1)  (s, c)  +  buffers · p (nk+1)  +  chunk·k·p + |B|k·p (Jacobians)
                      + N k · |B| k  (kernel rows, kernel path)]
        """
        item = 8 if self.dtype == "float64" else 4
        L = self.label_columns(k)
        b = self.n if batch_size is None else batch_size
        total = n_points * k * L + min(self.chunk_size, n_points) * k * n_params + b * k * n_params
        total += buffers * n_params * L if path == "general" else n_points * k * b * k
        return int(item * total)

    def build(self, lens) -> "SmootherTracker":
        return SmootherTracker(self, lens)


def adam_preconditioner(optimizer, param: torch.Tensor, group: Mapping[str, Any],
                        dtype: torch.dtype) -> torch.Tensor:
    """φ = √v̂ + ε of ``param`` (flattened, ``dtype``) from an Adam/AdamW state after its step:
    v̂ = v/(1 − β2^t), v the ``exp_avg_sq`` (``max_exp_avg_sq`` with amsgrad)."""
    st = optimizer.state[param]
    v = st["max_exp_avg_sq"] if group.get("amsgrad") else st["exp_avg_sq"]
    return precondition_(torch.sqrt(v.detach().reshape(-1).to(dtype)), group, float(st["step"]), rooted=True)


def precondition_(v: torch.Tensor, group: Mapping[str, Any], step: float, *, rooted: bool = False) -> torch.Tensor:
    """In place: Adam's second moment v (any shape, a tensor the caller owns) becomes
    φ = √v / √(1 − β2^step) + ε with β2 and ε of param group ``group``; ``rooted``: v holds √v already.
    The one formula of φ for the smoother's rule and :func:`adam_preconditioner`."""
    if not rooted:
        v.sqrt_()
    return v.div_(math.sqrt(1 - float(group["betas"][1]) ** step)).add_(float(group["eps"]))


_TEMP_BYTES = 1 << 28      # temporaries of one product call on a side captured at once (NOTE [fused step])
_CAPTURE_BYTES = 1 << 30   # largest side captured at once; beyond it, chunks of spec.chunk_size points


def _loss_scale(loss: str, batch: int, k: int) -> float:
    """a in −∇L = a Σ_{i∈B} J_i (y_i − f_i) (NOTE [loss scaling])."""
    if loss == "mse":
        return 2.0 / (batch * k)
    if loss == "half_mse":
        return 1.0 / (batch * k)
    return 2.0


@dataclass
class _Segment:
    """Consecutive parameters [lo, hi) of the flat p-vector that one rule call updates
    (NOTE [optimizer rules]); ``group`` None: the optimizer skipped them this step (grad None)."""

    lo: int
    hi: int
    group: dict | None
    step: int


def _sgd_rule(tracker: "SmootherTracker", seg: _Segment, g, m, th, phi) -> None:
    """torch.optim.SGD: coupled weight decay, momentum with dampening, nesterov."""
    grp = seg.group
    lr, wd = float(grp["lr"]), float(grp.get("weight_decay", 0.0))
    mu, damp = float(grp["momentum"]), float(grp["dampening"])
    if wd:
        g.add_(th, alpha=wd)
    if mu:
        if seg.step == 1:
            m.copy_(g)
        else:
            m.mul_(mu).add_(g, alpha=1 - damp)
        if grp["nesterov"]:
            g.add_(m, alpha=mu)
        else:
            g.copy_(m)
    g.mul_(-lr)


def _ema_rule(tracker: "SmootherTracker", seg: _Segment, g, m, th, phi) -> None:
    """telescope.train.optim.EMAMomentumSGD: bias-corrected EMA momentum, coupled weight decay."""
    grp = seg.group
    lr, wd, beta = float(grp["lr"]), float(grp.get("weight_decay", 0.0)), float(grp["beta"])
    if wd:
        g.add_(th, alpha=wd)
    m.mul_(beta).add_(g, alpha=1 - beta)
    torch.mul(m, -lr / (1 - beta ** seg.step), out=g)


def _adam_rule(tracker: "SmootherTracker", seg: _Segment, g, m, th, phi) -> None:
    """Adam/AdamW with φ = √v̂ + ε held fixed (``phi`` holds v, gathered from the optimizer's state);
    coupled (Adam) or decoupled (AdamW, ``decoupled_weight_decay``) weight decay."""
    grp = seg.group
    lr, wd = float(grp["lr"]), float(grp.get("weight_decay", 0.0))
    beta1 = float(grp["betas"][0])
    decoupled = bool(grp.get("decoupled_weight_decay", False)) or tracker.decoupled
    precondition_(phi, grp, seg.step)                                             # v -> φ, in place
    if wd and not decoupled:
        g.add_(th, alpha=wd)
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    torch.div(m, phi, out=g)                                                  # phi: (rows, 1)
    g.mul_(-lr / (1 - beta1 ** seg.step))
    if wd and decoupled:
        g.add_(th, alpha=-lr * wd)


RULES: dict[str, Callable[..., None]] = {"sgd": _sgd_rule, "ema": _ema_rule, "adam": _adam_rule}
"""Optimizer family -> the function mapping its gradient rows to step rows (NOTE [optimizer rules])."""


class SmootherTracker:
    """Follows training through the lens and keeps R = [s | c] for every tracked point.

    Rows: the n training inputs first, then every probe set of the lens in order, each
    point contributing k rows (output j of point i is row i·k + j). Columns: the nk
    labels then the constant (NOTE [label-space state]). Built by ``SmootherSpec.build``.

    ``jacobian_method`` (from ``SmootherSpec(jacobian_method=...)``; assigning it before the
    first step is still accepted) selects how Jacobian products are formed (NOTE [Jacobian products]).
    """

    def __init__(self, spec: SmootherSpec, lens):
        self.spec = spec
        self.lens = lens
        self.dtype = torch.float64 if spec.dtype == "float64" else torch.float32
        self.device = lens.device
        x = spec.x_train
        check_placement("SmootherSpec(x_train=...)", x, lens.device, lens.dtype)
        probe_x = lens.probe_inputs
        if tuple(x.shape[1:]) != tuple(probe_x.shape[1:]):
            raise ShapeError(f"SmootherSpec(x_train=...): input shape {tuple(x.shape[1:])} differs from the "
                             f"probes' {tuple(probe_x.shape[1:])}")
        if "train" in lens.probe_names():
            raise ConfigError("Lens(smoother=...): a probe set is called 'train', which the smoother reports for "
                              "the training inputs; rename that probe set (e.g. 'train_probe')")
        self.names = list(lens.parameter_names)
        self.x_train = x.detach()
        self.n = spec.n
        f0_train = lens.forward(lens.params0, self.x_train)
        if f0_train.ndim == 1:
            self.k = 1
        elif f0_train.ndim == 2:
            self.k = int(f0_train.shape[1])
        else:
            raise ShapeError(f"Lens(smoother=...): the model's output on x_train has shape {tuple(f0_train.shape)}; "
                             "the smoother needs (n,) or (n, k)")
        if tuple(spec.y_train.shape) != tuple(f0_train.shape) and not (
                self.k == 1 and spec.y_train.ndim == 2 and spec.y_train.shape[1] == 1):
            raise ShapeError(f"SmootherSpec(y_train=...): targets {tuple(spec.y_train.shape)} do not match the "
                             f"model's output {tuple(f0_train.shape)} on x_train")
        y_flat = spec.y_train.detach().reshape(-1).to(self.device, self.dtype)
        self.label_range = label_range(y_flat)          # NOTE [smoother validity]
        one = torch.ones(1, device=self.device, dtype=self.dtype)
        self.method = spec.method
        self.L = spec.label_columns(self.k)
        self.basis: torch.Tensor | None = None     # label columns' values on the nk labels (None: I_nk)
        self._basis_aug: torch.Tensor | None = None
        if self.method == Method.EXACT:
            self.y_aug = torch.cat([y_flat, one])
            self.n_probes = 0
        else:
            self.n_probes = self.L - 2
            self.basis = torch.cat([self._probe_matrix(), y_flat[:, None]], 1)        # (nk, K+1)
            self._basis_aug = torch.cat([self.basis, torch.zeros_like(y_flat)[:, None]], 1)   # (nk, L): Ê's rows
            self.y_aug = torch.cat([torch.zeros(self.n_probes, device=self.device, dtype=self.dtype), one, one])
        self.x_all = torch.cat([self.x_train, probe_x])
        self.n_points = int(self.x_all.shape[0])
        self.sizes = [int(lens.params0[nm].numel()) for nm in self.names]
        self.p = sum(self.sizes)
        self.offsets = [0]
        for s in self.sizes:
            self.offsets.append(self.offsets[-1] + s)
        self.splits: dict[str, slice] = {"train": slice(0, self.n)}
        for name in lens.probe_names():
            sl = lens.probe_slice(name)
            self.splits[name] = slice(self.n + sl.start, self.n + sl.stop)
        need = spec.memory_estimate(self.n_points, self.p, self.k, buffers=1, batch_size=1)
        self._check_budget(need, "s and c with one p × (nk+1) buffer")
        f0_all = torch.cat([f0_train.reshape(-1), lens.f0.reshape(-1)]).to(self.dtype)
        self.R = torch.zeros(self.n_points * self.k, self.L, device=self.device, dtype=self.dtype)
        self.R[:, -1] = f0_all
        self.f_tilde = f0_all[:self.n * self.k].clone()   # f̃ on the training points (n·k,), for residuals
        self.steps = 0
        self.path: Path | None = None          # decided at the first step, from the optimizer
        self.kind: str | None = None           # key of RULES
        self.decoupled = False                 # AdamW
        self.buffers: dict[str, torch.Tensor] = {}
        self.block_steps = [0] * len(self.names)
        self._jacobian_method = spec.jacobian_method
        self.products: JacobianProducts | None = None
        self._idx: torch.Tensor | None = None  # the batch checked by before_step, used by the next after_step
        self._views: dict[tuple[str, int, int], torch.Tensor] = {}
        self._phi_views: list[torch.Tensor] = []
        self._aranges: dict[int, torch.Tensor] = {}
        self._prepared: dict[str, Prepared] = {}   # the step buffer G and Δθ, with cached views
        self._one = torch.ones((), device=self.device, dtype=self.dtype)

    @property
    def jacobian_method(self) -> JacobianMethod:
        return self._jacobian_method

    @jacobian_method.setter
    def jacobian_method(self, value) -> None:
        if self.products is not None:
            raise ConfigError("SmootherTracker.jacobian_method: set it before the first step (or pass "
                              "SmootherSpec(jacobian_method=...))")
        self._jacobian_method = _choice(JacobianMethod, value, f"SmootherTracker.jacobian_method = {value!r}")

    # ------------------------------------------------------------------ setup
    def _probe_matrix(self) -> torch.Tensor:
        """P (nk, K): the probe label vectors, drawn on the CPU from ``spec.seed`` (device-independent)."""
        nk = self.n * self.k
        if self.spec.probes == "identity":
            return math.sqrt(nk) * torch.eye(nk, device=self.device, dtype=self.dtype)
        gen = torch.Generator().manual_seed(int(self.spec.seed))
        K = int(self.spec.probes)
        if self.spec.distribution == "gaussian":
            P = torch.randn(nk, K, generator=gen, dtype=torch.float64)
        else:
            P = torch.randint(0, 2, (nk, K), generator=gen).to(torch.float64).mul_(2).sub_(1)
        return P.to(self.device, self.dtype)

    def _check_budget(self, need: int, what: str) -> None:
        budget = self.spec.memory_budget_gb * 1e9
        if need > budget:
            raise ConfigError(
                f"SmootherSpec(memory_budget_gb={self.spec.memory_budget_gb}): the smoother needs about "
                f"{need / 1e9:.2f} GB ({what}; N = {self.n_points} tracked points, n = {self.n}, k = {self.k}, "
                f"p = {self.p}, dtype {self.spec.dtype}, method {self.spec.method}). Raise memory_budget_gb, use "
                "dtype='float32', method='sketch', fewer probe points or training points, or a smaller model.")

    def _classify(self, optimizer) -> str:
        """The key of ``RULES`` for ``optimizer`` (NOTE [optimizer rules]), or UnsupportedModelError."""
        rule = getattr(type(optimizer), "smoother_rule", None)
        if rule is not None:
            if rule not in RULES:
                raise UnsupportedModelError(f"SmootherTracker: {type(optimizer).__name__}.smoother_rule = {rule!r} "
                                            f"names no rule; known: {', '.join(RULES)}")
            return rule
        if isinstance(optimizer, torch.optim.Adam):          # AdamW subclasses Adam
            for g in optimizer.param_groups:
                if g.get("maximize"):
                    raise UnsupportedModelError("SmootherTracker: Adam(maximize=True) is not supported")
            return "adam"
        if type(optimizer) is torch.optim.SGD:
            for g in optimizer.param_groups:
                if g.get("maximize"):
                    raise UnsupportedModelError("SmootherTracker: SGD(maximize=True) is not supported")
            return "sgd"
        raise UnsupportedModelError(
            f"SmootherTracker: optimizer {type(optimizer).__name__} is not supported; the smoother mirrors "
            "torch.optim.SGD (momentum, dampening, nesterov, weight decay), Adam, AdamW and "
            "telescope.train.optim.EMAMomentumSGD")

    def _setup(self, optimizer, params_before: Mapping[str, torch.Tensor], batch_size: int) -> None:
        by_id = {id(p): nm for nm, p in self.lens.model.named_parameters()}
        self.group_of: dict[str, dict] = {}
        self.param_of: dict[str, torch.Tensor] = {}
        for g in optimizer.param_groups:
            for p in g["params"]:
                nm = by_id.get(id(p))
                if nm is not None:
                    self.group_of[nm] = g
                    self.param_of[nm] = p
        groups = list(self.group_of.values())
        momentum = any(g.get("momentum", 0) for g in groups) or self.kind in ("adam", "ema")
        decay = any(g.get("weight_decay", 0) for g in groups)
        plain = self.kind == "sgd" and not momentum and not decay
        if self.spec.path == Path.KERNEL and not plain:
            raise ConfigError(
                "SmootherSpec(path='kernel'): the kernel shortcut holds for plain SGD only (no momentum, no "
                f"weight decay); this optimizer is {type(optimizer).__name__} with momentum={momentum}, "
                f"weight decay={decay}. Use path='auto' or 'general'.")
        self.path = Path.KERNEL if (plain and self.spec.path != Path.GENERAL) else Path.GENERAL
        buffers = 0 if self.path == Path.KERNEL else 1 + int(momentum) + int(decay)
        need = self.spec.memory_estimate(self.n_points, self.p, self.k, buffers=buffers, batch_size=batch_size,
                                         path=self.path)
        self._check_budget(need, f"{self.path} path for {type(optimizer).__name__}")
        if self.kind == "adam":
            for nm, p in self.param_of.items():
                st = optimizer.state.get(p, {})
                if "step" in st and float(st["step"]) != 1:
                    raise ConfigError("Lens(smoother=...): the optimizer has already taken steps; build the lens "
                                      "before the first optimizer step so the smoother sees every update")
            self.decoupled = isinstance(optimizer, torch.optim.AdamW)
            self.buffers["phi"] = torch.empty(self.p, device=self.device, dtype=self.dtype)
            self._phi_views = [self.buffers["phi"][lo:hi].view(params_before[nm].shape)
                               for nm, lo, hi in zip(self.names, self.offsets, self.offsets[1:])]
        if self.path == Path.GENERAL:
            shape = (self.p, self.L)
            self.buffers["step"] = torch.empty(shape, device=self.device, dtype=self.dtype)
            if momentum:
                self.buffers["momentum"] = torch.zeros(shape, device=self.device, dtype=self.dtype)
            if decay:
                D = torch.zeros(shape, device=self.device, dtype=self.dtype)
                D[:, -1] = torch.cat([params_before[nm].reshape(-1) for nm in self.names]).to(self.dtype)
                self.buffers["theta"] = D
        log.info("smoother: %s path for %s, N=%d points, n=%d, k=%d, p=%d, ~%.2f GB", self.path,
                 type(optimizer).__name__, self.n_points, self.n, self.k, self.p, need / 1e9)

    # ------------------------------------------------------------------ Jacobians
    def _products(self) -> JacobianProducts:
        """The Jacobian-product engine (NOTE [structured products] in lens/products.py), built at the
        first step from ``jacobian_method``."""
        if self.products is None:
            self.products = JacobianProducts(self.lens.model, self.names, self.sizes, self.k, self.dtype,
                                             self.jacobian_method)
        return self.products

    def _apply_chunk(self) -> int:
        """Tracked points per product call on a side captured at once: temporaries of about
        ``_TEMP_BYTES`` (NOTE [fused step]), never fewer points than ``spec.chunk_size``."""
        item = torch.empty((), dtype=self.dtype).element_size()
        per_point = self.k * self.L
        for i in self.products.active_units():
            u = self.products.units[i]
            per_point += u.d_out * self.L if self.L <= self.k * u.d_in else self.k * u.d_in * u.d_out
        return max(int(self.spec.chunk_size), _TEMP_BYTES // (item * per_point))

    def _capture_bytes(self) -> int:
        """Bytes of a side of every tracked point: N·Σ_layers (in + k·out) numbers (state dtype)."""
        item = torch.empty((), dtype=self.dtype).element_size()
        units = [self.products.units[i] for i in self.products.active_units()]
        return item * self.n_points * sum(u.d_in + self.k * u.d_out for u in units)

    def _sides(self, params, idx: torch.Tensor) -> tuple[Side, Iterable[tuple[int, int, Side]]]:
        """(the batch's side, [(first point, end point, side)] over every tracked point).

        The batch is captured on its own. When every parameter has closed-form products a side holds
        activations-sized numbers, so one more capture covers every tracked point (NOTE [fused step]);
        otherwise (Jacobian rows cost k·p numbers per point, or the side would exceed
        ``_CAPTURE_BYTES``) chunks of ``spec.chunk_size`` points are captured one by one."""
        side_b = self.products.side(params, self.x_train[idx])
        if self.products.fully_structured and self._capture_bytes() <= _CAPTURE_BYTES:
            full = self.products.side(params, self.x_all)
            if self.products.fully_structured:                                  # no fallback appeared
                step = self._apply_chunk()
                return side_b, [(s, min(s + step, self.n_points), full.rows(s, min(s + step, self.n_points)))
                                for s in range(0, self.n_points, step)]
        chunk = int(self.spec.chunk_size)
        return side_b, ((s, min(s + chunk, self.n_points), self.products.side(params, self.x_all[s:s + chunk]))
                        for s in range(0, self.n_points, chunk))

    def _train_update(self, start: int, stop: int, side: Side, dtheta: torch.Tensor) -> None:
        """f̃ += J·Δθ on the training points among tracked points [start, stop) of ``side``."""
        if start < self.n:
            end = min(stop, self.n)
            self.f_tilde[start * self.k:end * self.k] += self.products.apply_vector(side.rows(0, end - start), dtheta)

    # ------------------------------------------------------------------ the step
    def before_step(self, lens, batch, optimizer) -> None:
        """Check ``batch`` and the optimizer before the optimizer steps (nothing has changed yet):
        ``batch`` must be integer indices into x_train; the optimizer must be one the smoother mirrors."""
        self._idx = self._check_batch(batch, optimizer)

    def _check_batch(self, batch, optimizer) -> torch.Tensor:
        if batch is None:
            raise ConfigError("Lens.step(optimizer, batch=None): the smoother needs the batch's indices into "
                              "x_train; call lens.step(optimizer, batch=idx)")
        if optimizer is None:
            raise ConfigError("Lens.observe(..., optimizer=None): the smoother reads the optimizer's "
                              "hyperparameters and state; pass optimizer=")
        if self.kind is None:
            self.kind = self._classify(optimizer)
        idx = batch if torch.is_tensor(batch) else torch.as_tensor(np.asarray(batch))
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
            raise ShapeError(f"Lens.step(batch=...): expected integer indices into x_train, got dtype {idx.dtype}; "
                             "pass the batch's indices (e.g. torch.randint(0, n, (b,))), not a mask or the inputs")
        if idx.ndim != 1:
            idx = idx.reshape(-1)
        if idx.device.type == "cpu":           # NOTE [fused step]: checked on the host, no device sync
            values = idx.detach().numpy()
            lo, hi = (int(values.min()), int(values.max())) if values.size else (None, None)
        else:                                  # one sync; pass CPU indices to avoid it
            lo, hi = torch.aminmax(idx).tolist() if idx.numel() else (None, None)
        if lo is None or lo < 0 or hi >= self.n:
            raise ShapeError(f"Lens.step(batch=...): indices must lie in [0, {self.n}) and be non-empty, got "
                             f"{idx.numel()} indices in [{'-' if lo is None else lo}, {'-' if hi is None else hi}]")
        if idx.device != self.device or idx.dtype != torch.long:
            idx = idx.to(device=self.device, dtype=torch.long)
        return idx

    def _view(self, name: str, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi) of buffer ``name``, made once (a slice is an operation per step otherwise)."""
        buf = self.buffers[name]
        if lo == 0 and hi == self.p:
            return buf
        key = (name, lo, hi)
        if key not in self._views:
            self._views[key] = buf[lo:hi]
        return self._views[key]

    def _arange(self, n: int) -> torch.Tensor:
        if n not in self._aranges:
            self._aranges[n] = torch.arange(n, device=self.device)
        return self._aranges[n]

    def after_step(self, lens, params_before, delta, batch, optimizer) -> None:
        idx, self._idx = self._idx, None
        if idx is None:                        # called without before_step (a custom driver)
            idx = self._check_batch(batch, optimizer)
        if self.path is None:
            self._setup(optimizer, params_before, idx.numel())
        k = self.k
        rows_b = idx if k == 1 else (idx[:, None] * k + torch.arange(k, device=self.device)).reshape(-1)
        self._products()
        with torch.no_grad():
            side_b, sides = self._sides(params_before, idx)                     # J_B, and J of every point
            if self.basis is None:                                               # E = Ê_B − R_B
                E = self.R.index_select(0, rows_b).neg_()                        # (bk, L)
                E.index_put_((self._arange(rows_b.numel()), rows_b), self._one, accumulate=True)
            else:                                                                # NOTE [sketch]
                E = torch.sub(self._basis_aug.index_select(0, rows_b), self.R.index_select(0, rows_b))
            a = _loss_scale(self.spec.loss, idx.numel(), k)
            if "dtheta" not in self._prepared:
                self._prepared["dtheta"] = Prepared(torch.empty(self.p, device=self.device, dtype=self.dtype))
            dtheta = self._prepared["dtheta"]                                   # Δθ in the state dtype
            if delta is getattr(lens, "delta", None):                           # the lens's flat Δθ
                dtheta.D.copy_(lens.delta_flat)
            else:
                torch.cat([delta[nm].reshape(-1) for nm in self.names], out=dtheta.D)
            if self.path == Path.KERNEL:
                self._kernel_step(sides, side_b, E, a, dtheta)
            else:
                self._general_step(sides, side_b, E, a, dtheta, optimizer)
        self.steps += 1

    def _learning_rates(self) -> dict[str, float]:
        """γ per parameter name: its group's lr, 0 where the optimizer skips it (grad None)."""
        out = {}
        for nm in self.names:
            skipped = nm not in self.group_of or self.param_of[nm].grad is None
            out[nm] = 0.0 if skipped else float(self.group_of[nm]["lr"])
        return out

    def _kernel_step(self, sides, side_b, E, a, dtheta) -> None:
        lr = self._learning_rates()
        dR = torch.empty(self.R.shape[0], E.shape[0], device=self.device, dtype=self.dtype)
        k = self.k
        for start, stop, side in sides:
            dR[start * k:stop * k] = self.products.kernel(side, side_b, lr)    # kernel rows K(x, x_B)
            self._train_update(start, stop, side, dtheta)
        self.R.addmm_(dR, E, alpha=a)

    def _segments(self) -> list[_Segment]:
        """This step's segments (NOTE [optimizer rules]); advances the per-parameter step counts."""
        segs: list[_Segment] = []
        for b, nm in enumerate(self.names):
            param = self.param_of.get(nm)
            lo, hi = self.offsets[b], self.offsets[b + 1]
            if param is None or param.grad is None:                             # the optimizer skipped it
                group, step = None, 0
            else:
                self.block_steps[b] += 1
                group, step = self.group_of[nm], self.block_steps[b]
            last = segs[-1] if segs else None
            if last is not None and last.group is group and last.step == step and last.hi == lo:
                last.hi = hi
            else:
                segs.append(_Segment(lo, hi, group, step))
        return segs

    def _gather_second_moments(self, optimizer) -> None:
        """Adam: copy v (``exp_avg_sq``, ``max_exp_avg_sq`` with amsgrad) of every stepped parameter into
        the flat ``phi`` buffer in one foreach copy; the rule turns it into φ = √v̂ + ε per segment."""
        dst, src = [], []
        for b, nm in enumerate(self.names):
            param = self.param_of.get(nm)
            if param is None or param.grad is None:
                continue
            st = optimizer.state[param]
            dst.append(self._phi_views[b])
            src.append(st["max_exp_avg_sq"] if self.group_of[nm].get("amsgrad") else st["exp_avg_sq"])
        if dst:
            torch._foreach_copy_(dst, src)

    def _general_step(self, sides, side_b, E, a, dtheta, optimizer) -> None:
        G = self.buffers["step"]
        if "step" not in self._prepared:
            self._prepared["step"] = Prepared(G)
        self.products.transpose_apply(side_b, E, self._prepared["step"])         # G/a = J_Bᵀ E: −∇L
        G.mul_(-a)                                                               # now the gradient g
        segments = self._segments()
        if self.kind == "adam":
            self._gather_second_moments(optimizer)
        rule = RULES[self.kind]
        has_m, has_d, has_phi = ("momentum" in self.buffers), ("theta" in self.buffers), ("phi" in self.buffers)
        for seg in segments:
            g = self._view("step", seg.lo, seg.hi)
            if seg.group is None:
                g.zero_()
                continue
            rule(self, seg, g,
                 self._view("momentum", seg.lo, seg.hi) if has_m else None,
                 self._view("theta", seg.lo, seg.hi) if has_d else None,
                 self._phi_column(seg) if has_phi else None)
        if has_d:
            self.buffers["theta"].add_(G)                                        # θ_t = θ_{t−1} + Δ (0 where skipped)
        prep = self._prepared["step"]
        prep.new_step()
        k = self.k
        for start, stop, side in sides:
            rows = self.R if (start, stop) == (0, self.n_points) else self.R[start * k:stop * k]
            self.products.apply(side, prep, rows)                                # ΔR = J_all Δ
            self._train_update(start, stop, side, dtheta)

    def _phi_column(self, seg: _Segment) -> torch.Tensor:
        """φ rows [lo, hi) as a (hi − lo, 1) column (made once per segment)."""
        key = ("phi_col", seg.lo, seg.hi)
        if key not in self._views:
            self._views[key] = self.buffers["phi"][seg.lo:seg.hi, None]
        return self._views[key]

    # ------------------------------------------------------------------ reading
    def weights(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, c) on ``split``: s (m, n) and c (m,) for k = 1; s (m, k, n, k) and c (m, k) for k > 1."""
        if self.method != Method.EXACT:
            raise ConfigError("SmootherTracker.weights(): the sketch (SmootherSpec(method='sketch')) keeps only "
                              "projections of s; use point_norms() for ‖s(x)‖², or method='exact' for s itself")
        sl = self._split(split)
        R = self.R[sl.start * self.k:sl.stop * self.k]
        m = sl.stop - sl.start
        if self.k == 1:
            return R[:, :-1].clone(), R[:, -1].clone()
        return R[:, :-1].reshape(m, self.k, self.n, self.k).clone(), R[:, -1].reshape(m, self.k).clone()

    def _split(self, split: str) -> slice:
        if split not in self.splits:
            raise ShapeError(f"smoother: unknown split {split!r}; known: {', '.join(self.splits)}")
        return self.splits[split]

    def telescope(self, split: str) -> torch.Tensor:
        """f̃ on ``split`` as the smoother sees it: the lens's f̃ on probe sets, its own on 'train'."""
        sl = self._split(split)
        if split == "train":
            f = self.f_tilde[sl.start * self.k:sl.stop * self.k]
        else:
            f = self.lens.f_tilde[self.lens.probe_slice(split)].reshape(-1).to(self.dtype)
        return f

    def predictions(self, split: str) -> torch.Tensor:
        """s(x)·y + c(x) on ``split``, flattened to (m·k,)."""
        sl = self._split(split)
        return self.R[sl.start * self.k:sl.stop * self.k] @ self.y_aug

    def _per_probe(self, split: str) -> torch.Tensor:
        """Sketch: (m, K) with entry (x, j) = Σ_{outputs of x} u_j(x)² (m points of ``split``)."""
        sl = self._split(split)
        U = self.R[sl.start * self.k:sl.stop * self.k, :self.n_probes]
        return U.pow(2).reshape(sl.stop - sl.start, self.k, self.n_probes).sum(1)

    def point_norms(self, split: str) -> torch.Tensor:
        """‖s(x)‖_F² for each point x of ``split`` (m,): exact, or the sketch's unbiased estimate
        (1/K) Σ_j u_j(x)² summed over the k outputs (NOTE [sketch])."""
        if self.method == "exact":
            sl = self._split(split)
            rows = self.R[sl.start * self.k:sl.stop * self.k, :-1]
            return rows.pow(2).reshape(sl.stop - sl.start, -1).sum(1)
        return self._per_probe(split).mean(1)

    def effective_parameters(self) -> dict[str, float]:
        """p^0 = (n/|I|) Σ_{x∈I} ‖s(x)‖² / k per split (NOTE [multi-output smoother]); the sketch's
        estimate p̂ for ``method="sketch"`` (NOTE [sketch])."""
        out = {}
        for split, sl in self.splits.items():
            out[split] = float(self.n / (sl.stop - sl.start) * self.point_norms(split).sum() / self.k)
        return out

    def effective_parameters_se(self) -> dict[str, float]:
        """Standard error of p̂ per split over the K probes, std_j(p̂_j)/√K (0 for the exact path
        and for ``probes="identity"``; nan for K = 1)."""
        out = {}
        for split, sl in self.splits.items():
            if self.method == "exact" or self.spec.probes == "identity":
                out[split] = 0.0
                continue
            per = self._per_probe(split).sum(0) * (self.n / (sl.stop - sl.start) / self.k)   # p̂_j (K,)
            K = self.n_probes
            out[split] = float(per.std() / math.sqrt(K)) if K > 1 else float("nan")
        return out

    def telescope_errors(self) -> dict[str, float]:
        """mean |f(x) − f̃(x)| per split, with f the network now (one forward pass over the tracked
        points, eval mode) and f̃ as :meth:`telescope` gives it (NOTE [smoother validity])."""
        f = self.lens.forward(self.lens.snapshot(), self.x_all).reshape(-1).to(torch.float64)
        out = {}
        for split, sl in self.splits.items():
            rows = f[sl.start * self.k:sl.stop * self.k]
            out[split] = float((rows - self.telescope(split).to(torch.float64)).abs().mean())
        return out

    def validity(self, residuals: Mapping[str, float] | None = None) -> dict[str, bool]:
        """Per split: is p⁰ an account of the network now? The self-check residual against the
        telescoping error (NOTE [smoother validity]); computed when asked, not in the step.
        ``residuals``: :meth:`residuals` if already computed."""
        res = self.residuals() if residuals is None else residuals
        err = self.telescope_errors()
        return {s: bool(self_check_valid(res[s], err[s], self.label_range)) for s in self.splits}

    def residuals(self) -> dict[str, float]:
        """mean |s(x)·y + c(x) − f̃(x)| per split (self-check; of the order of |f − f̃|)."""
        return {split: float((self.predictions(split) - self.telescope(split)).abs().mean())
                for split in self.splits}

    def metrics(self) -> dict[str, dict[str, float]]:
        """{split: {"smoother/p_eff": p, "smoother/residual": r, "smoother/valid": 1.0 or 0.0}} for
        train and every probe set (NOTE [smoother validity]), plus ``"smoother/p_eff_se"`` (the
        standard error of p̂) for ``method="sketch"``."""
        p, r = self.effective_parameters(), self.residuals()
        ok = self.validity(r)
        out = {s: {"smoother/p_eff": p[s], "smoother/residual": r[s], "smoother/valid": float(ok[s])}
               for s in self.splits}
        if self.method == "sketch":
            se = self.effective_parameters_se()
            for s in self.splits:
                out[s]["smoother/p_eff_se"] = se[s]
        return out


def smoother_of(lens) -> SmootherTracker:
    """The :class:`SmootherTracker` of a lens built with ``smoother=SmootherSpec(...)``."""
    for tracker in getattr(lens, "trackers", []):
        if isinstance(tracker, SmootherTracker):
            return tracker
    raise ConfigError("smoother_of(lens): the lens has no smoother; construct it with "
                      "Lens(model, probes, smoother=SmootherSpec(x_train, y_train, loss=...))")


def smoother_metrics(lens) -> dict[str, dict[str, float]]:
    """``smoother/p_eff``, ``smoother/residual`` and ``smoother/valid`` (NOTE [smoother validity]), and
    ``smoother/p_eff_se`` for the sketch, for 'train' and every probe set of ``lens``."""
    return smoother_of(lens).metrics()
