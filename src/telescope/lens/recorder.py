"""The recorder behind :class:`Lens`.

# NOTE [realised updates]
# The lens never re-derives an optimizer's update. It snapshots θ_{t−1}, lets the
# user's optimizer step, reads Δθ_t = θ_t − θ_{t−1} and adds the JVP
# ∇f_{θ_{t−1}}(x)·Δθ_t to f̃(x). This makes it exact for any optimizer (SGD, momentum,
# Nesterov, Adam(W), weight decay, schedules, clipping): two optimizers that produce
# the same sequence of Δθ give the same f̃. The cost per step is one JVP over all probe
# points (all probe sets are concatenated into one batch), about two forward passes.
#
# NOTE [probes in eval mode]
# Probes are evaluated with every module in eval mode, whatever mode training uses.
# Dropout is then off: f̃ tracks the deterministic eval-mode network, whose
# parameters the (stochastic) training updates. BatchNorm is refused by default: in
# eval mode it uses running statistics, buffers that change by forward passes, not by
# Δθ, so f̃ would silently drift from f. ``allow_buffers=True`` accepts that drift (it
# then shows up in telescope/abs_err); LayerNorm/GroupNorm need no such care.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Mapping, Protocol

import torch
import torch.nn as nn
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

from telescope.errors import ShapeError, UnsupportedModelError

log = logging.getLogger(__name__)

_BATCH_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)
_STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
               nn.FeatureAlphaDropout)


class Tracker(Protocol):
    """Something that follows training through the lens (e.g. the smoother).

    ``after_step`` is called after every optimizer step with the parameters before the
    step (a dict of detached tensors), the realised update Δθ (same keys), the batch
    indices given to :meth:`Lens.step` and the optimizer (whose state and learning
    rates the tracker may read).
    """

    def after_step(self, lens: "Lens", params_before: Mapping[str, torch.Tensor],
                   delta: Mapping[str, torch.Tensor], batch: torch.Tensor | None,
                   optimizer: torch.optim.Optimizer) -> None: ...


def check_batch_independent(model: nn.Module, *, caller: str, allow_buffers: bool = False) -> list[str]:
    """Refuse BatchNorm (see NOTE [probes in eval mode]); return the names of dropout modules."""
    bn = [name for name, m in model.named_modules() if isinstance(m, _BATCH_DEPENDENT)]
    if bn and not allow_buffers:
        raise UnsupportedModelError(
            f"{caller}: the model has BatchNorm ({', '.join(bn[:3])}{'…' if len(bn) > 3 else ''}); its "
            "running statistics change through forward passes, not through parameter updates, so the "
            "telescoping model cannot follow them and in train mode outputs depend on the batch. "
            "Use GroupNorm/LayerNorm, or pass allow_buffers=True to accept that drift in the error.")
    return [name for name, m in model.named_modules() if isinstance(m, _STOCHASTIC)]


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class Lens:
    """The telescoping model f̃ and the linearized baseline f_lin on named probe sets.

    Parameters
    ----------
    model : nn.Module
        Any module whose eval-mode output for an example does not depend on the rest of
        the batch. Output shape (n,) or (n, k).
    probes : dict[str, Tensor]
        Named input sets, each (n_i, *input_shape), on the model's device and dtype.
    smoother : telescope.SmootherSpec, optional
        Also track the network as a smoother of the training labels (effective parameters).
    accumulate : "model" | "float64"
        dtype of the running sum f̃. ``"float64"`` avoids float32 round-off drift over
        10^5 steps at no measurable cost.
    allow_buffers : bool
        Accept BatchNorm; its running-statistic drift then shows in the telescoping error.
    chunk_size : int
        Probe points per JVP call (memory: about ``chunk_size × widest layer`` per call).

    Use ``lens.step(optimizer, batch=idx)`` in place of ``optimizer.step()``.
    """

    def __init__(self, model: nn.Module, probes: Mapping[str, torch.Tensor], *,
                 smoother: Any = None, accumulate: str = "float64",
                 allow_buffers: bool = False, chunk_size: int = 8192):
        if not isinstance(model, nn.Module):
            raise ShapeError(f"Lens(model=...): expected an nn.Module, got {type(model).__name__}")
        if not isinstance(probes, Mapping) or not probes:
            raise ShapeError("Lens(probes=...): give a dict of named input tensors, e.g. {'test': x_test}")
        self.model = model
        self.dropout_modules = check_batch_independent(model, caller="Lens", allow_buffers=allow_buffers)
        if self.dropout_modules:
            log.info("Lens: dropout in %s is off when probes are evaluated (eval mode)", self.dropout_modules)
        # switching modes costs a walk over the module tree per call: only do it when some
        # module behaves differently in eval mode (see NOTE [probes in eval mode])
        self._mode_sensitive = any(isinstance(m, _BATCH_DEPENDENT + _STOCHASTIC) for m in model.modules())
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not self._names:
            raise ShapeError("Lens(model=...): the model has no trainable parameters")
        ref = dict(model.named_parameters())[self._names[0]]
        self.device, self.dtype = ref.device, ref.dtype
        if accumulate not in ("model", "float64"):
            raise ShapeError(f"Lens(accumulate={accumulate!r}): choose 'model' or 'float64'")
        self.acc_dtype = torch.float64 if accumulate == "float64" else self.dtype
        self.chunk_size = int(chunk_size)

        shapes = set()
        self._slices: dict[str, slice] = {}
        xs, start = [], 0
        for name, x in probes.items():
            if not torch.is_tensor(x) or x.ndim < 1 or x.shape[0] == 0:
                raise ShapeError(f"Lens(probes[{name!r}]): expected a non-empty tensor (n, ...), got "
                                 f"{getattr(x, 'shape', type(x).__name__)}")
            if x.device != self.device:
                raise ShapeError(f"Lens(probes[{name!r}]): probes are on {x.device} but the model is on "
                                 f"{self.device}; move them with .to({str(self.device)!r})")
            if x.is_floating_point() and x.dtype != self.dtype:
                raise ShapeError(f"Lens(probes[{name!r}]): dtype {x.dtype} differs from the model's "
                                 f"{self.dtype}; convert with .to({self.dtype})")
            shapes.add(tuple(x.shape[1:]))
            self._slices[name] = slice(start, start + x.shape[0])
            start += x.shape[0]
            xs.append(x)
        if len(shapes) != 1:
            raise ShapeError(f"Lens(probes=...): every probe set needs the same input shape, got {sorted(shapes)}")
        self._x = torch.cat(xs).detach()

        self.params0 = self._snapshot()
        self.f0 = self._forward(self.params0)
        self.f_tilde = self.f0.to(self.acc_dtype).clone()
        self.steps = 0
        self.trackers: list[Tracker] = []
        if smoother is not None:
            self.trackers.append(smoother.build(self))

    # ------------------------------------------------------------------ internals
    def _snapshot(self) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        return {n: params[n].detach().clone() for n in self._names}

    def _call(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, dict(params), (x,), strict=False)

    def _eval(self):
        return eval_mode(self.model) if self._mode_sensitive else contextlib.nullcontext()

    def _forward(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad(), self._eval():
            return torch.cat([self._call(params, x) for x in self._x.split(self.chunk_size)])

    def _jvp(self, params: Mapping[str, torch.Tensor], tangent: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """∇f_params(x)·tangent for every probe point, shape like the model output."""
        # forward-mode AD with dual tensors: same arithmetic as torch.func.jvp with less
        # per-call overhead (measured in benchmarks/lens_overhead.py)
        outs = []
        with torch.no_grad(), self._eval(), fwAD.dual_level():
            duals = {n: fwAD.make_dual(params[n], tangent[n]) for n in self._names}
            for x in self._x.split(self.chunk_size):
                primal, tangent_out = fwAD.unpack_dual(self._call(duals, x))
                outs.append(torch.zeros_like(primal) if tangent_out is None else tangent_out)
        return torch.cat(outs)

    # ------------------------------------------------------------------ stepping
    def step(self, optimizer: torch.optim.Optimizer, batch: torch.Tensor | None = None, closure=None):
        """``optimizer.step()`` plus the lens's bookkeeping; returns what step returned.

        ``batch`` (indices into the smoother's training set) is needed only with a smoother.
        """
        before = self._snapshot()
        out = optimizer.step(closure) if closure is not None else optimizer.step()
        self.observe(before, batch=batch, optimizer=optimizer)
        return out

    def observe(self, params_before: Mapping[str, torch.Tensor], *, batch: torch.Tensor | None = None,
                optimizer: torch.optim.Optimizer | None = None) -> None:
        """Record a step already taken, given the parameters before it (for custom loops)."""
        after = dict(self.model.named_parameters())
        delta = {n: after[n].detach() - params_before[n] for n in self._names}
        self.f_tilde += self._jvp(params_before, delta).to(self.acc_dtype)
        self.steps += 1
        for tracker in self.trackers:
            tracker.after_step(self, params_before, delta, batch, optimizer)

    # ------------------------------------------------------------------ reading
    def probe_names(self) -> list[str]:
        return list(self._slices)

    def probe(self, split: str) -> torch.Tensor:
        return self._x[self._slice(split)]

    def _slice(self, split: str) -> slice:
        if split not in self._slices:
            raise ShapeError(f"Lens: unknown probe set {split!r}; known: {', '.join(self._slices)}")
        return self._slices[split]

    def predictions(self, split: str, *, linearized: bool = True) -> dict[str, torch.Tensor]:
        """``{"network", "telescope", "linearized"}`` outputs on probe set ``split`` now.

        network: f_{θ_t}(x) (eval mode); telescope: f̃_t(x) in the accumulation dtype;
        linearized: f_{θ_0}(x) + ∇f_{θ_0}(x)·(θ_t − θ_0) (one JVP, computed on demand).
        """
        sl = self._slice(split)
        now = self._snapshot()
        out = {"network": self._forward(now)[sl], "telescope": self.f_tilde[sl].clone()}
        if linearized:
            out["linearized"] = self.linearized_all(now)[sl]
        return out

    def linearized_all(self, params_now: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        params_now = self._snapshot() if params_now is None else params_now
        shift = {n: params_now[n] - self.params0[n] for n in self._names}
        return self.f0.to(self.acc_dtype) + self._jvp(self.params0, shift).to(self.acc_dtype)

    def errors(self, split: str) -> dict[str, float]:
        """``telescope/abs_err`` and ``linearized/abs_err``: mean |f − f̃| and mean |f − f_lin|."""
        p = self.predictions(split)
        net = p["network"].to(self.acc_dtype)
        return {"telescope/abs_err": float((net - p["telescope"]).abs().mean()),
                "linearized/abs_err": float((net - p["linearized"]).abs().mean())}

    def effective_parameters(self) -> dict[str, float]:
        """``{"train": p_train, <probe>: p_probe, ...}`` from the smoother (needs ``smoother=``)."""
        for tracker in self.trackers:
            if hasattr(tracker, "effective_parameters"):
                return tracker.effective_parameters()
        raise ShapeError("Lens.effective_parameters(): construct the lens with smoother=SmootherSpec(...)")
