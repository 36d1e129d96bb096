"""Products with a model's per-example Jacobians, without forming them where the model allows.

The smoother (lens/smoother.py) needs, at θ_{t−1} and every step, three products with the
Jacobian J (rows·k × p) of the model's outputs: J_all·Δ over all tracked points (Δ: p × L),
J_Bᵀ·E over the batch (E: |B|k × L) and, for the SGD kernel shortcut, kernel rows
J_all·diag(γ)·J_Bᵀ. :class:`JacobianProducts` gives them through :class:`Side`, the
per-example derivative information of one set of inputs.

# NOTE [structured products]
# For an nn.Linear layer z = W a + b inside f, ∂f_c(x)/∂W = δ_c(x) ⊗ a(x) with
# δ_c = ∂f_c/∂z and ∂f_c/∂b = δ_c (NOTE [structured kernel] in kernels/structured.py). One
# forward pass with hooks gives a(x) (n × in) and k backward passes to the layer outputs give
# δ(x) (n × k × out) for every Linear layer at once: ordinary batched autograd, no per-example
# Jacobian. The products then read, per layer (Δ_W: out × in × L, viewed from Δ's rows):
#   J·Δ      [x,c,l] = Σ_o δ_c(x)_o (a(x) Δ_W[:, :, l]ᵀ)_o + δ_c(x)·Δ_b[:, l]
#            "activations first": T = A (n×in) @ Δ_W' (in × out·L), then one batched
#            (k×out)(out×L) product per point: 2·n·in·out·L + 2·n·k·out·L flops and an
#            n·out·L temporary; or "rows": form δ ⊗ a (n·k × out·in, 2 flops per entry) and one
#            GEMM with Δ_W: 2·n·k·in·out·L flops, an n·k·in·out temporary. We take activations
#            first when L ≤ k·in (the temporary is then no larger; for k > 1 it also saves a
#            factor k of flops), rows otherwise (the exact smoother: L = nk+1 ≫ in).
#   J_Bᵀ·E   G_W[o,i,l] = Σ_{b,c} δ_{b,c,o} a_{b,i} E[bc,l]: δᵀ (out × |B|k) @ (a ⊗ E) (|B|k × in·L)
#            straight into G's rows when L < out, else rows δ ⊗ a and (δ⊗a)ᵀ E.
#   kernel   J(x)·diag(γ)·J(x')ᵀ = Σ_layers (δ(x)δ(x')ᵀ) ⊙ (γ_W a(x)·a(x') + γ_b):
#            n·m·(in + k²·out) multiply-adds per layer instead of n·m·k²·in·out.
# The multiply-adds of J·Δ and J_Bᵀ·E are at most those of the dense products with J (the
# arithmetic floor of the step); what goes is building J by vmap(jacrev) (k vmapped backward
# passes per example, the dominant cost of the sketch's step) and, in "activations first"
# order, the n·k·p Jacobian in memory.
# Parameters of anything else (another module type, a shared weight, a module called twice
# or on non-(n, in) inputs) keep Jacobian rows by vmap(jacrev), for those parameters only.
# Static reasons are found when the plan is made, runtime ones (number of calls, input
# shapes) at every capture; either is logged at INFO, and the module uses jacrev rows from
# then on. A side already built keeps its own (equally exact) form; kernel rows between sides
# of different forms build δ ⊗ a rows. (kernels/structured.py also checks for an input
# changed in place after the call; that cannot happen here: the layer saves its input for
# its weight's gradient, so the model's own backward pass would fail.) An in-place op downstream
# of a layer (ReLU(inplace=True)) would alter the tensor whose gradient is δ: the capture notices
# it by the tensor's version counter, and from then on its forward hooks hand the rest of the
# network a copy of each layer's output (one copy per layer per capture, saved for models
# without such ops).
#
# NOTE [token and sequence layers]
# Transformers apply their layers at T positions per example. With the capture's A and δ
# batch-first, (n, T, in) and (n, k, T, out), the Linear forms above hold with a sum over t:
#   nn.Linear on (n, *S, in)  J·Δ [x,c,l] = Σ_{t,o} δ_c(x)_{t,o} (A(x)_t Δ_W[:, :, l]ᵀ)_o: activations
#            first is one GEMM (n·T × in)(in × out·L) and one batched (k × T·out)(T·out × L) product
#            per point; Jᵀ·E: M = δᵀE per point (n, T·out, L), then G_W = Σ_{x,t} M ⊗ A (one einsum);
#            rows δ ⊗ a summed over t when L > k·in.
#   nn.Embedding z_t = W[v_t] (W: V × d) is the Linear form with a one-hot input, done by indexing:
#            J·Δ gathers Δ_W's rows of the tokens (n·T × d·L) and contracts them with δ per point;
#            Jᵀ·E scatters M into G_W's token rows (index_add_); n·T·d·L numbers, never V·d per point.
#            padding_idx rows get no gradient (as in PyTorch): δ is zeroed at those positions.
#   nn.LayerNorm y = γ ⊙ x̂ + β (x̂ the normalised input, recomputed from the captured input in
#            the state dtype): ∂f_c/∂γ = Σ_t δ_{c,t} ⊙ x̂_t and ∂f_c/∂β = Σ_t δ_{c,t} are d numbers
#            per output: the capture stores these rows (n, k, d) themselves.
# The kernel rows of these layers use their per-example rows (the pairwise T² form does not pay).
# A layer's first input axis must be the batch (checked: its size must equal n at every capture);
# a sequence-first layout whose sequence length happened to equal n could not be told apart.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.func import functional_call, jacrev, vmap

from telescope.errors import ConfigError
from telescope.kernels.fastpath import no_fused_fastpath
from telescope.kernels.structured import make_plan
from telescope.lens.recorder import eval_mode

log = logging.getLogger(__name__)



class JacobianMethod(str, enum.Enum):
    """How :class:`JacobianProducts` (and the smoother, ``SmootherSpec(jacobian_method=...)``) form
    products with the per-example Jacobian J (n·k × p) of n inputs; strings accepted.

    ``AUTO``
        nn.Linear layers in closed form (NOTE [structured products]): one forward and k backward
        passes per chunk of inputs, n·(in + k·out) stored numbers per layer, products with at most
        the dense products' multiply-adds; vmap(jacrev) rows for every other parameter. The default:
        exact, and it removes the cost of forming J, which dominated the sketch's step.
    ``JACREV``
        vmap(jacrev) rows for every parameter: k vmapped backward passes per input and n·k·p numbers
        per chunk. The reference the tests compare ``AUTO`` against; pick it only to check.
    """

    AUTO = "auto"
    JACREV = "jacrev"

    def __str__(self) -> str:
        return self.value


METHODS = tuple(m.value for m in JacobianMethod)


CLOSED_FORM = {nn.Linear: "linear", nn.Embedding: "embedding", nn.LayerNorm: "layernorm"}
"""Module types (exact type) with closed-form products, and their kind (NOTE [structured products],
NOTE [token and sequence layers])."""


@dataclass(frozen=True)
class LinearUnit:
    """One nn.Linear, nn.Embedding or nn.LayerNorm whose trainable weight and/or bias are treated in
    closed form (the name is historical: every kind is linear in its parameters).

    ``weight``/``bias``: (name, lo, hi) of the parameter in the flat p-vector, or None when that
    parameter is not trained. ``d_in``/``d_out``: in/out features (Linear), vocabulary/embedding size
    (Embedding), normalised size twice (LayerNorm).
    """

    module_name: str
    module: nn.Module
    weight: tuple[str, int, int] | None
    bias: tuple[str, int, int] | None

    @property
    def kind(self) -> str:
        return CLOSED_FORM[type(self.module)]

    @property
    def d_in(self) -> int:
        m = self.module
        if isinstance(m, nn.Embedding):
            return m.num_embeddings
        if isinstance(m, nn.LayerNorm):
            return math.prod(m.normalized_shape)
        return m.in_features

    @property
    def d_out(self) -> int:
        m = self.module
        if isinstance(m, nn.Embedding):
            return m.embedding_dim
        if isinstance(m, nn.LayerNorm):
            return math.prod(m.normalized_shape)
        return m.out_features

    @property
    def names(self) -> list[str]:
        return [p[0] for p in (self.weight, self.bias) if p is not None]


@dataclass
class Side:
    """Derivative information of the model's outputs on n inputs (one chunk or the batch).

    ``feats[i] = (A, D)``: unit i's input activations A (n, in) and output gradients
    D (n, k, out), state dtype; for layers applied at T positions (NOTE [token and sequence
    layers]) A (n, T, in) (Embedding: the tokens, (n, T) int64) and D (n, k, T, out); for a
    LayerNorm the rows (∂f/∂γ, ∂f/∂β), each (n, k, d). ``runs``: ``[(lo, hi, J)]``, Jacobian rows J (n·k, hi − lo) of
    the parameters in [lo, hi) of the flat p-vector that are not in ``feats`` (vmap(jacrev)).
    """

    n: int
    k: int
    feats: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    runs: list[tuple[int, int, Tensor]] = field(default_factory=list)

    def rows(self, start: int, stop: int) -> "Side":
        """The side of inputs [start, stop) (views; the side itself when that is all of it)."""
        if start == 0 and stop == self.n:
            return self
        return Side(stop - start, self.k, {i: (A[start:stop], D[start:stop]) for i, (A, D) in self.feats.items()},
                    [(lo, hi, J[start * self.k:stop * self.k]) for lo, hi, J in self.runs])


class Prepared:
    """Δ (p × L, or a p-vector) for the products of :class:`JacobianProducts`, with per-layer views made
    once (Δ is a buffer reused step after step: a view is an operation per step otherwise) and the
    "activations first" rearrangement made once per step (call :meth:`new_step` after Δ changed)."""

    def __init__(self, D: Tensor):
        self.D = D
        self._act: dict[int, Tensor] = {}
        self._views: dict[tuple, Tensor] = {}

    def new_step(self) -> None:
        """Forget the rearrangements of the previous Δ (its views stay valid)."""
        self._act.clear()

    def rows(self, lo: int, hi: int, shape: tuple[int, ...] | None = None) -> Tensor:
        """Rows [lo, hi) of Δ, viewed as ``shape`` if given."""
        key = (lo, hi, shape)
        if key not in self._views:
            part = self.D[lo:hi]
            self._views[key] = part if shape is None else part.view(shape)
        return self._views[key]

    def activations_first(self, index: int, unit: LinearUnit) -> Tensor:
        """Δ_W as (in, out·L): entry [i, o·L + l] = Δ[W(o, i), l]; one copy of p_W·L numbers."""
        if index not in self._act:
            _, lo, hi = unit.weight
            L = self.D.shape[1]
            key = ("T", index)
            if key not in self._views:
                self._views[key] = self.D[lo:hi].view(unit.d_out, unit.d_in, L).transpose(0, 1)
            self._act[index] = self._views[key].reshape(unit.d_in, unit.d_out * L)
        return self._act[index]


class JacobianProducts:
    """J·Δ, J_Bᵀ·E and kernel rows for a model's trainable parameters (NOTE [structured products]).

    Parameters
    ----------
    model : nn.Module
    names, sizes : the trainable parameters in the order of the flat p-vector, and their numel.
    k : outputs per example.
    dtype : dtype of the results (the smoother's state dtype).
    method : :class:`JacobianMethod` or "auto" | "jacrev"
        ``"auto"``: closed-form products for nn.Linear layers, vmap(jacrev) rows for every other
        parameter; ``"jacrev"``: vmap(jacrev) rows for every parameter (the reference).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], sizes: Sequence[int], k: int,
                 dtype: torch.dtype, method: JacobianMethod | str = JacobianMethod.AUTO):
        if method not in METHODS:
            raise ConfigError(f"JacobianProducts(method={method!r}): choose one of {', '.join(METHODS)}")
        method = JacobianMethod(method)
        self.model, self.names, self.k, self.dtype = model, list(names), int(k), dtype
        self.device = dict(model.named_parameters())[self.names[0]].device
        self.offsets = {}
        lo = 0
        for nm, s in zip(self.names, sizes):
            self.offsets[nm] = (lo, lo + int(s))
            lo += int(s)
        self.p = lo
        self.units: list[LinearUnit] = []
        self.problems: dict[int, str] = {}            # unit index -> why it now uses jacrev rows
        self._clone_outputs = False                   # set once a layer output is seen changed in place
        reasons: dict[str, str] = {}
        if method == "auto":
            plan = make_plan(model, self.names, None)
            reasons.update(plan.reasons)
            found = [(u.module_name, u.module, u.names) for u in plan.units]
            found += self._layer_norms(model, reasons)
            for module_name, module, unit_names in found:
                if type(module) not in CLOSED_FORM:
                    reasons[module_name] = (f"{type(module).__name__}: the smoother's structured products "
                                            "cover nn.Linear, nn.Embedding and nn.LayerNorm only")
                    continue
                pn = {n.rsplit(".", 1)[-1]: n for n in unit_names}
                w = (pn["weight"], *self.offsets[pn["weight"]]) if "weight" in pn else None
                b = (pn["bias"], *self.offsets[pn["bias"]]) if "bias" in pn else None
                self.units.append(LinearUnit(module_name, module, w, b))
        else:
            reasons["(all)"] = "jacobian method 'jacrev' requested"
        self.reasons = reasons
        self._log_plan()

    # ------------------------------------------------------------------ plan
    def _layer_norms(self, model: nn.Module, reasons: dict[str, str]) -> list[tuple[str, nn.Module, tuple[str, ...]]]:
        """nn.LayerNorm modules whose trained affine parameters take the closed form (make_plan of
        kernels/structured.py leaves them to Jacobian rows); their entries leave ``reasons``."""
        uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
        canonical = {id(p): n for n, p in model.named_parameters()}
        wanted, out = set(self.names), []
        for module_name, module in model.named_modules():
            if type(module) is not nn.LayerNorm or module_name not in reasons:
                continue
            direct = list(module.named_parameters(recurse=False))
            if any(uses[id(p)] > 1 for _, p in direct) or any(pn not in ("weight", "bias") for pn, _ in direct):
                continue
            names = tuple(canonical[id(p)] for _, p in direct if canonical[id(p)] in wanted)
            if names:
                del reasons[module_name]
                out.append((module_name, module, names))
        return out

    def _log_plan(self) -> None:
        covered = {nm for i in self.active_units() for nm in self.units[i].names}
        rest = [nm for nm in self.names if nm not in covered]
        log.info("smoother: structured Jacobian products for %d layer(s) %s; vmap(jacrev) rows for "
                 "%d parameter tensor(s)%s", len(self.active_units()),
                 [self.units[i].module_name for i in self.active_units()], len(rest),
                 "".join(f"; {m!r}: {r}" for m, r in self.reasons.items()))

    def active_units(self) -> list[int]:
        return [i for i in range(len(self.units)) if i not in self.problems]

    @property
    def structured(self) -> bool:
        """Whether any layer currently uses the closed-form products."""
        return bool(self.active_units())

    @property
    def fully_structured(self) -> bool:
        """Whether every parameter currently uses the closed-form products (no Jacobian rows): a side
        then holds activations-sized numbers only, n·Σ(in + k·out), whatever p."""
        covered = {nm for i in self.active_units() for nm in self.units[i].names}
        return all(nm in covered for nm in self.names)

    # ------------------------------------------------------------------ capture
    def side(self, params: Mapping[str, Tensor], x: Tensor) -> Side:
        """Side for inputs x (n, ...) at ``params``: one forward and k backward passes for the Linear
        layers, plus vmap(jacrev) rows for every other parameter.

        Cost: a forward and k backward passes on n inputs (the backward passes stop at the layer
        outputs: no parameter gradients), n·(in + k·out) stored numbers per layer; the jacrev rows
        cost k vmapped backward passes and n·k·p_rest numbers.
        """
        n, k = int(x.shape[0]), self.k
        side = Side(n, k)
        active = self.active_units()
        if active:
            side.feats = self._capture(params, x, active)
        rest = [nm for nm in self.names if nm not in {m for i in side.feats for m in self.units[i].names}]
        if rest:
            side.runs = self._rows(params, x, rest)
        return side

    def _capture(self, params: Mapping[str, Tensor], x: Tensor, active: list[int]) -> dict[int, tuple[Tensor, Tensor]]:
        n, k = int(x.shape[0]), self.k
        records: dict[int, list] = {i: [] for i in active}

        clone = self._clone_outputs

        def make_hook(i: int):
            def hook(_module, args, kwargs, output):
                inp = args[0] if args else next(iter(kwargs.values()))
                records[i].append((inp, output, output._version))
                # later in-place ops (ReLU(inplace=True)) must act on a copy, or δ would be taken after them
                return output.clone() if clone else None
            return hook

        handles = [self.units[i].module.register_forward_hook(make_hook(i), with_kwargs=True) for i in active]
        try:
            with torch.enable_grad(), eval_mode(self.model), no_fused_fastpath():
                out = functional_call(self.model, *self._inputs(params, x))
                out = out.reshape(n, -1) if (k > 1 or out.ndim != 1) else out
        finally:
            for h in handles:
                h.remove()
        if not clone and any(rec[1]._version != rec[2] for i in active for rec in records[i]):
            log.info("smoother: a layer output is changed in place downstream; capturing copies from now on")
            self._clone_outputs = True
            return self._capture(params, x, active)
        good: list[int] = []
        for i in active:
            problem = self._runtime_problem(self.units[i], records[i], n)
            if problem is not None:
                self.problems[i] = problem
                self.reasons[self.units[i].module_name] = problem
                log.info("smoother: module %r uses vmap(jacrev) rows from now on: %s", self.units[i].module_name,
                         problem)
            else:
                good.append(i)
        zs = [records[i][0][1] for i in good]
        if k == 1 and zs and out.requires_grad:                                  # δ straight from the gradients
            with torch.enable_grad():
                grads = torch.autograd.grad(out.sum(), zs, allow_unused=True)
            D = {i: (self._cast(g).unsqueeze(1) if g is not None else
                     torch.zeros(n, 1, *z.shape[1:], device=x.device, dtype=self.dtype))
                 for i, g, z in zip(good, grads, zs)}
        else:
            D = {i: torch.zeros(n, k, *z.shape[1:], device=x.device, dtype=self.dtype) for i, z in zip(good, zs)}
            if zs and out.requires_grad:
                for c in range(k):
                    with torch.enable_grad():
                        grads = torch.autograd.grad(out[:, c].sum(), zs, retain_graph=c < k - 1, allow_unused=True)
                    for i, g in zip(good, grads):
                        if g is not None:
                            D[i][:, c] = g
        with torch.no_grad():                                                    # activations, detached
            return {i: ((records[i][0][0].detach() if records[i][0][0].dtype == self.dtype
                         else records[i][0][0].to(self.dtype), D[i])
                        if self.units[i].kind == "linear" and records[i][0][0].ndim == 2
                        else self._token_feats(self.units[i], records[i][0][0].detach(), D[i], n, k))
                    for i in good}

    def _token_feats(self, u: LinearUnit, inp: Tensor, D: Tensor, n: int, k: int) -> tuple[Tensor, Tensor]:
        """Side features of a layer applied at T positions, an Embedding or a LayerNorm
        (NOTE [token and sequence layers])."""
        if u.kind == "linear":
            A = self._cast(inp).reshape(n, -1, u.d_in)
            return A, D.reshape(n, k, A.shape[1], u.d_out)
        if u.kind == "embedding":
            tokens = inp.reshape(n, -1)
            D = D.reshape(n, k, tokens.shape[1], u.d_out)
            if u.module.padding_idx is not None:                                 # no gradient at padding
                D = D * (tokens != u.module.padding_idx)[:, None, :, None].to(D.dtype)
            return tokens, D
        m = u.module                                                             # LayerNorm: the rows themselves
        xhat = F.layer_norm(self._cast(inp), m.normalized_shape, eps=m.eps).reshape(n, -1, u.d_out)
        D = D.reshape(n, k, xhat.shape[1], u.d_out)
        return torch.einsum("nktd,ntd->nkd", D, xhat), D.sum(2)

    def _cast(self, t: Tensor) -> Tensor:
        return t if t.dtype == self.dtype else t.to(self.dtype)

    def _inputs(self, params: Mapping[str, Tensor], x: Tensor) -> tuple[dict[str, Tensor], tuple[Tensor]]:
        """Arguments of the capture's forward pass: the layer outputs must require grad, since their
        gradients δ are all the capture differentiates (no gradient of a parameter or an input is
        computed). A floating-point input that requires grad does that with one operation; integer
        inputs (embeddings) need the parameters as leaves that require grad."""
        if x.is_floating_point():
            return dict(params), (x.detach().requires_grad_(True),)
        return {nm: params[nm].detach().requires_grad_(True) for nm in self.names}, (x,)

    def _runtime_problem(self, u: LinearUnit, calls: list, n: int) -> str | None:
        if len(calls) != 1:
            return f"the module is called {len(calls)} times in one forward"
        inp, output, _ = calls[0]
        least = 1 + len(u.module.normalized_shape) if u.kind == "layernorm" else 1 if u.kind == "embedding" else 2
        if inp.ndim < least or inp.shape[0] != n:
            return f"its input has shape {tuple(inp.shape)}, not (n, ...) with the batch first, n = {n}"
        if not output.requires_grad:
            return "its output depends neither on the inputs nor on the trained parameters"
        return None

    def _rows(self, params: Mapping[str, Tensor], x: Tensor, names: list[str]) -> list[tuple[int, int, Tensor]]:
        """Jacobian rows of ``names`` by vmap(jacrev), as runs of contiguous p-vector columns."""
        model = self.model
        fixed = {nm: params[nm] for nm in self.names if nm not in names}

        def f(p, xi):
            return functional_call(model, {**fixed, **p}, (xi.unsqueeze(0),)).reshape(-1)

        with eval_mode(model), no_fused_fastpath():
            jac = vmap(jacrev(f), in_dims=(None, 0))({nm: params[nm] for nm in names}, x)
        rows = x.shape[0] * self.k
        width = sum(self.offsets[nm][1] - self.offsets[nm][0] for nm in names)
        J = torch.empty(rows, width, device=x.device, dtype=self.dtype)
        runs: list[list] = []
        col = 0
        for nm in names:
            lo, hi = self.offsets[nm]
            J[:, col:col + hi - lo].copy_(jac[nm].reshape(rows, -1))          # one pass: place and cast
            if runs and runs[-1][1] == lo:
                runs[-1][1] = hi
            else:
                runs.append([lo, hi, col])
            col += hi - lo
        return [(lo, hi, J[:, c:c + hi - lo]) for lo, hi, c in runs]

    def sides(self, params: Mapping[str, Tensor], x: Tensor, chunk: int) -> Iterator[tuple[slice, Side]]:
        """(rows of the result, Side) for x in chunks of ``chunk`` inputs."""
        for start in range(0, x.shape[0], chunk):
            stop = min(start + chunk, x.shape[0])
            yield slice(start * self.k, stop * self.k), self.side(params, x[start:stop])

    # ------------------------------------------------------------------ products
    def apply(self, side: Side, prep: Prepared, out: Tensor) -> None:
        """out (n·k, L) += J·Δ (Δ = prep.D, p × L)."""
        n, k, L = side.n, side.k, prep.D.shape[1]
        out3 = None
        for i, (A, Dl) in side.feats.items():
            u = self.units[i]
            if u.kind != "linear" or A.ndim != 2:
                out3 = out.view(n, k, L) if out3 is None else out3
                self._apply_tokens(i, u, A, Dl, prep, out, out3)
                continue
            if u.weight is not None:
                _, lo, hi = u.weight
                if L <= k * u.d_in:                                               # activations first
                    T = torch.mm(A, prep.activations_first(i, u))                 # (n, out·L)
                    out3 = out.view(n, k, L) if out3 is None else out3
                    out3.baddbmm_(Dl, T.view(n, u.d_out, L))
                else:                                                             # rows δ ⊗ a
                    J = (Dl[:, :, :, None] * A[:, None, None, :]).reshape(n * k, -1)
                    out.addmm_(J, prep.rows(lo, hi))
            if u.bias is not None:
                _, lo, hi = u.bias
                out.addmm_(Dl.view(n * k, u.d_out), prep.rows(lo, hi))
        for lo, hi, J in side.runs:
            out.addmm_(J, prep.rows(lo, hi))

    def _apply_tokens(self, i: int, u: LinearUnit, A: Tensor, Dl: Tensor, prep: Prepared, out: Tensor,
                      out3: Tensor) -> None:
        """out += J·Δ for a sequence Linear, an Embedding or a LayerNorm (NOTE [token and sequence layers])."""
        n, k, L = Dl.shape[0], Dl.shape[1], prep.D.shape[1]
        if u.kind == "layernorm":
            for rows, par in ((A, u.weight), (Dl, u.bias)):
                if par is not None:
                    out.addmm_(rows.reshape(n * k, u.d_out), prep.rows(par[1], par[2]))
            return
        T = Dl.shape[2]
        Dk = Dl.reshape(n, k, T * u.d_out)
        if u.kind == "embedding":
            if u.weight is not None:
                table = prep.rows(u.weight[1], u.weight[2], (u.d_in, u.d_out * L))
                out3.baddbmm_(Dk, table.index_select(0, A.reshape(-1)).view(n, T * u.d_out, L))
            return
        if u.weight is not None:
            _, lo, hi = u.weight
            if L <= k * u.d_in:                                                   # activations first
                Tm = torch.mm(A.reshape(n * T, u.d_in), prep.activations_first(i, u))     # (n·T, out·L)
                out3.baddbmm_(Dk, Tm.view(n, T * u.d_out, L))
            else:
                out.addmm_(self._weight_rows(u, A, Dl), prep.rows(lo, hi))
        if u.bias is not None:
            out.addmm_(Dl.sum(2).reshape(n * k, u.d_out), prep.rows(u.bias[1], u.bias[2]))

    @staticmethod
    def _weight_rows(u: LinearUnit, A: Tensor, Dl: Tensor) -> Tensor:
        """Per-example rows (n·k, numel) of the weight of a sequence Linear (Σ_t δ_t ⊗ a_t) or an
        Embedding (Σ_t δ_t at row v_t)."""
        n, k = Dl.shape[0], Dl.shape[1]
        if u.kind == "embedding":
            onehot = F.one_hot(A, u.d_in).to(Dl.dtype)                               # (n, T, V)
            return torch.einsum("ntv,nkto->nkvo", onehot, Dl).reshape(n * k, -1)
        return torch.einsum("nkto,nti->nkoi", Dl, A).reshape(n * k, -1)

    def apply_vector(self, side: Side, v: Tensor | Prepared) -> Tensor:
        """J·v (n·k,) for a parameter-space vector v (p,) (or a :class:`Prepared` of one, for cached views).

        Per Linear layer one ``linear`` and one batched product: Σ_o δ_c(x)_o (W_v a(x) + b_v)_o."""
        prep = v if isinstance(v, Prepared) else Prepared(v)
        n, k = side.n, side.k
        res = None                                                                # (n, k, 1)
        for i, (A, Dl) in side.feats.items():
            u = self.units[i]
            if u.kind != "linear" or A.ndim != 2:
                T = self._vector_tokens(u, A, Dl, prep)
                res = T if res is None else res.add_(T)
                continue
            W = prep.rows(*u.weight[1:], (u.d_out, u.d_in)) if u.weight is not None else None
            b = prep.rows(*u.bias[1:]) if u.bias is not None else None
            T = F.linear(A, W, b) if W is not None else b.expand(n, u.d_out)     # (n, out)
            T = T.unsqueeze(2)
            res = torch.bmm(Dl, T) if res is None else res.baddbmm_(Dl, T)
        res = torch.zeros(n * k, device=self.device, dtype=self.dtype) if res is None else res.view(n * k)
        for lo, hi, J in side.runs:
            res.addmv_(J, prep.rows(lo, hi))
        return res

    def _vector_tokens(self, u: LinearUnit, A: Tensor, Dl: Tensor, prep: Prepared) -> Tensor:
        """J·v (n, k, 1) of a sequence Linear, an Embedding or a LayerNorm."""
        n, k = Dl.shape[0], Dl.shape[1]
        if u.kind == "layernorm":
            res = torch.zeros(n * k, 1, device=Dl.device, dtype=self.dtype)
            for rows, par in ((A, u.weight), (Dl, u.bias)):
                if par is not None:
                    res.addmm_(rows.reshape(n * k, u.d_out), prep.rows(par[1], par[2]).view(-1, 1))
            return res.view(n, k, 1)
        T = Dl.shape[2]
        if u.kind == "embedding":
            Tv = (F.embedding(A, prep.rows(u.weight[1], u.weight[2], (u.d_in, u.d_out))) if u.weight is not None
                  else torch.zeros(n, T, u.d_out, device=Dl.device, dtype=self.dtype))
        else:
            W = prep.rows(*u.weight[1:], (u.d_out, u.d_in)) if u.weight is not None else None
            b = prep.rows(*u.bias[1:]) if u.bias is not None else None
            Tv = F.linear(A, W, b) if W is not None else b.expand(n, T, u.d_out)
        return torch.bmm(Dl.reshape(n, k, T * u.d_out), Tv.reshape(n, T * u.d_out, 1))

    def transpose_apply(self, side: Side, E: Tensor, out: Tensor | Prepared) -> None:
        """out (p × L) = Jᵀ·E for E (n·k × L); every row of out is written (``out`` may be a
        :class:`Prepared` of the p × L buffer, for cached views)."""
        prep = out if isinstance(out, Prepared) else Prepared(out)
        n, k, L = side.n, side.k, E.shape[1]
        E3 = None
        for i, (A, Dl) in side.feats.items():
            u = self.units[i]
            if u.kind != "linear" or A.ndim != 2:
                self._transpose_tokens(u, A, Dl, E, prep)
                continue
            DkT = Dl.view(n * k, u.d_out).t()                                    # (out, n·k)
            if u.weight is not None:
                _, lo, hi = u.weight
                if L < u.d_out:                                                   # δᵀ (a ⊗ E)
                    Ak = A if k == 1 else A[:, None, :].expand(n, k, u.d_in).reshape(n * k, u.d_in)
                    E3 = E.unsqueeze(1) if E3 is None else E3
                    AE = torch.mul(Ak.unsqueeze(2), E3).view(n * k, u.d_in * L)
                    torch.mm(DkT, AE, out=prep.rows(lo, hi, (u.d_out, u.d_in * L)))
                else:                                                             # (δ ⊗ a)ᵀ E
                    J = (Dl[:, :, :, None] * A[:, None, None, :]).reshape(n * k, -1)
                    torch.mm(J.t(), E, out=prep.rows(lo, hi))
            if u.bias is not None:
                _, lo, hi = u.bias
                torch.mm(DkT, E, out=prep.rows(lo, hi))
        for lo, hi, J in side.runs:
            torch.mm(J.t(), E, out=prep.rows(lo, hi))

    def _transpose_tokens(self, u: LinearUnit, A: Tensor, Dl: Tensor, E: Tensor, prep: Prepared) -> None:
        """Rows of Jᵀ·E for a sequence Linear, an Embedding or a LayerNorm (NOTE [token and sequence layers])."""
        n, k, L = Dl.shape[0], Dl.shape[1], E.shape[1]
        if u.kind == "layernorm":
            for rows, par in ((A, u.weight), (Dl, u.bias)):
                if par is not None:
                    torch.mm(rows.reshape(n * k, u.d_out).t(), E, out=prep.rows(par[1], par[2]))
            return
        T = Dl.shape[2]
        M = torch.bmm(Dl.reshape(n, k, T * u.d_out).transpose(1, 2), E.view(n, k, L))   # (n, T·out, L)
        M = M.view(n * T, u.d_out, L)
        if u.kind == "embedding":
            if u.weight is not None:
                G = prep.rows(u.weight[1], u.weight[2], (u.d_in, u.d_out * L))
                G.zero_().index_add_(0, A.reshape(-1), M.view(n * T, u.d_out * L))
            return
        if u.weight is not None:
            G = prep.rows(u.weight[1], u.weight[2], (u.d_out, u.d_in, L))
            G.copy_(torch.einsum("zol,zi->oil", M, A.reshape(n * T, u.d_in)))
        if u.bias is not None:
            torch.sum(M, 0, out=prep.rows(u.bias[1], u.bias[2]))

    def _piece(self, side: Side, name: str) -> Tensor:
        """Jacobian rows (n·k, numel) of one parameter, formed from the side's features if needed."""
        lo, hi = self.offsets[name]
        for i, (A, Dl) in side.feats.items():
            u = self.units[i]
            if u.kind == "layernorm" and name in u.names:
                return (A if u.weight is not None and u.weight[0] == name else Dl).reshape(side.n * side.k, -1)
            if (u.kind != "linear" or A.ndim != 2) and name in u.names:
                if u.weight is not None and u.weight[0] == name:
                    return self._weight_rows(u, A, Dl)
                return Dl.sum(2).reshape(side.n * side.k, u.d_out)
            if u.weight is not None and u.weight[0] == name:
                return (Dl[:, :, :, None] * A[:, None, None, :]).reshape(side.n * side.k, -1)
            if u.bias is not None and u.bias[0] == name:
                return Dl.reshape(side.n * side.k, u.d_out)
        for rlo, rhi, J in side.runs:
            if rlo <= lo and hi <= rhi:
                return J[:, lo - rlo:hi - rlo]
        raise KeyError(name)                                      # every parameter is in feats or runs

    def kernel(self, side: Side, other: Side, lr: Mapping[str, float]) -> Tensor:
        """Kernel rows J(x)·diag(γ)·J(x')ᵀ (n·k, m·k), γ = ``lr[name]`` on each parameter's entries.

        Cost per Linear layer captured on both sides: n·m·(in + k²·out) multiply-adds; other
        parameters: n·m·k²·numel.
        """
        n, m, k = side.n, other.n, side.k
        K = torch.zeros(n * k, m * k, device=self.device, dtype=self.dtype)
        both = [i for i in side.feats if i in other.feats and self.units[i].kind == "linear"
                and side.feats[i][0].ndim == 2 and other.feats[i][0].ndim == 2]
        for i in both:
            u = self.units[i]
            A1, D1 = side.feats[i]
            A2, D2 = other.feats[i]
            DD = D1.reshape(n * k, u.d_out) @ D2.reshape(m * k, u.d_out).T               # (nk, mk)
            lw = lr[u.weight[0]] if u.weight is not None else 0.0
            lb = lr[u.bias[0]] if u.bias is not None else 0.0
            scale = (A1 @ A2.T).mul_(lw).add_(lb)                                        # (n, m)
            K.view(n, k, m, k).addcmul_(DD.view(n, k, m, k), scale[:, None, :, None])
        rest = [nm for nm in self.names if nm not in {x for i in both for x in self.units[i].names}]
        if rest:
            J1, J2, g = self._rest_rows(side, rest), self._rest_rows(other, rest), self._lr_vector(rest, lr)
            K.addmm_(J1 * g, J2.T)
        return K

    def _rest_rows(self, side: Side, names: list[str]) -> Tensor:
        if len(side.runs) == 1 and not side.feats:
            lo, hi, J = side.runs[0]
            if (lo, hi) == (self.offsets[names[0]][0], self.offsets[names[-1]][1]) \
                    and sum(self.offsets[nm][1] - self.offsets[nm][0] for nm in names) == hi - lo:
                return J
        return torch.cat([self._piece(side, nm) for nm in names], 1)

    def _lr_vector(self, names: list[str], lr: Mapping[str, float]) -> Tensor:
        return torch.cat([torch.full((self.offsets[nm][1] - self.offsets[nm][0],), float(lr[nm]), device=self.device,
                                     dtype=self.dtype) for nm in names])
