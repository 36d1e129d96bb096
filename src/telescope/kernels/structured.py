"""The ``structured`` (layer-wise) path of :func:`telescope.kernels.empirical_ntk`.

# NOTE [structured kernel]
# For a dense layer z = W a + b inside f, the derivative of output f_c with respect to
# W is an outer product, ∂f_c/∂W = g_c ⊗ a with g_c = ∂f_c/∂z. Hence the layer's kernel
# block needs no parameter-sized vectors at all:
#     ⟨∂f_c(x)/∂W, ∂f_d(x')/∂W⟩ + ⟨∂f_c(x)/∂b, ∂f_d(x')/∂b⟩ = (a·a' + 1) (g_c·g'_d),
# i.e. K_layer = (A₁A₂ᵀ + 1) ⊙ (G₁G₂ᵀ): d_in + d_out multiply–adds per pair and output
# pair instead of d_in·d_out. The kernel is the sum of these blocks over layers.
# A is captured by a forward hook on each nn.Linear / nn.Conv2d / nn.Embedding; G, for
# all k outputs at once, by one batched backward to the modules' output gradient edges
# (NOTE [output-gradient capture]); the products are assembled in place (NOTE [in-place
# assembly]).
# Where a module applies its weight at T positions (Conv2d patches, Linear on
# sequences, Embedding on token sequences) the gradient is a sum Σ_t g_t ⊗ a_t, and the
# layer's block is Σ_{t,s} (a_t·a'_s + 1)(g_t·g'_s). Two ways to contract it, chosen per
# module by their cost (``_positional``; kk = k² for the full kernel, k for trace and
# diagonal): the per-example gradient Σ_t g_t ⊗ a_t ("rows": k·d_out·d_in numbers per
# example, kk·d_in·d_out multiply–adds per pair), or the T² position pairs as T² dense
# blocks ("positions": T²·(d_in + kk·d_out) per pair, activations-sized memory). Conv2d's
# hundreds of patches take rows; a transformer's few tokens (T = 3 in modular arithmetic,
# d_in = 128, d_out = 512: 9·(128 + 113·512) vs 113·128·512 multiply–adds for the trace,
# and no per-example gradient of 7 M numbers) take positions.
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
#
# NOTE [output-gradient capture]
# G is ∂f/∂z for every closed-form module's output z, for every output component c.
# A forward hook records the module's input (A's source) and the *gradient edge* of its
# output (torch.autograd.graph.get_gradient_edge), taken at call time: asking autograd
# for the gradient at that edge gives the gradient of the output as the module returned
# it, even if a later in-place op (ReLU(inplace=True)) rewrites the tensor. Then one
# backward pass, batched over the k outputs (grad_outputs = the k unit vectors,
# is_grads_batched=True, i.e. vmap over the backward), returns all G at once as
# (k, n, *output.shape[1:]). Only these edges are requested, so autograd never forms a
# weight gradient (d_in·d_out per layer): the cost is one forward and one k-batched
# backward through the activations, the same as a hand-written closed form. Where an op
# in the model has no vmap rule for its backward, the batched call raises and we run k
# plain backward passes to the same edges instead (logged at INFO).


@dataclass
class _Call:
    inputs: Tensor
    version: int
    edge: object | None  # torch.autograd.graph.GradientEdge of the output at call time
    G: Tensor | None = None  # (k, n, *output.shape[1:]), ∂f_c/∂output for every c


def _output_gradients(out: Tensor, edges: list) -> list[Tensor | None]:
    """``[(k, n, *z.shape[1:]) or None]``: ∂f_c/∂z at each edge, for every output c.

    ``out`` is ``(n, k)``; examples are independent, so the gradient of ``Σ_i f_c(x_i)``
    at example i is example i's own. None where an edge does not reach ``out``.
    """
    n, k = out.shape
    if k == 1:  # a scalar root: no grad_outputs tensor, so torch skips its symbolic shape
        # check (whose first use imports sympy, ~0.7 s of a process's first kernel)
        grads = torch.autograd.grad(out.sum(), edges, allow_unused=True)
        return [None if g is None else g.unsqueeze(0) for g in grads]
    eye = torch.eye(k, dtype=out.dtype, device=out.device).unsqueeze(1).expand(k, n, k)
    try:
        return list(
            torch.autograd.grad(
                out, edges, eye, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
        )
    except RuntimeError as exc:  # an op without a vmap rule for its backward
        logger.info(
            "empirical_ntk(structured): batched backward failed (%s); using %d backward passes", exc, k
        )
    per_output = [
        torch.autograd.grad(out[:, c].sum(), edges, retain_graph=c < k - 1, allow_unused=True)
        for c in range(k)
    ]
    return [
        None if per_output[0][i] is None else torch.stack([g[i] for g in per_output])
        for i in range(len(edges))
    ]


def _capture(
    model: nn.Module,
    modules: dict[str, nn.Module],
    names: Sequence[str],
    structured_names: set[str],
    x: Tensor,
) -> dict[str, list[_Call]]:
    """One forward with hooks, one k-batched backward (NOTE [output-gradient capture])."""
    named = dict(model.named_parameters())
    params = {n: named[n].detach().requires_grad_(n in structured_names) for n in names}
    calls: dict[str, list[_Call]] = defaultdict(list)

    def make_hook(module_name: str):
        def hook(_module, args, kwargs, output):
            inp = args[0] if args else next(iter(kwargs.values()))
            edge = None
            if isinstance(output, Tensor) and output.requires_grad:
                edge = torch.autograd.graph.get_gradient_edge(output)
            calls[module_name].append(_Call(inp.detach(), inp._version, edge))

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
    pending = [c for cs in calls.values() for c in cs if c.edge is not None]
    if out.requires_grad and pending:
        with torch.enable_grad():
            grads = _output_gradients(out, [c.edge for c in pending])
        for call, g in zip(pending, grads):
            call.G = g
    for cs in calls.values():
        for c in cs:
            c.edge = None  # drop the references into the graph
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
    """A (n, T, d_in) and G (k, n, T, d_out) of one call."""
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
        G = torch.zeros(k, n, T * d_out, dtype=dtype, device=inp.device)
    if isinstance(module, nn.Conv2d):
        G = G.reshape(k, n, d_out, -1).transpose(2, 3)  # (k, n, L, C_out)
    else:
        G = G.reshape(k, n, -1, d_out)
    return A, G


def _augment(A: Tensor, unit: Unit) -> Tensor:
    """A with the columns this unit differentiates: a for the weight, 1 for the bias."""
    parts = []
    if unit.weight:
        parts.append(A)
    if unit.bias:
        parts.append(torch.ones(*A.shape[:2], 1, dtype=A.dtype, device=A.device))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------- assembly
#
# NOTE [in-place assembly]
# Each output mode has a storage layout in which every per-unit product is one matrix
# product written straight into the result, and the documented layout is a view of it:
#     "full"      storage (n1, k, n2, k) = the (n1·k, n2·k) matrix G₁G₂ᵀ; returned as
#                 .permute(0, 2, 1, 3) → (n1, n2, k, k); .reshape(n1·k, n2·k) of the
#                 storage is the kernel as one matrix, free of copies.
#     "trace"     storage (n1, n2) = (G₁ as (n1, k·d)) (G₂ as (n2, k·d))ᵀ.
#     "diagonal"  storage (k, n1, n2) = the batch of k products G₁[c]G₂[c]ᵀ; returned as
#                 .permute(1, 2, 0) → (n1, n2, k).
# The result is one torch.empty; per tile of rows the first unit's product is written
# with mm/bmm(out=) into the tile (a strided 2-D view: BLAS writes with a leading
# dimension, no copy), then scaled in place by A₁A₂ᵀ (+1 with a bias); every later unit
# is a product into a tile-sized temporary accumulated with addcmul_ (dense) or addmm_ /
# baddbmm_ (per-example rows). No zero fill, no strided add, and temporaries are bounded
# by memory_budget through the tile height.
# A Gram (x2 is None) is computed on the block upper triangle only -- on the CPU the row
# tiles are at most max(⌈n/4⌉, 256) high, so from n ≈ 1000 on about 5/8 of the products are
# formed -- and then its strict lower triangle is overwritten with the transpose of the
# upper one (_mirror: in 256 × 256 blocks on the CPU, where a strided transposed copy is
# slow; one pass on CUDA). The result is exactly symmetric whatever the BLAS does. On
# CUDA one tile (unless the budget asks for more) keeps the number of launches small.
#
# NOTE [gemm backend]
# Issue 26 asked for a measured choice between torch's default BLAS (MKL here) and
# oneDNN (to_mkldnn + torch._C._nn.mkldnn_linear), which was faster on an AMD EPYC. On
# the machine this was built on (Intel Xeon with AVX-512/AMX, torch 2.13, MKL) oneDNN was
# 0.72-0.85x the speed of MKL at every kernel shape (benchmarks/gemm_backends.py,
# docs/benchmarks-ntk.md), so it is not used: every product goes through torch.mm/bmm.
# The benchmark script stays, so the choice can be revisited on a CPU where it pays.

_STORAGE_TO_DOCUMENTED = {
    "full": lambda s: s.permute(0, 2, 1, 3),
    "trace": lambda s: s,
    "diagonal": lambda s: s.permute(1, 2, 0),
}


def _storage_shape(n1: int, n2: int, k: int, output: str) -> tuple[int, ...]:
    return {"full": (n1, k, n2, k), "trace": (n1, n2), "diagonal": (k, n1, n2)}[output]


@dataclass
class _Compact:
    """One unit's side of the contraction, its example axis sliceable.

    ``G`` is (n, k, d) for full and trace output and (k, n, d) for diagonal (NOTE
    [in-place assembly]): ∂f/∂z (d = d_out) for a module applied at one position
    ("dense"), else the per-example gradient rows (d = d_out·d_in). A dense unit also
    carries its module's input ``A`` (n, d_in) when the weight is differentiated (a view,
    no copy) and whether the bias is.
    """

    G: Tensor
    k_major: bool  # True: (k, n, d)
    dense: bool
    A: Tensor | None = None
    bias: bool = False
    positions: int = 0  # T > 0: "positions" form, G (n, k, T, d_out) or (k, n, T, d_out), A (n, T, d_in [+1])

    def blocks(self) -> list[_Compact]:
        """The dense block of every position of a "positions" unit (its bias folded into A's ones column),
        each G made contiguous once, so the T² products below reshape views instead of copying."""
        return [_Compact(self.G[:, :, t].contiguous(), self.k_major, True, self.A[:, t], False)
                for t in range(self.positions)]

    @staticmethod
    def of(A: Tensor, G: Tensor, unit: Unit, output: str) -> _Compact:
        """From A (n, T, d_in) and G (k, n, T, d_out)."""
        k_major = output == "diagonal"
        if A.shape[1] == 1:
            G = G[:, :, 0]
            G = G.contiguous() if k_major else G.transpose(0, 1).contiguous()
            return _Compact(G, k_major, True, A[:, 0] if unit.weight else None, unit.bias)
        if _positional(A.shape[1], A.shape[2] + unit.bias, G.shape[-1], G.shape[0], output):
            G = G if k_major else G.transpose(0, 1)                              # (k, n, T, o) / (n, k, T, o)
            return _Compact(G, k_major, True, _augment(A, unit), False, positions=A.shape[1])
        spec = "knto,nti->knoi" if k_major else "knto,nti->nkoi"
        rows = torch.einsum(spec, G, _augment(A, unit))
        return _Compact(rows.reshape(*rows.shape[:2], -1), k_major, False)

    @staticmethod
    def cat(parts: list[_Compact]) -> _Compact:
        if len(parts) == 1:
            return parts[0]
        p0 = parts[0]
        A = None if p0.A is None else torch.cat([p.A for p in parts])
        G = torch.cat([p.G for p in parts], dim=1 if p0.k_major else 0)
        return _Compact(G, p0.k_major, p0.dense, A, p0.bias, p0.positions)

    def examples(self, rows: slice) -> _Compact:
        A = None if self.A is None else self.A[rows]
        G = self.G[:, rows] if self.k_major else self.G[rows]
        return _Compact(G, self.k_major, self.dense, A, self.bias, self.positions)


def _positional(T: int, d_in: int, d_out: int, k: int, output: str) -> bool:
    """Whether a module applied at T > 1 positions is contracted over position pairs rather than
    per-example gradient rows (NOTE [structured kernel]): T²·(d_in + kk·d_out) < kk·d_in·d_out."""
    kk = k * k if output == "full" else k
    return T * T * (d_in + kk * d_out) < kk * d_in * d_out


def _gram_factor(s1: _Compact, s2: _Compact, output: str, out: Tensor) -> Tensor:
    """G₁G₂ᵀ (or rows₁rows₂ᵀ) in storage layout, written into the tile-shaped ``out``."""
    if output == "diagonal":
        return torch.bmm(s1.G, s2.G.transpose(1, 2), out=out)  # (k, b1, b2)
    n1, n2 = s1.G.shape[0], s2.G.shape[0]
    if output == "full":
        a, b = s1.G.reshape(-1, s1.G.shape[-1]), s2.G.reshape(-1, s2.G.shape[-1])  # (n·k, d)
    else:
        a, b = s1.G.reshape(n1, -1), s2.G.reshape(n2, -1)  # (n, k·d)
    torch.mm(a, b.T, out=out if output == "trace" else _as_matrix(out))
    return out


def _as_matrix(tile: Tensor) -> Tensor:
    """A (b1, k, b2, k) tile of the full storage as the (b1·k, b2·k) strided matrix it is."""
    b1, k, b2, _ = tile.shape
    return tile.as_strided((b1 * k, b2 * k), (tile.stride(1), 1))


def _broadcast(AA: Tensor, output: str) -> Tensor:
    """A₁A₂ᵀ (b1, b2) shaped to multiply a storage tile."""
    if output == "full":
        return AA[:, None, :, None]
    if output == "diagonal":
        return AA[None]
    return AA


class _Scratch:
    """One buffer for every tile-sized temporary of a call, reused across units and tiles.

    A fresh large allocation costs its first-touch page faults on every call (about a
    tenth of the products' time on the 10-output kernels here); one buffer pays once.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device
        self.buffers: dict[str, Tensor] = {}

    def take(self, name: str, *shape: int) -> Tensor:
        numel = 1
        for size in shape:
            numel *= size
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < numel:
            buf = self.buffers[name] = torch.empty(numel, dtype=self.dtype, device=self.device)
        return buf[:numel].view(shape)


def _aa(s1: _Compact, s2: _Compact, output: str, scratch: _Scratch) -> Tensor:
    """A₁A₂ᵀ (+ 1 with a bias) (b1, b2), shaped to multiply a storage tile."""
    b1 = s1.G.shape[1 if s1.k_major else 0]
    b2 = s2.G.shape[1 if s2.k_major else 0]
    AA = scratch.take("AA", b1, b2)
    if s1.A is None:  # bias only
        AA.fill_(1.0)
    elif s1.bias:
        AA.fill_(1.0).addmm_(s1.A, s2.A.T)
    else:
        torch.mm(s1.A, s2.A.T, out=AA)
    return _broadcast(AA, output)


def _accumulate(
    tile: Tensor, s1: _Compact, s2: _Compact, output: str, first: bool, scratch: _Scratch
) -> None:
    """Add one unit's kernel block (NOTE [structured kernel]) to a storage tile in place."""
    if s1.positions:      # Σ_{t,s} of dense blocks, one per pair of positions
        left, right = s1.blocks(), s2.blocks()
        for t, b1 in enumerate(left):
            for u, b2 in enumerate(right):
                _accumulate(tile, b1, b2, output, first and t == 0 and u == 0, scratch)
        return
    dense = s1.dense
    if first:
        _gram_factor(s1, s2, output, tile)
        if dense:
            tile.mul_(_aa(s1, s2, output, scratch))
        return
    if dense:
        GG = _gram_factor(s1, s2, output, scratch.take("GG", *tile.shape))
        tile.addcmul_(GG, _aa(s1, s2, output, scratch))
    elif output == "diagonal":
        tile.baddbmm_(s1.G, s2.G.transpose(1, 2))
    elif output == "full":
        _as_matrix(tile).addmm_(s1.G.reshape(-1, s1.G.shape[-1]), s2.G.reshape(-1, s2.G.shape[-1]).T)
    else:
        tile.addmm_(s1.G.reshape(s1.G.shape[0], -1), s2.G.reshape(s2.G.shape[0], -1).T)


def _tile(storage: Tensor, output: str, rows: slice, cols: slice) -> Tensor:
    if output == "full":
        return storage[rows, :, cols]
    if output == "diagonal":
        return storage[:, rows, cols]
    return storage[rows, cols]


_MIRROR_BLOCK = 256  # a 256 × 256 float32 source and destination stay in a core's L2


def _mirror(storage: Tensor, output: str, k: int) -> None:
    """Overwrite the strict lower triangle of a Gram with its upper one (NOTE [in-place assembly]).

    Only the upper triangle (columns ≥ rows) is read, which every tiling computes. A
    transposed copy through strided views runs at a fifth of memory speed on the CPU
    (0.16 s for a 7440 × 2560 float32 block here), so on the CPU it goes in 256 × 256
    blocks that stay in cache (0.034 s); on CUDA one pass over the whole matrix.
    """
    n = storage.shape[1] if output == "diagonal" else storage.shape[0]
    N = n * (k if output == "full" else 1)
    M = storage.reshape(-1, N, N)  # a view: storage is contiguous
    if storage.device.type != "cpu":
        upper = torch.triu(M, 1)
        M.triu_().add_(upper.transpose(1, 2))
        return
    B = _MIRROR_BLOCK
    for i0 in range(0, N, B):
        i1 = min(i0 + B, N)
        D = M[:, i0:i1, i0:i1]
        upper = torch.triu(D, 1)
        D.triu_().add_(upper.transpose(1, 2))
        for j0 in range(0, i0, B):
            M[:, i0:i1, j0 : j0 + B].copy_(M[:, j0 : j0 + B, i0:i1].transpose(1, 2))


# --------------------------------------------------------------------------- driver


def _side(
    model: nn.Module,
    units: list[Unit],
    names: Sequence[str],
    x: Tensor,
    k: int,
    output: str,
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
                    parts[index].append(_Compact.of(A, G, unit, output))
        del calls
    for name, count in seen_in.items():
        if name not in problems and count != n_chunks:
            problems[name] = "it is called for some examples only (data-dependent control flow)"
    return {i: _Compact.cat(p) for i, p in parts.items() if units[i].module_name not in problems}


def _capture_chunk(model: nn.Module, x: Tensor, k: int, dtype: torch.dtype, budget: int) -> int:
    """Examples per capture pass such that what it holds stays within ``budget / 2``.

    Per example a pass holds the forward's activations (``acts`` numbers, the sum of
    every leaf module's output), the k-batched gradients of the backward (at most about
    ``k·acts`` alive at once) and the captured G (``k·Σ d_out ≤ k·acts``).
    """
    acts = activation_numel(model, x[:1])
    per_example = (2 * k + 1) * acts * dtype.itemsize
    return max(1, (budget // 2) // per_example)


_MIN_TRIANGLE_TILE = 256


def _row_starts(n1: int, n2: int, k: int, output: str, itemsize: int, budget: int, symmetric: bool, device) -> list[int]:
    """Start rows of the tiles: temporaries of a tile (one product and A₁A₂ᵀ) fit in ``budget``."""
    per_row = {"full": k * k + 1, "trace": 2, "diagonal": k + 1}[output] * n2 * itemsize
    height = max(1, budget // per_row)
    if symmetric and device.type == "cpu":  # NOTE [in-place assembly]: ~5/8 of the products;
        # below 256 rows per tile the smaller products lose more speed than the triangle saves
        height = min(height, max(-(-n1 // 4), _MIN_TRIANGLE_TILE))
    return list(range(0, n1, height))


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

    Kernels are in the documented layout of :func:`telescope.kernels.empirical_ntk`
    (views of a storage in product order, NOTE [in-place assembly]). Cost: per side one
    forward and one k-batched backward through the activations (NOTE [output-gradient
    capture]); then per closed-form module ``n1·n2·(d_in + k²·d_out)`` multiply–adds
    (full output; ``k·d_out`` for trace and diagonal), about 5/8 of it for a Gram on the
    CPU; for modules applied at T > 1 positions ``(n1+n2)·k·T·d_in·d_out`` to form
    per-example gradients and ``n1·n2·k²·d_in·d_out`` to contract them. Memory: the
    kernel; per tile one product and one A₁A₂ᵀ, tiles sized to ``budget``; per side
    ``n·k·d_out`` captured numbers per dense layer (``n·k·d_in·d_out`` per-example
    gradients where T > 1); a capture pass holds at most ``budget / 2``.
    """
    plan = make_plan(model, names, group_by)
    dtype = dict(model.named_parameters())[names[0]].dtype
    symmetric = x2 is None
    x2_ = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2_.shape[0]
    device = x1.device
    storages: dict[str, Tensor] = {}
    units = list(plan.units)
    if units:
        chunk = _capture_chunk(model, x1, k, dtype, budget)
        problems: dict[str, str] = {}
        side1 = _side(model, units, names, x1, k, output, dtype, chunk, problems)
        side2 = side1 if symmetric else _side(model, units, names, x2_, k, output, dtype, chunk, problems)
        plan.reasons.update(problems)
        live = []
        for index, unit in enumerate(units):
            if unit.module_name in problems:
                plan.fallback[unit.key].extend(unit.names)
            elif index in side1 and index in side2:
                live.append(index)
            # else: unused on a side, a zero block (the key is zero-filled below if nothing else)
        for index in live:
            if units[index].key not in storages:
                storages[units[index].key] = torch.empty(_storage_shape(n1, n2, k, output), dtype=dtype, device=device)
        scratch = _Scratch(dtype, device)
        starts = _row_starts(n1, n2, k, output, dtype.itemsize, budget, symmetric, device)
        for r0, r1 in zip(starts, [*starts[1:], n1]):
            rows = slice(r0, r1)
            cols = slice(r0 if symmetric else 0, n2)
            written: set[str] = set()
            for index in live:
                key = units[index].key
                s1 = side1[index].examples(rows)
                s2 = side2[index].examples(cols)
                _accumulate(_tile(storages[key], output, rows, cols), s1, s2, output, key not in written, scratch)
                written.add(key)
        del side1, side2, scratch
        if symmetric:
            for storage in storages.values():
                _mirror(storage, output, k)
    result = {key: _STORAGE_TO_DOCUMENTED[output](s) for key, s in storages.items()}
    for module_name, reason in plan.reasons.items():
        logger.info("empirical_ntk(structured): module %r uses Jacobian rows: %s", module_name, reason)
    for key, group in plan.fallback.items():
        rows_kernel = jacobian_ntk(model, x1, x2, group, output, k, budget)
        if key in result:
            result[key] += rows_kernel
        else:
            result[key] = rows_kernel
    for unit in units:  # a unit unused on a side and nothing else in its group
        if unit.key not in result:
            result[unit.key] = torch.zeros(kernel_shape(n1, n2, k, output), dtype=dtype, device=device)
    return result
