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

import numpy as np
import torch
import torch.nn as nn
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

from telescope.errors import ShapeError, UnsupportedModelError
from telescope.kernels.fastpath import forward_ad_failure, no_fused_fastpath
from telescope.lens.trapezoid import TrapezoidTracker

log = logging.getLogger(__name__)

_BATCH_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)
_STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
               nn.FeatureAlphaDropout)


class Tracker(Protocol):
    """Something that follows training through the lens (e.g. the smoother).

    ``before_step`` (optional) is called by :meth:`Lens.step` before the optimizer steps, and by
    :meth:`Lens.observe` before the lens records anything, with the batch indices and the
    optimizer: the place to refuse bad input while nothing has changed. ``after_step`` is called
    after every optimizer step with the parameters before the step, the realised update Δθ
    (dicts of views of the lens's flat buffers, overwritten at the next step: copy what you
    keep; ``lens.delta_flat`` is the same Δθ as one (p,) vector when ``delta is lens.delta``),
    the batch and the optimizer (whose state and learning rates the tracker may read).

    What a tracker may read of the lens: :attr:`Lens.parameter_names`, :attr:`Lens.probe_inputs`,
    :meth:`Lens.probe_names`, :meth:`Lens.probe_slice`, :meth:`Lens.forward`, :meth:`Lens.jvp`,
    ``params0``, ``f0``, ``f_tilde``, ``device``, ``dtype``, ``model``.
    """

    def before_step(self, lens: "Lens", batch: Any, optimizer: torch.optim.Optimizer | None) -> None: ...

    def after_step(self, lens: "Lens", params_before: Mapping[str, torch.Tensor],
                   delta: Mapping[str, torch.Tensor], batch: torch.Tensor | None,
                   optimizer: torch.optim.Optimizer) -> None: ...


def check_placement(where: str, x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
    """Inputs must sit on the model's ``device`` and, when floating, have its ``dtype``: a
    ShapeError naming ``where`` and the fix otherwise (integer inputs such as token ids pass)."""
    if x.device != device:
        raise ShapeError(f"{where}: on {x.device} but the model is on {device}; move it with .to({str(device)!r})")
    if x.is_floating_point() and x.dtype != dtype:
        raise ShapeError(f"{where}: dtype {x.dtype} differs from the model's {dtype}; convert with .to({dtype})")


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
        the batch. Output shape (n,) or (n, k). Its trainable parameters share one dtype and
        device (they are kept in flat buffers, NOTE [fused step] in lens/smoother.py).
    probes : dict[str, Tensor or numpy array]
        Named input sets, each (n_i, *input_shape) with the model's input shape, on the model's
        device and dtype. NumPy arrays are converted (floating point to the model's dtype, on its
        device); tensors must already match (a silent copy would hide a device mix-up).
    smoother : telescope.SmootherSpec, optional
        Also track the network as a smoother of the training labels (effective parameters).
    accumulate : "model" | "float64"
        dtype of the running sum f̃. ``"float64"`` avoids float32 round-off drift over
        10^5 steps at no measurable cost.
    allow_buffers : bool
        Accept BatchNorm; its running-statistic drift then shows in the telescoping error.
    chunk_size : int
        Probe points per JVP call (memory: about ``chunk_size × widest layer`` per call).
    second_order : bool
        Also follow the trapezoid-rule companion f̂ of f̃ (NOTE [trapezoid rule], lens/trapezoid.py):
        ``predictions`` gains ``"trapezoid"`` and ``errors`` ``trapezoid/abs_err``. A diagnostic of
        f̃'s error (is it the steps' second-order remainders?); one more JVP per step.

    Use ``lens.step(optimizer, batch=idx)`` in place of ``optimizer.step()``.
    """

    def __init__(self, model: nn.Module, probes: Mapping[str, Any], *,
                 smoother: Any = None, accumulate: str = "float64",
                 allow_buffers: bool = False, chunk_size: int = 8192, second_order: bool = False):
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
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ShapeError("Lens(model=...): the model has no trainable parameters")
        self.parameter_names: list[str] = [n for n, _ in named]
        self._params = [p for _, p in named]
        ref = self._params[0]
        self.device, self.dtype = ref.device, ref.dtype
        mixed = [(n, p.dtype, p.device) for n, p in named if p.dtype != self.dtype or p.device != self.device]
        if mixed:
            raise ShapeError(f"Lens(model=...): trainable parameters differ in dtype or device ({named[0][0]!r}: "
                             f"{self.dtype} on {self.device}, {mixed[0][0]!r}: {mixed[0][1]} on {mixed[0][2]}); "
                             "move the whole model with model.to(device, dtype)")
        if accumulate not in ("model", "float64"):
            raise ShapeError(f"Lens(accumulate={accumulate!r}): choose 'model' or 'float64'")
        self.acc_dtype = torch.float64 if accumulate == "float64" else self.dtype
        self.chunk_size = int(chunk_size)

        self._slices: dict[str, slice] = {}
        xs, start, first = [], 0, None
        for name, x in probes.items():
            x = self._check_probe(name, x)
            if first is not None and tuple(x.shape[1:]) != tuple(first[1].shape[1:]):
                raise ShapeError(f"Lens(probes=...): every probe set needs the same input shape, got "
                                 f"{tuple(first[1].shape[1:])} for {first[0]!r} and {tuple(x.shape[1:])} for {name!r}")
            first = first or (name, x)
            self._slices[name] = slice(start, start + x.shape[0])
            start += x.shape[0]
            xs.append(x)
        for name, x in zip(self._slices, xs):
            self._trial_forward(name, x)
        self._x = torch.cat(xs).detach()                   # a copy: later edits of the inputs do not leak in

        # flat p-vectors with per-parameter views (NOTE [fused step] in lens/smoother.py)
        sizes = [p.numel() for p in self._params]
        self.p = sum(sizes)
        self._before_flat = torch.empty(self.p, device=self.device, dtype=self.dtype)
        self._after_flat = torch.empty_like(self._before_flat)
        self.delta_flat = torch.empty_like(self._before_flat)
        self.params_before = self._views(self._before_flat)
        self._after = list(self._views(self._after_flat).values())
        self.delta = self._views(self.delta_flat)

        self.params0 = self.snapshot()
        self.f0 = self.forward(self.params0, self._x)
        if self.f0.ndim == 0 or self.f0.shape[0] != self._x.shape[0]:
            raise ShapeError(f"Lens(probes=...): the model's output on the probes has shape {tuple(self.f0.shape)}, "
                             f"not ({self._x.shape[0]}, ...) (one row per probe point); check that the model "
                             "keeps the batch axis")
        self.f_tilde = self.f0.to(self.acc_dtype).clone()
        self.steps = 0
        self._warned_invalid = False           # Lens.effective_parameters() warns once (NOTE [smoother validity])
        self.trackers: list[Tracker] = []
        self.trapezoid: TrapezoidTracker | None = None
        if second_order:
            self.trapezoid = TrapezoidTracker(self)
            self.trackers.append(self.trapezoid)
        if smoother is not None:
            self.trackers.append(smoother.build(self))

    def _check_probe(self, name: str, x: Any) -> torch.Tensor:
        """One probe set, validated (and a NumPy array converted)."""
        where = f"Lens(probes[{name!r}])"
        if isinstance(x, np.ndarray):
            floating = np.issubdtype(x.dtype, np.floating)
            x = torch.tensor(x, device=self.device, dtype=self.dtype if floating else None)
        if not torch.is_tensor(x):
            raise ShapeError(f"{where}: expected a tensor or NumPy array (n, *input_shape), got {type(x).__name__}")
        if x.ndim < 1 or x.shape[0] == 0:
            raise ShapeError(f"{where}: expected a non-empty tensor (n, *input_shape), got shape {tuple(x.shape)}")
        check_placement(where, x, self.device, self.dtype)
        return x

    def _trial_forward(self, name: str, x: torch.Tensor) -> None:
        """A forward pass on two points of probe set ``name``: a shape the model cannot take, or an output
        without one row per point (a 1-D probe), gets a message naming the probe set."""
        where = f"Lens(probes[{name!r}])"
        trial = x[:2]
        hint = (f"; a 1-D probe is read as {x.shape[0]} points of shape (): for one point with {x.shape[0]} "
                "features use x[None]" if x.ndim == 1 else "")
        try:
            out = self.forward(dict(zip(self.parameter_names, self._params)), trial)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise ShapeError(f"{where}: the model cannot take these probes (shape {tuple(x.shape)}, read as "
                             f"{x.shape[0]} points of shape {tuple(x.shape[1:])}): {str(exc).splitlines()[0]}"
                             f"{hint or '. Give the probe points along the first axis with the shape the model takes'}"
                             ) from None
        if out.ndim == 0 or out.shape[0] != trial.shape[0]:
            raise ShapeError(f"{where}: the model maps {trial.shape[0]} probe point(s) of shape {tuple(x.shape[1:])} to "
                             f"an output of shape {tuple(out.shape)}, not one row per point{hint}")
        # a layer without a forward-mode derivative is named now, not at the first step
        params = dict(zip(self.parameter_names, self._params))
        zeros = {n: torch.zeros_like(p) for n, p in params.items()}
        try:
            self._jvp(params, zeros, [trial[:1]])
        except NotImplementedError as exc:
            raise forward_ad_failure(self.model, lambda: self._jvp(params, zeros, [trial[:1]]), where, exc) from None

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, lo = {}, 0
        for n, p in zip(self.parameter_names, self._params):
            out[n] = flat[lo:lo + p.numel()].view(p.shape)
            lo += p.numel()
        return out

    # ------------------------------------------------------------------ for trackers
    @property
    def probe_inputs(self) -> torch.Tensor:
        """Every probe set's inputs, concatenated in :meth:`probe_names` order (N, *input_shape)."""
        return self._x

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the trainable parameters now, {name: tensor}."""
        return {n: p.detach().clone() for n, p in zip(self.parameter_names, self._params)}

    def _call(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, dict(params), (x,), strict=False)

    def _eval(self):
        return eval_mode(self.model) if self._mode_sensitive else contextlib.nullcontext()

    def forward(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """f_params(x) in eval mode without gradients, in chunks of ``chunk_size``; x (m, *input_shape).
        Transformer modules take their general path (NOTE [fused fast path], kernels/fastpath.py)."""
        with torch.no_grad(), self._eval(), no_fused_fastpath():
            if x.shape[0] <= self.chunk_size:
                return self._call(params, x)
            return torch.cat([self._call(params, c) for c in x.split(self.chunk_size)])

    def jvp(self, params: Mapping[str, torch.Tensor], tangent: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """∇f_params(x)·tangent for every probe point, shaped like the model's output on the probes."""
        # forward-mode AD with dual tensors: same arithmetic as torch.func.jvp with less
        # per-call overhead (measured in benchmarks/lens_overhead.py); PyTorch's fused transformer
        # kernels have no forward-mode derivative: NOTE [fused fast path] in kernels/fastpath.py
        chunks = [self._x] if self._x.shape[0] <= self.chunk_size else self._x.split(self.chunk_size)
        try:
            return self._jvp(params, tangent, chunks)
        except NotImplementedError as exc:
            raise forward_ad_failure(self.model, lambda: self._jvp(params, tangent, [chunks[0][:1]]),
                                     "Lens", exc) from None

    def _jvp(self, params, tangent, chunks) -> torch.Tensor:
        outs = []
        with torch.no_grad(), self._eval(), no_fused_fastpath(), fwAD.dual_level():
            duals = {n: fwAD.make_dual(params[n], tangent[n]) for n in self.parameter_names}
            for x in chunks:
                primal, tangent_out = fwAD.unpack_dual(self._call(duals, x))
                outs.append(torch.zeros_like(primal) if tangent_out is None else tangent_out)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    # ------------------------------------------------------------------ stepping
    def step(self, optimizer: torch.optim.Optimizer, batch: Any = None, closure=None):
        """``optimizer.step()`` plus the lens's bookkeeping; returns what step returned.

        ``batch`` (indices into the smoother's training set) is needed only with a smoother; it
        is checked before the optimizer steps, so a mistake leaves model and lens untouched.
        """
        for tracker in self.trackers:
            check = getattr(tracker, "before_step", None)
            if check is not None:
                check(self, batch, optimizer)
        with torch.no_grad():
            torch._foreach_copy_(list(self.params_before.values()), self._params)
        out = optimizer.step(closure) if closure is not None else optimizer.step()
        self._record(batch, optimizer)
        return out

    def observe(self, params_before: Mapping[str, torch.Tensor], *, batch: Any = None,
                optimizer: torch.optim.Optimizer | None = None) -> None:
        """Record a step already taken, given the parameters before it (for custom loops)."""
        for tracker in self.trackers:
            check = getattr(tracker, "before_step", None)
            if check is not None:
                check(self, batch, optimizer)
        if params_before is not self.params_before:
            with torch.no_grad():
                torch._foreach_copy_(list(self.params_before.values()),
                                     [params_before[n] for n in self.parameter_names])
        self._record(batch, optimizer)

    def _record(self, batch, optimizer) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._after, self._params)
            torch.sub(self._after_flat, self._before_flat, out=self.delta_flat)
            self.f_tilde.add_(self.jvp(self.params_before, self.delta))
        self.steps += 1
        for tracker in self.trackers:
            tracker.after_step(self, self.params_before, self.delta, batch, optimizer)

    # ------------------------------------------------------------------ reading
    def probe_names(self) -> list[str]:
        return list(self._slices)

    def probe(self, split: str) -> torch.Tensor:
        return self._x[self.probe_slice(split)]

    def probe_slice(self, split: str) -> slice:
        """Rows of probe set ``split`` in :attr:`probe_inputs` (and in ``f0``, ``f_tilde``)."""
        if split not in self._slices:
            raise ShapeError(f"Lens: unknown probe set {split!r}; known: {', '.join(self._slices)}")
        return self._slices[split]

    def predictions(self, split: str, *, linearized: bool = True) -> dict[str, torch.Tensor]:
        """``{"network", "telescope", "linearized"}`` outputs on probe set ``split`` now.

        network: f_{θ_t}(x) (eval mode); telescope: f̃_t(x) in the accumulation dtype;
        linearized: f_{θ_0}(x) + ∇f_{θ_0}(x)·(θ_t − θ_0) (one JVP, computed on demand);
        trapezoid: f̂_t(x) with ``second_order=True`` (NOTE [trapezoid rule]).
        """
        sl = self.probe_slice(split)
        now = self.snapshot()
        out = {"network": self.forward(now, self._x)[sl], "telescope": self.f_tilde[sl].clone()}
        if self.trapezoid is not None:
            out["trapezoid"] = self.trapezoid.f_hat[sl].clone()
        if linearized:
            out["linearized"] = self.linearized_all(now)[sl]
        return out

    def linearized_all(self, params_now: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        params_now = self.snapshot() if params_now is None else params_now
        shift = {n: params_now[n] - self.params0[n] for n in self.parameter_names}
        return self.f0.to(self.acc_dtype) + self.jvp(self.params0, shift).to(self.acc_dtype)

    def errors(self, split: str) -> dict[str, float]:
        """``telescope/abs_err`` and ``linearized/abs_err``: mean |f − f̃| and mean |f − f_lin|; with
        ``second_order=True`` also ``trapezoid/abs_err``, mean |f − f̂| (NOTE [trapezoid rule])."""
        p = self.predictions(split)
        net = p["network"].to(self.acc_dtype)
        out = {"telescope/abs_err": float((net - p["telescope"]).abs().mean()),
               "linearized/abs_err": float((net - p["linearized"]).abs().mean())}
        if "trapezoid" in p:
            out["trapezoid/abs_err"] = float((net - p["trapezoid"]).abs().mean())
        return out

    def effective_parameters(self) -> dict[str, float]:
        """``{"train": p_train, <probe>: p_probe, ...}`` from the smoother (needs ``smoother=``).

        Also runs the smoother's self-check (NOTE [smoother validity] in lens/smoother.py: one
        forward pass over the tracked points, here when asked, never in the step) and, the first
        time a split fails it, warns once through ``logging`` that p⁰ there is no account of the
        network; ``smoother_of(lens).validity()`` gives the flags themselves.
        """
        for tracker in self.trackers:
            if hasattr(tracker, "effective_parameters"):
                p = tracker.effective_parameters()
                check = getattr(tracker, "validity", None)
                if check is not None and not self._warned_invalid:
                    bad = [split for split, ok in check().items() if not ok]
                    if bad:
                        self._warned_invalid = True
                        log.warning("Lens.effective_parameters(): at step %d the smoother's self-check fails on %s "
                                    "(|s·y + c − f̃| above 3·|f − f̃| and 2%% of the label range): p⁰ there is no "
                                    "account of the network (NOTE [smoother validity] in telescope/lens/smoother.py; "
                                    "with Adam see adam_sharpness). Warned once per lens.", self.steps, ", ".join(bad))
                return p
        raise ShapeError("Lens.effective_parameters(): construct the lens with smoother=SmootherSpec(...)")
