"""Empirical tangent kernels of any ``nn.Module``: the public entry points.

``K(x, x')[c, d] = ⟨∂f_c(x)/∂θ, ∂f_d(x')/∂θ⟩`` over the differentiated parameters θ.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from telescope.errors import ConfigError, ShapeError, UnsupportedModelError
from telescope.kernels.fastpath import no_fused_fastpath
from telescope.kernels.jacobians import (
    jacobian_ntk,
    kernel_shape,
    ntk_vp_ntk,
    reference_ntk,
)
from telescope.kernels.structured import group_key, make_plan, structured_ntk


logger = logging.getLogger(__name__)

OUTPUTS = ("trace", "full", "diagonal")
GROUP_BY = ("module", "parameter")
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes


class Implementation(str, enum.Enum):
    """How :func:`empirical_ntk` computes the kernel.

    Costs for ``n1 × n2`` examples, ``k`` outputs, ``P`` differentiated parameters,
    ``F`` the cost of one example's forward pass (``F ≈ P`` for dense nets); "full"
    output assumed (trace and diagonal divide the contraction term by ``k``).

    ``REFERENCE``
        One ``jacrev`` per example and a Python loop over pairs. Time
        ``(n1+n2)·k·F + n1·n2·k²·P`` with Python overhead per pair; memory
        ``(n1+n2)·k·P``. The oracle of the test suite; never chosen by ``auto``.
    ``JACOBIAN``
        ``vmap(jacrev)`` per-example Jacobians contracted by matrix products, chunked
        so the Jacobians held at once stay within ``memory_budget``. Time
        ``(n1+n2)·k·F + n1·n2·k²·P``; memory ``min(budget, (n1+n2)·k·P)``. Exact for
        any model; the contraction dominates.
    ``NTK_VP``
        NTK–vector products: ``k`` vector–Jacobian products per example of ``x2``,
        then one forward-mode product over all of ``x1`` per (example, output) of
        ``x2``. Time ``n2·k·F + n2·k·(n1·~3F)`` ≈ ``3·n1·n2·k·P``; memory ``c·k·P``
        tangents for a chunk of ``c`` examples. Cheaper than ``JACOBIAN`` for the full
        kernel when ``k`` is large (its cost grows like ``k``, not ``k²``); slower for
        trace/diagonal.
    ``STRUCTURED``
        Layer-wise closed form (see NOTE [structured kernel] in
        ``telescope/kernels/structured.py``): per side one forward and one backward
        batched over the ``k`` outputs, to the layer outputs only (no weight
        gradients); then per dense layer ``n1·n2·(d_in + k²·d_out)`` instead of
        ``n1·n2·k²·d_in·d_out``, written in place into one preallocated result
        (about 5/8 of it for a Gram on the CPU, which is computed on its block upper
        triangle and mirrored: exactly symmetric); nn.Conv2d / sequence layers use
        per-example gradients of ``k·d_in·d_out`` numbers; unsupported modules fall
        back to Jacobian rows for their parameters only. Memory: the kernel, tile
        temporaries bounded by ``memory_budget``, and activations-sized captures
        (``n·k·d_out`` per layer), never parameter-sized per example. Within 1.1× of
        a hand-written closed form and ahead of neural-tangents on the MLPs and CNN
        of docs/benchmarks-ntk.md (CPU; the table says where not).
    ``AUTO``
        ``STRUCTURED`` unless more than half of the differentiated parameters would
        fall back to Jacobian rows; then ``NTK_VP`` for the full kernel with ``k ≥ 8``
        outputs and ``JACOBIAN`` otherwise. Why ``STRUCTURED`` is the default: for
        networks made of Linear/Conv2d/Embedding it is exact and removes the ``P``
        factor from the pairwise contraction (``benchmarks/ntk.py``, see
        docs/benchmarks-ntk.md: over 100× faster than ``JACOBIAN`` on a
        784-200-200-10 MLP with ≤ 1/9 of its memory; faster with < 1/5 of its
        memory on a small CNN); with fallbacks it costs at most one extra
        forward/backward over ``JACOBIAN`` on the same parameters. ``NTK_VP`` was ~4×
        faster than ``JACOBIAN`` on full 10-output MLP kernels, hence the rule above.

        Per device: the *choice* is the same on the CPU and on CUDA, and the
        structured path adapts its execution to the device. On the CPU the
        products are GEMM-bound, so a Gram is tiled into row blocks of at most
        ⌈n/4⌉ and only the block upper triangle is formed (~5/8 of the flops). On
        CUDA the old path was launch-bound (k backward passes, each forming every
        weight gradient, then per-tile products): there the capture is one
        k-batched backward and the products one tile per layer (fewer, larger GEMMs,
        a launch count independent of ``n`` and ``k``), the Gram mirrored in one
        pass. ``STRUCTURED``'s work is then a few GEMMs per layer against
        ``JACOBIAN``'s ``n·k·P`` Jacobians and ``n1·n2·k²·P`` contraction, so it stays
        the default there too. Not measured on a GPU in the session that made this
        change: ``benchmarks/ntk.py --suite implementations --device cuda`` checks it.
    """

    AUTO = "auto"
    REFERENCE = "reference"
    JACOBIAN = "jacobian"
    NTK_VP = "ntk_vp"
    STRUCTURED = "structured"


# --------------------------------------------------------------------------- validation


def _fail_batch_dependence(fn: str, model: nn.Module) -> None:
    for name, module in model.named_modules():
        label = name or "(root)"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.training or not module.track_running_stats:
                raise UnsupportedModelError(
                    f"{fn}: module {label!r} ({type(module).__name__}) normalises with batch "
                    "statistics, so an example's output depends on the other examples in the "
                    "batch and a per-example tangent kernel is not defined. Call model.eval() "
                    "first (and use track_running_stats=True so eval mode uses running statistics)."
                )
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
            raise UnsupportedModelError(
                f"{fn}: module {label!r} ({type(module).__name__}, p={module.p}) is in training "
                "mode, so outputs are random and the kernel is not a function of the "
                "parameters. Call model.eval() before computing the kernel."
            )


def _resolve_names(fn: str, model: nn.Module, params: Sequence[str] | None) -> list[str]:
    canonical = {id(p): n for n, p in model.named_parameters()}
    order = list(canonical.values())
    aliases = {n: canonical[id(p)] for n, p in model.named_parameters(remove_duplicate=False)}
    if not order:
        raise UnsupportedModelError(f"{fn}: the model has no parameters, so it has no tangent kernel.")
    if params is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not names:
            raise ConfigError(
                f"{fn}: every parameter of the model has requires_grad=False. Pass "
                f"params=[...] to choose which to differentiate; valid names: {order}"
            )
        return names
    if isinstance(params, str) or not isinstance(params, Sequence):
        raise ConfigError(
            f"{fn}: params must be a list of parameter names, got {params!r}; "
            f"e.g. params=[{order[0]!r}]"
        )
    if len(params) == 0:
        raise ConfigError(
            f"{fn}: params=[] differentiates nothing, so the kernel is undefined. Pass at "
            f"least one name, or params=None for all trainable parameters; valid names: {order}"
        )
    unknown = [p for p in params if p not in aliases]
    if unknown:
        raise ConfigError(
            f"{fn}: unknown parameter name(s) {unknown} in params; valid names "
            f"(from model.named_parameters()): {order}"
        )
    wanted = {aliases[p] for p in params}
    return [n for n in order if n in wanted]


class _Request:
    """A validated kernel request."""

    def __init__(
        self,
        fn: str,
        model: nn.Module,
        x1: Tensor,
        x2: Tensor | None,
        output: str,
        implementation: str | Implementation,
        params: Sequence[str] | None,
        memory_budget: int | None,
    ):
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")
        if output not in OUTPUTS:
            raise ConfigError(f"{fn}: output={output!r} is not one of {list(OUTPUTS)}")
        try:
            self.implementation = Implementation(implementation)
        except ValueError:
            raise ConfigError(
                f"{fn}: implementation={implementation!r} is not one of "
                f"{[i.value for i in Implementation]}"
            ) from None
        if memory_budget is None:
            memory_budget = DEFAULT_MEMORY_BUDGET
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget <= 0:
            raise ConfigError(f"{fn}: memory_budget must be a positive number of bytes, got {memory_budget!r}")
        for label, x in (("x1", x1), ("x2", x2)):
            if x is None and label == "x2":
                continue
            if not isinstance(x, Tensor):
                raise ShapeError(f"{fn}: {label} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() == 0:
                raise ShapeError(
                    f"{fn}: {label} must have a leading batch dimension, got a 0-d tensor; "
                    f"use {label}.reshape(1, -1)"
                )
        if x2 is not None and x2.shape[1:] != x1.shape[1:]:
            raise ShapeError(
                f"{fn}: x1 and x2 must have the same per-example shape, got "
                f"{tuple(x1.shape[1:])} and {tuple(x2.shape[1:])}"
            )
        names = _resolve_names(fn, model, params)
        named = dict(model.named_parameters())
        dtypes = {named[n].dtype for n in names}
        devices = {named[n].device for n in names}
        if len(dtypes) > 1 or len(devices) > 1:
            raise UnsupportedModelError(
                f"{fn}: the differentiated parameters mix dtypes {sorted(map(str, dtypes))} or "
                f"devices {sorted(map(str, devices))}; convert the model with model.to(...)"
            )
        (dtype,), (device,) = dtypes, devices
        if not dtype.is_floating_point:
            raise UnsupportedModelError(f"{fn}: parameters of dtype {dtype} cannot be differentiated")
        for label, x in (("x1", x1), ("x2", x2)):
            if x is None:
                continue
            if x.device != device:
                raise ShapeError(
                    f"{fn}: {label} is on {x.device} but the model's parameters are on "
                    f"{device}; use {label}.to({str(device)!r})"
                )
            if x.is_floating_point() and x.dtype != dtype:
                raise ShapeError(
                    f"{fn}: {label} has dtype {x.dtype} but the model's parameters are {dtype}; "
                    f"use {label}.to({dtype}) (or convert the model)"
                )
        _fail_batch_dependence(fn, model)
        probe = x1 if x1.shape[0] > 0 else x2
        if probe is None or probe.shape[0] == 0:
            raise ShapeError(f"{fn}: x1 and x2 are both empty; at least one example is needed")
        with torch.no_grad():
            out = model(probe[:1])
        if not isinstance(out, Tensor):
            raise UnsupportedModelError(
                f"{fn}: the model returned {type(out).__name__}; it must return one tensor "
                "(wrap it to select the output you want the kernel of)"
            )
        if out.dim() == 0 or out.shape[0] != 1:
            raise UnsupportedModelError(
                f"{fn}: on a batch of 1 example the model returned shape {tuple(out.shape)}; "
                "outputs must have a leading batch dimension"
            )
        self.fn = fn
        self.model = model
        self.x1 = x1
        self.x2 = x2
        self.output = output
        self.names = names
        self.budget = memory_budget
        self.k = out[0].numel()
        self.dtype = dtype
        self.device = device

    @property
    def n2(self) -> int:
        return self.x1.shape[0] if self.x2 is None else self.x2.shape[0]

    def empty(self) -> bool:
        return self.x1.shape[0] == 0 or self.n2 == 0

    def zeros(self) -> Tensor:
        shape = kernel_shape(self.x1.shape[0], self.n2, self.k, self.output)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def choose(self) -> Implementation:
        if self.implementation is not Implementation.AUTO:
            return self.implementation
        named = dict(self.model.named_parameters())
        plan = make_plan(self.model, self.names, None)
        fallback = sum(named[n].numel() for n in plan.fallback_names)
        total = sum(named[n].numel() for n in self.names)
        if 2 * fallback <= total:
            choice = Implementation.STRUCTURED
        elif self.output == "full" and self.k >= 8:
            choice = Implementation.NTK_VP
        else:
            choice = Implementation.JACOBIAN
        logger.debug("%s: implementation='auto' chose %r", self.fn, choice.value)
        return choice

    def compute(self, names: Sequence[str], implementation: Implementation) -> Tensor:
        with no_fused_fastpath():   # NOTE [fused fast path]: every implementation, not only ntk_vp
            return self._compute(names, implementation)

    def _compute(self, names: Sequence[str], implementation: Implementation) -> Tensor:
        args = (self.model, self.x1, self.x2, names, self.output, self.k)
        if implementation is Implementation.REFERENCE:
            return reference_ntk(*args)
        if implementation is Implementation.JACOBIAN:
            return jacobian_ntk(*args, self.budget)
        if implementation is Implementation.NTK_VP:
            return ntk_vp_ntk(*args, self.budget)
        parts = structured_ntk(*args, self.budget, group_by=None)
        return parts["all"] if parts else self.zeros()


# --------------------------------------------------------------------------- public


def empirical_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    output: str = "trace",
    implementation: str | Implementation = "auto",
    params: Sequence[str] | None = None,
    memory_budget: int | None = None,
) -> Tensor:
    """The empirical tangent kernel of ``model`` between ``x1`` and ``x2``.

    Args:
        model: any ``nn.Module`` mapping a batch ``(n, *features)`` to one tensor
            ``(n, *out)``; ``k = prod(out)`` outputs per example (``k = 1`` for
            ``(n,)`` outputs). Outputs must be independent across the batch: false
            with BatchNorm in train mode or active dropout (refused with a message).
        x1: ``(n1, *features)`` on the model's device; floating inputs must have the
            parameters' dtype (integer inputs, e.g. token ids, are fine).
        x2: ``(n2, *features)``, or None for ``x2 = x1`` (the Gram matrix; computed
            once, symmetric positive semi-definite).
        output: ``"trace"`` → ``(n1, n2)``, ``Σ_c K[:, :, c, c]``; ``"full"`` →
            ``(n1, n2, k, k)``; ``"diagonal"`` → ``(n1, n2, k)``, ``K[:, :, c, c]``.
        implementation: see :class:`Implementation` for each method's cost.
        params: names from ``model.named_parameters()`` to differentiate, e.g.
            ``["0.weight"]`` for a first-layer kernel; default all with
            ``requires_grad``.
        memory_budget: bytes the Jacobian-based paths may hold at once (default 1 GiB).

    Returns:
        The kernel, in the parameters' dtype, on their device, without autograd history.
    """
    req = _Request("empirical_ntk", model, x1, x2, output, implementation, params, memory_budget)
    if req.empty():
        return req.zeros()
    return req.compute(req.names, req.choose()).detach()


def empirical_ntk_by_layer(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    output: str = "trace",
    implementation: str | Implementation = "auto",
    params: Sequence[str] | None = None,
    group_by: str = "module",
    memory_budget: int | None = None,
) -> dict[str, Tensor]:
    """The kernel split into per-layer parts that sum to :func:`empirical_ntk`.

    ``group_by="module"`` keys each part by the name of the module owning the
    parameters (``"0"``, ``"encoder.fc1"``; ``"(root)"`` for parameters of the model
    itself); ``group_by="parameter"`` keys by parameter name (``"0.weight"``,
    ``"0.bias"``). Keys follow ``model.named_parameters()`` order. Other arguments and
    shapes are those of :func:`empirical_ntk`. The structured path computes all parts
    in one pass; the other implementations run once per group.
    """
    fn = "empirical_ntk_by_layer"
    if group_by not in GROUP_BY:
        raise ConfigError(f"{fn}: group_by={group_by!r} is not one of {list(GROUP_BY)}")
    req = _Request(fn, model, x1, x2, output, implementation, params, memory_budget)
    groups: dict[str, list[str]] = {}
    for name in req.names:
        module_name = name.rsplit(".", 1)[0] if "." in name else ""
        groups.setdefault(group_key(module_name, name, group_by), []).append(name)
    if req.empty():
        return {key: req.zeros() for key in groups}
    choice = req.choose()
    if choice is Implementation.STRUCTURED:
        with no_fused_fastpath():
            parts = structured_ntk(
                req.model, req.x1, req.x2, req.names, req.output, req.k, req.budget, group_by=group_by
            )
        return {key: parts[key].detach() if key in parts else req.zeros() for key in groups}
    return {key: req.compute(names, choice).detach() for key, names in groups.items()}
