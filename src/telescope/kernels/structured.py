"""The ``structured`` (layer-wise) path of :func:`telescope.kernels.empirical_ntk`.

# NOTE [structured kernel]
# For a dense layer z = W a + b inside f, the derivative of output f_c with respect to
# W is an outer product, ∂f_c/∂W = g_c ⊗ a with g_c = ∂f_c/∂z. Hence the layer's kernel
# block needs no parameter-sized vectors at all:
#     ⟨∂f_c(x)/∂W, ∂f_d(x')/∂W⟩ + ⟨∂f_c(x)/∂b, ∂f_d(x')/∂b⟩ = (a·a' + 1) (g_c·g'_d),
# i.e. K_layer = (A₁A₂ᵀ + 1) ⊙ (G₁G₂ᵀ): d_in + d_out multiply–adds per pair and output
# pair instead of d_in·d_out. The kernel is the sum of these blocks over layers.
# A is captured by a forward hook on each nn.Linear / nn.Conv2d / nn.Embedding; G by a
# tensor hook on the module's output, filled by k backward passes per side (one per
# output component c, of Σ_i f_c(x_i): examples are independent, so the gradient of
# the sum at example i is example i's own). Tensor hooks receive the gradient of the
# module's output as it was when the hook was registered, so a later in-place op
# (ReLU(inplace=True)) cannot corrupt G.
# Where a module applies its weight at T positions (Conv2d patches, Linear on
# sequences, Embedding on token sequences) the gradient is a sum Σ_t g_t ⊗ a_t; the
# pairwise form would cost T² per pair, so we form the per-example gradient
# Σ_t g_t ⊗ a_t (k·d_out·d_in numbers per example, "rows") and contract those.
# Anything else that owns differentiated parameters -- another module type, a
# parameter shared by two modules, a module called twice, a module whose first input
# dimension is not the batch -- falls back to per-example Jacobian rows for that
# module's parameters only (exact, just slower). Fallbacks are logged at INFO.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from telescope.kernels.jacobians import (
    activation_numel,
    contract_rows,
    jacobian_ntk,
    kernel_shape,
    model_outputs,
)

logger = logging.getLogger(__name__)

SUPPORTED_MODULES = (nn.Linear, nn.Conv2d, nn.Embedding)


@dataclass
class Unit:
    """Parameters of one supported module treated in closed form."""

    key: str  # group key of the per-layer breakdown
    module_name: str
    module: nn.Module
    weight: bool  # the module's weight is differentiated in this unit
    bias: bool  # the module's bias is differentiated in this unit
    names: tuple[str, ...]


@dataclass
class Plan:
    units: list[Unit] = field(default_factory=list)
    fallback: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    reasons: dict[str, str] = field(default_factory=dict)  # module name -> why it falls back

    @property
    def fallback_names(self) -> list[str]:
        return [n for names in self.fallback.values() for n in names]


def group_key(module_name: str, param_name: str, group_by: str | None) -> str:
    """The key of a parameter in a per-layer breakdown."""
    if group_by == "parameter":
        return param_name
    if group_by == "module":
        return module_name if module_name else "(root)"
    return "all"


def _unsupported_reason(
    module: nn.Module, direct: list[tuple[str, nn.Parameter]], uses: Counter, registrations: int
) -> str | None:
    if type(module) not in SUPPORTED_MODULES:
        return f"{type(module).__name__} has no closed form"
    if any(uses[id(p)] > 1 for _, p in direct):
        return "a parameter is shared with another module (weight tying)"
    if registrations > 1:
        return "the module is registered under several names"
    if any(name not in ("weight", "bias") for name, _ in direct):
        return "unexpected parameter names"
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return "grouped convolution"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r}"
        if isinstance(module.padding, str) and module.padding != "valid":
            return f"padding={module.padding!r}"
    if isinstance(module, nn.Embedding) and (module.max_norm is not None or module.scale_grad_by_freq):
        return "max_norm / scale_grad_by_freq change the gradient"
    return None


def make_plan(model: nn.Module, names: Sequence[str], group_by: str | None) -> Plan:
    """Split the differentiated parameters into closed-form units and fallback groups."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    registrations = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    wanted = set(names)
    plan = Plan()
    seen: set[str] = set()
    for module_name, module in model.named_modules():
        direct = list(module.named_parameters(recurse=False))
        diff = [(pn, canonical[id(p)]) for pn, p in direct if canonical[id(p)] in wanted]
        diff = [(pn, cn) for pn, cn in diff if cn not in seen]
        if not diff:
            continue
        seen.update(cn for _, cn in diff)
        reason = _unsupported_reason(module, direct, uses, registrations[id(module)])
        if reason is not None:
            plan.reasons[module_name] = reason
            for _, cn in diff:
                plan.fallback[group_key(module_name, cn, group_by)].append(cn)
            continue
        if group_by == "parameter":
            for pn, cn in diff:
                plan.units.append(
                    Unit(cn, module_name, module, pn == "weight", pn == "bias", (cn,))
                )
        else:
            key = group_key(module_name, diff[0][1], group_by)
            plan.units.append(
                Unit(
                    key,
                    module_name,
                    module,
                    any(pn == "weight" for pn, _ in diff),
                    any(pn == "bias" for pn, _ in diff),
                    tuple(cn for _, cn in diff),
                )
            )
    return plan


# --------------------------------------------------------------------------- capture


@dataclass
class _Call:
    inputs: Tensor
    version: int
    G: Tensor | None = None  # (n, k, *output.shape[1:]), filled one output per backward pass


def _capture(
    model: nn.Module,
    modules: dict[str, nn.Module],
    names: Sequence[str],
    structured_names: set[str],
    x: Tensor,
) -> dict[str, list[_Call]]:
    """One forward with hooks, then k backward passes filling each call's output gradients."""
    named = dict(model.named_parameters())
    params = {n: named[n].detach().requires_grad_(n in structured_names) for n in names}
    leaves = [p for p in params.values() if p.requires_grad]
    calls: dict[str, list[_Call]] = defaultdict(list)
    state = {"pass": 0, "k": 1}

    def make_hook(module_name: str):
        def hook(_module, args, kwargs, output):
            inp = args[0] if args else next(iter(kwargs.values()))
            call = _Call(inp.detach(), inp._version)
            calls[module_name].append(call)
            if isinstance(output, Tensor) and output.requires_grad:

                def grad_hook(grad: Tensor) -> None:
                    if call.G is None:
                        call.G = grad.new_zeros((grad.shape[0], state["k"], *grad.shape[1:]))
                    call.G[:, state["pass"]] = grad

                output.register_hook(grad_hook)

        return hook

    handles = [
        m.register_forward_hook(make_hook(name), with_kwargs=True) for name, m in modules.items()
    ]
    try:
        with torch.enable_grad():
            out = model_outputs(model, params, x)
    finally:
        for h in handles:
            h.remove()
    k = state["k"] = out.shape[1]
    if out.requires_grad and leaves:
        for c in range(k):
            state["pass"] = c
            torch.autograd.grad(
                out[:, c].sum(), leaves, retain_graph=c < k - 1, allow_unused=True
            )
    return calls


def _runtime_problem(calls: list[_Call], n: int) -> str | None:
    if len(calls) > 1:
        return f"the module is called {len(calls)} times in one forward"
    call = calls[0]
    if call.inputs.dim() == 0 or call.inputs.shape[0] != n:
        return "its input's first dimension is not the batch"
    if call.inputs._version != call.version:
        return "its input is modified in place after the call"
    return None


def _features(module: nn.Module, call: _Call, k: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A (n, T, d_in) and G (n, k, T, d_out) of one call."""
    inp = call.inputs
    n = inp.shape[0]
    if isinstance(module, nn.Conv2d):
        padding = 0 if module.padding == "valid" else module.padding
        A = F.unfold(
            inp, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride
        ).transpose(1, 2)  # (n, L, C_in·kh·kw), same order as weight.reshape(C_out, -1)
        d_out = module.out_channels
    elif isinstance(module, nn.Embedding):
        idx = inp.reshape(n, -1)
        A = F.one_hot(idx, module.num_embeddings).to(dtype)  # (n, T, V)
        if module.padding_idx is not None:
            A[..., module.padding_idx] = 0  # the padding row receives no gradient
        d_out = module.embedding_dim
    else:  # nn.Linear
        A = inp.reshape(n, -1, module.in_features)
        d_out = module.out_features
    T = A.shape[1]
    G = call.G
    if G is None:  # the output never reached f: zero gradient
        G = torch.zeros(n, k, T * d_out, dtype=dtype, device=inp.device)
    if isinstance(module, nn.Conv2d):
        G = G.reshape(n, k, d_out, -1).transpose(2, 3)  # (n, k, L, C_out)
    else:
        G = G.reshape(n, k, -1, d_out)
    return A, G


def _augment(A: Tensor, unit: Unit) -> Tensor:
    """A with the columns this unit differentiates: a for the weight, 1 for the bias."""
    parts = []
    if unit.weight:
        parts.append(A)
    if unit.bias:
        parts.append(torch.ones(*A.shape[:2], 1, dtype=A.dtype, device=A.device))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


@dataclass
class _Compact:
    """One unit's side of the contraction: (A (n, d_in), G (n, k, d_out)) if the module
    acts at one position, else per-example gradient rows (n, k, d_out·d_in)."""

    A: Tensor | None = None
    G: Tensor | None = None
    rows: Tensor | None = None

    @staticmethod
    def of(A: Tensor, G: Tensor) -> _Compact:
        if A.shape[1] == 1:
            return _Compact(A=A[:, 0], G=G[:, :, 0])
        n, k = G.shape[:2]
        return _Compact(rows=torch.einsum("nkto,nti->nkoi", G, A).reshape(n, k, -1))

    @staticmethod
    def cat(parts: list[_Compact]) -> _Compact:
        if len(parts) == 1:
            return parts[0]
        if parts[0].rows is not None:
            return _Compact(rows=torch.cat([p.rows for p in parts]))
        return _Compact(A=torch.cat([p.A for p in parts]), G=torch.cat([p.G for p in parts]))

    def rows_slice(self, rows: slice) -> _Compact:
        if self.rows is not None:
            return _Compact(rows=self.rows[rows])
        return _Compact(A=self.A[rows], G=self.G[rows])


def _contract(s1: _Compact, s2: _Compact, output: str) -> Tensor:
    """One unit's kernel block from both sides' compact features (NOTE [structured kernel])."""
    if s1.rows is not None:
        return contract_rows({"w": s1.rows}, {"w": s2.rows}, output)
    AA = s1.A @ s2.A.T  # (n1, n2)
    g1, g2 = s1.G, s2.G  # (n, k, d_out)
    n1, k, d = g1.shape
    n2 = g2.shape[0]
    if output == "full":
        GG = (g1.reshape(n1 * k, d) @ g2.reshape(n2 * k, d).T).reshape(n1, k, n2, k)
        return GG.permute(0, 2, 1, 3).mul_(AA[:, :, None, None])
    if output == "trace":
        return (g1.reshape(n1, -1) @ g2.reshape(n2, -1).T).mul_(AA)
    GG = torch.bmm(g1.transpose(0, 1), g2.permute(1, 2, 0))  # (k, n1, n2)
    return GG.permute(1, 2, 0).mul_(AA[:, :, None])


def _side(
    model: nn.Module,
    units: list[Unit],
    names: Sequence[str],
    x: Tensor,
    k: int,
    dtype: torch.dtype,
    chunk: int,
    problems: dict[str, str],
) -> dict[int, _Compact]:
    """Compact features of every unit on one side, captured ``chunk`` examples at a time."""
    modules = {u.module_name: u.module for u in units}
    structured_names = {n for u in units for n in u.names}
    parts: dict[int, list[_Compact]] = defaultdict(list)
    seen_in: dict[str, int] = defaultdict(int)
    n_chunks = 0
    for i0 in range(0, x.shape[0], chunk):
        xs = x[i0 : i0 + chunk]
        n_chunks += 1
        calls = _capture(model, modules, names, structured_names, xs)
        for name, module in modules.items():
            if name in problems or not calls[name]:
                continue
            seen_in[name] += 1
            problem = _runtime_problem(calls[name], xs.shape[0])
            if problem is not None:
                problems[name] = problem
                continue
            A, G = _features(module, calls[name][0], k, dtype)
            for index, unit in enumerate(units):
                if unit.module_name == name:
                    parts[index].append(_Compact.of(_augment(A, unit), G))
        del calls
    for name, count in seen_in.items():
        if name not in problems and count != n_chunks:
            problems[name] = "it is called for some examples only (data-dependent control flow)"
    return {i: _Compact.cat(p) for i, p in parts.items() if units[i].module_name not in problems}


def structured_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None,
    names: Sequence[str],
    output: str,
    k: int,
    budget: int,
    group_by: str | None = None,
) -> dict[str, Tensor]:
    """The structured kernel, as ``{group key: kernel}`` (one key ``"all"`` when group_by is None).

    Cost: one forward and ``k`` backward passes per side (two sides unless x2 is None),
    plus per closed-form module ``n1·n2·(d_in + k²·d_out)`` multiply–adds (full
    output; ``k·d_out`` for trace) or, for modules applied at T > 1 positions,
    ``(n1+n2)·k·T·d_in·d_out`` to form per-example gradients and ``n1·n2·k²·d_in·d_out``
    to contract them. Memory: the kernel, one block temporary of the kernel's size
    (row-chunked to ``budget``), ``n·k·d_out`` captured numbers per dense layer (or
    ``n·k·d_in·d_out`` per-example gradients for T > 1), and the output gradients of a
    capture chunk of examples, sized to ``budget / 64``.
    """
    plan = make_plan(model, names, group_by)
    dtype = dict(model.named_parameters())[names[0]].dtype
    x2_ = x1 if x2 is None else x2
    n1, n2 = x1.shape[0], x2_.shape[0]
    shape = kernel_shape(n1, n2, k, output)
    result: dict[str, Tensor] = {}

    def add(key: str, value: Tensor, rows: slice | None = None) -> None:
        if key not in result:
            if rows is None and value.shape == shape:
                result[key] = value.contiguous() if not value.is_contiguous() else value
                return
            result[key] = torch.zeros(shape, dtype=dtype, device=x1.device)
        if rows is None:
            result[key] += value
        else:
            result[key][rows] += value

    units = list(plan.units)
    if units:
        per_example = k * activation_numel(model, x1[:1]) * dtype.itemsize
        capture_chunk = max(1, (budget // 64) // per_example)
        problems: dict[str, str] = {}
        side1 = _side(model, units, names, x1, k, dtype, capture_chunk, problems)
        side2 = side1 if x2 is None else _side(model, units, names, x2, k, dtype, capture_chunk, problems)
        plan.reasons.update(problems)
        per_row = {"full": k * k, "diagonal": k, "trace": 1}[output] * n2 * dtype.itemsize * 3
        chunk = max(1, budget // per_row)
        for index, unit in enumerate(units):
            if unit.module_name in problems:
                plan.fallback[unit.key].extend(unit.names)
                continue
            if index not in side1 or index not in side2:  # unused on a side: zero block
                add(unit.key, torch.zeros(shape, dtype=dtype, device=x1.device))
                continue
            s1, s2 = side1.pop(index), side2[index] if x2 is not None else side1.get(index)
            s2 = s1 if x2 is None else s2
            for i0 in range(0, n1, chunk):
                rows = slice(i0, min(i0 + chunk, n1))
                if rows.start == 0 and rows.stop == n1:
                    add(unit.key, _contract(s1, s2, output))
                else:
                    add(unit.key, _contract(s1.rows_slice(rows), s2, output), rows)
            del s1, s2
    for module_name, reason in plan.reasons.items():
        logger.info("empirical_ntk(structured): module %r uses Jacobian rows: %s", module_name, reason)
    for key, group in plan.fallback.items():
        add(key, jacobian_ntk(model, x1, x2, group, output, k, budget))
    return result
