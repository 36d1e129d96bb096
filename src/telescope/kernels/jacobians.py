"""Per-example Jacobian paths: ``reference``, ``jacobian`` and ``ntk_vp``.

Notation used throughout ``telescope.kernels``: ``n1``, ``n2`` examples on the two
sides, ``k`` outputs per example (the model's per-example output, flattened), ``P``
differentiated parameters. ``J(x)`` is the ``(k, P)`` Jacobian of the outputs at ``x``
and the kernel block is ``K[i, j] = J(x1_i) J(x2_j)ᵀ`` of shape ``(k, k)``.

Every function here takes parameters as a plain ``dict[str, Tensor]`` (torch.func
style) and evaluates the model with :func:`torch.func.functional_call`, so the
model's own parameters are never modified and never accumulate ``.grad``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap


def model_outputs(model: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
    """``(n, k)``: the model's outputs on a batch, flattened per example."""
    out = functional_call(model, params, (x,))
    return out.reshape(out.shape[0], -1)


def detached_params(model: nn.Module, names: Sequence[str]) -> dict[str, Tensor]:
    """The named parameters, detached (no autograd history, no ``.grad``)."""
    named = dict(model.named_parameters())
    return {name: named[name].detach() for name in names}


def _single_example_fn(model: nn.Module):
    def f(params: dict[str, Tensor], xi: Tensor) -> Tensor:
        return model_outputs(model, params, xi.unsqueeze(0))[0]

    return f


def jacobian_rows(model: nn.Module, params: dict[str, Tensor], x: Tensor) -> dict[str, Tensor]:
    """Per-example Jacobians ``{name: (n, k, *param.shape)}`` by ``vmap(jacrev)``.

    Memory: ``n · k · P`` numbers for the result plus about as much again inside
    ``jacrev`` (it vmaps ``k`` vector–Jacobian products).
    """
    return vmap(jacrev(_single_example_fn(model)), in_dims=(None, 0))(params, x)


def contract_rows(rows1: dict[str, Tensor], rows2: dict[str, Tensor], output: str) -> Tensor:
    """Contract per-example Jacobian rows into a kernel block, summed over the dict.

    ``rows*[name]`` has shape ``(n, k, *)``. Returns ``(n1, n2)`` for ``trace``,
    ``(n1, n2, k, k)`` for ``full`` and ``(n1, n2, k)`` for ``diagonal``.
    Cost per entry of the dict: ``n1·n2·k²·p`` (full) or ``n1·n2·k·p`` (trace,
    diagonal) multiply–adds, one matrix product each.
    """
    total: Tensor | None = None
    for name, r1 in rows1.items():
        n1, k = r1.shape[0], r1.shape[1]
        a = r1.reshape(n1, k, -1)
        b = rows2[name].reshape(rows2[name].shape[0], k, -1)
        n2 = b.shape[0]
        if output == "full":
            block = (a.reshape(n1 * k, -1) @ b.reshape(n2 * k, -1).T).reshape(n1, k, n2, k)
            block = block.permute(0, 2, 1, 3)
        elif output == "trace":
            block = a.reshape(n1, -1) @ b.reshape(n2, -1).T
        else:  # diagonal
            block = torch.bmm(a.transpose(0, 1), b.permute(1, 2, 0)).permute(1, 2, 0)
        total = block if total is None else total + block
    if total is None:  # pragma: no cover - callers always pass at least one parameter
        raise ValueError("contract_rows: no parameters to contract")
    return total.contiguous()


def reduce_full(kernel: Tensor, output: str) -> Tensor:
    """Reduce a full ``(n1, n2, k, k)`` kernel to the requested output mode."""
    if output == "full":
        return kernel
    diag = kernel.diagonal(dim1=2, dim2=3)  # (n1, n2, k)
    if output == "trace":
        return diag.sum(-1)
    return diag.contiguous()


def kernel_shape(n1: int, n2: int, k: int, output: str) -> tuple[int, ...]:
    return {"trace": (n1, n2), "full": (n1, n2, k, k), "diagonal": (n1, n2, k)}[output]


def transpose_block(block: Tensor, output: str) -> Tensor:
    """``K(x2, x1)`` from ``K(x1, x2)``: swap the example axes (and output axes)."""
    if output == "full":
        return block.permute(1, 0, 3, 2)
    return block.transpose(0, 1)


# --------------------------------------------------------------------------- reference


def reference_ntk(
    model: nn.Module, x1: Tensor, x2: Tensor | None, names: Sequence[str], output: str, k: int
) -> Tensor:
    """The oracle: one ``jacrev`` per example, one ``(k, P) @ (P, k)`` per pair.

    Deliberately plain; every other implementation is tested against it.
    """
    params = detached_params(model, names)
    jac = jacrev(_single_example_fn(model))

    def row(xi: Tensor) -> Tensor:
        j = jac(params, xi)
        return torch.cat([j[name].reshape(k, -1) for name in names], dim=1)  # (k, P)

    rows1 = [row(x1[i]) for i in range(x1.shape[0])]
    rows2 = rows1 if x2 is None else [row(x2[j]) for j in range(x2.shape[0])]
    dtype = rows1[0].dtype if rows1 else rows2[0].dtype
    full = torch.empty(len(rows1), len(rows2), k, k, dtype=dtype, device=x1.device)
    for i, r1 in enumerate(rows1):
        for j, r2 in enumerate(rows2):
            full[i, j] = r1 @ r2.T
    return reduce_full(full, output)


# --------------------------------------------------------------------------- jacobian


def _chunk_size(budget: int, bytes_per_example: int) -> int:
    return max(1, int(budget // max(1, bytes_per_example)))


def jacobian_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None,
    names: Sequence[str],
    output: str,
    k: int,
    budget: int,
) -> Tensor:
    """Per-example Jacobians (``vmap(jacrev)``) contracted chunk by chunk.

    The examples of each side are processed in chunks of ``c`` examples with
    ``2·c·k·P·itemsize ≤ budget / 2`` (the factor 2 covers the copy made when
    ``jacrev``'s rows are reshaped for the contraction), so the two sides' Jacobians together stay within ``budget``.
    When ``x2`` is None only the upper block triangle is computed and mirrored.
    The Jacobians of ``x2`` are kept across chunks of ``x1`` when they fit in one
    chunk; otherwise they are recomputed (time traded for memory).
    """
    params = detached_params(model, names)
    itemsize = next(iter(params.values())).element_size()
    n_params = sum(p.numel() for p in params.values())
    chunk = _chunk_size(budget // 2, 2 * k * n_params * itemsize)
    symmetric = x2 is None
    x2_ = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2_.shape[0]
    dtype = next(iter(params.values())).dtype
    out = torch.empty(kernel_shape(n1, n2, k, output), dtype=dtype, device=x1.device)
    starts1 = list(range(0, n1, chunk))
    starts2 = list(range(0, n2, chunk))
    cached2: dict[int, dict[str, Tensor]] = {}
    for i0 in starts1:
        i1 = min(i0 + chunk, n1)
        rows1 = jacobian_rows(model, params, x1[i0:i1])
        for j0 in starts2:
            j1 = min(j0 + chunk, n2)
            if symmetric and j0 < i0:
                continue
            if symmetric and j0 == i0:
                rows2 = rows1
            elif j0 in cached2:
                rows2 = cached2[j0]
            else:
                rows2 = jacobian_rows(model, params, x2_[j0:j1])
                if len(starts2) == 1:
                    cached2[j0] = rows2
            block = contract_rows(rows1, rows2, output)
            out[i0:i1, j0:j1] = block
            if symmetric and j0 != i0:
                out[j0:j1, i0:i1] = transpose_block(block, output)
            del rows2
    return out


# --------------------------------------------------------------------------- ntk_vp


def activation_numel(model: nn.Module, x_one: Tensor) -> int:
    """Sum of the numels of every leaf module's output on one example (a memory estimate)."""
    total = 0

    def hook(_module, _inputs, out):
        nonlocal total
        if isinstance(out, Tensor):
            total += out.numel()

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if not list(m.children())
    ]
    try:
        with torch.no_grad():
            model(x_one)
    finally:
        for h in handles:
            h.remove()
    return max(total, 1)


def ntk_vp_ntk(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None,
    names: Sequence[str],
    output: str,
    k: int,
    budget: int,
) -> Tensor:
    """NTK–vector products, batched over the examples of ``x2``.

    For a chunk of ``c`` examples of ``x2`` the ``c·k`` Jacobian rows ``J(x2_j)[b]``
    (vector–Jacobian products) become tangents; one ``vmap``-ed ``jvp`` of the
    whole batch ``x1`` along each tangent gives the column ``K[:, j, :, b] = J(x1)
    J(x2_j)[b]ᵀ``. Only ``c·k`` parameter-sized tangents and ``c·k·n1`` activation
    tangents exist at a time (unlike the nested ``vmap(vmap(...))`` form, which
    allocates ``n1·n2·k`` parameter-sized tangents).
    """
    params = detached_params(model, names)
    first = next(iter(params.values()))
    itemsize, dtype = first.element_size(), first.dtype
    n_params = sum(p.numel() for p in params.values())
    x2_ = x1 if x2 is None else x2
    n1, n2 = x1.shape[0], x2_.shape[0]
    acts = activation_numel(model, x1[:1])
    per_example = k * itemsize * (4 * n_params + 3 * n1 * (acts + k))
    chunk = _chunk_size(budget, per_example)

    def forward_x1(p: dict[str, Tensor]) -> Tensor:
        return model_outputs(model, p, x1)

    def column(tangent: dict[str, Tensor]) -> Tensor:
        return jvp(forward_x1, (params,), (tangent,))[1]  # (n1, k_a)

    columns = vmap(column)
    # NOTE [forward-mode warning]: torch's first forward-mode AD call loads its jvp
    # decompositions through torch.jit.script, which warns DeprecationWarning in
    # torch >= 2.9. That warning is torch's own business, not the caller's.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
        return _ntk_vp_loop(model, params, x1, x2_, output, k, chunk, columns, dtype)


def _ntk_vp_loop(model, params, x1, x2_, output, k, chunk, columns, dtype) -> Tensor:
    n1, n2 = x1.shape[0], x2_.shape[0]
    out = torch.empty(kernel_shape(n1, n2, k, output), dtype=dtype, device=x1.device)
    for j0 in range(0, n2, chunk):
        j1 = min(j0 + chunk, n2)
        c = j1 - j0
        rows2 = jacobian_rows(model, params, x2_[j0:j1])
        tangents = {name: r.reshape(c * k, *r.shape[2:]) for name, r in rows2.items()}
        del rows2
        cols = columns(tangents)  # (c*k_b, n1, k_a)
        full = cols.reshape(c, k, n1, k).permute(2, 0, 3, 1)  # (n1, c, k_a, k_b)
        out[:, j0:j1] = reduce_full(full, output)
    return out

