"""Weight averaging through the telescoping lens (linear mode connectivity, paper §4.3).

Plain functions on parameter dicts (``{name: tensor}``, as ``model.named_parameters()``):
interpolation and its barriers, BatchNorm re-estimation, per-layer gradient change and the first-order
(telescoping) prediction of an averaged model, eq. (10) of the digest §7.1.

# NOTE [gradient change]
# G_l(t') = mean over inputs x and over the parameters j of layer l of
# (∂_{θ_j} f_{θ_b}(x) − ∂_{θ_j} f_{θ_a}(x))², where f is the pre-softmax logit of the
# true class of x (one gradient per example; the paper does not say which logit).
# A "layer" is a module that owns parameters directly (conv, linear, BatchNorm), named
# by its module path. Whole-model G is the parameter-count-weighted mean of the G_l.
# Kinds (paper Fig. 6 discusses "hidden", "final" and "BatchNorm" gradients): the output
# layer is the last nn.Linear in module order; BatchNorm layers; every other layer is
# hidden. A kind's G is the parameter-count-weighted mean of its layers' G_l, i.e. the
# mean over all the parameters of that kind.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
from torch.func import functional_call, grad, vmap

from telescope.errors import ShapeError
from telescope.lens.recorder import eval_mode

Params = Mapping[str, torch.Tensor]


def interpolate(a: Params, b: Params, alpha: float) -> dict[str, torch.Tensor]:
    """α·a + (1 − α)·b for every entry (floating tensors; integer buffers are taken from a)."""
    if set(a) != set(b):
        raise ShapeError(f"interpolate: the two parameter sets differ in names: {sorted(set(a) ^ set(b))[:5]}")
    return {k: (alpha * a[k] + (1 - alpha) * b[k]) if a[k].is_floating_point() else a[k].clone() for k in a}


def interpolation_barrier(alphas: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Barriers of a curve ``values`` (A,) along the interpolation path at ``alphas`` (A,), ascending
    from 0 (one endpoint) to 1 (the other): (value at the α nearest ½ minus the endpoints' mean,
    max over α of value minus the straight line between the endpoints)."""
    half = int(np.argmin(np.abs(alphas - 0.5)))
    line = alphas * values[-1] + (1 - alphas) * values[0]
    return float(values[half] - 0.5 * (values[0] + values[-1])), float(np.max(values - line))


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate every BatchNorm's running mean and variance on ``x`` (cumulative average).

    Averaged weights need their own statistics: the average of two children's running
    statistics is not the statistics of the averaged network.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m, m.momentum) for m in bns]
    modes = [(m, m.training) for m in model.modules()]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    model.train()
    try:
        for chunk in x.split(batch_size):
            model(chunk)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        for m, training in modes:
            m.training = training


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names grouped by the module that owns them directly (module path → names)."""
    groups: dict[str, list[str]] = {}
    for mod_name, module in model.named_modules():
        names = [f"{mod_name}.{p}" if mod_name else p for p, _ in module.named_parameters(recurse=False)]
        if names:
            groups[mod_name or "(root)"] = names
    return groups


def layer_kinds(model: nn.Module) -> dict[str, str]:
    """{layer: "output" | "batchnorm" | "hidden"} for every layer of :func:`layer_groups`."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    output = (linear[-1] or "(root)") if linear else None
    kinds = {}
    modules = dict(model.named_modules())
    for layer in layer_groups(model):
        module = modules["" if layer == "(root)" else layer]
        if layer == output:
            kinds[layer] = "output"
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            kinds[layer] = "batchnorm"
        else:
            kinds[layer] = "hidden"
    return kinds


def gradient_change_by_kind(model: nn.Module, change: Mapping[str, float]) -> dict[str, float]:
    """G per kind (NOTE [gradient change]) from :func:`gradient_change_by_layer`'s output.

    Weighted by parameter counts, so a kind's value is the mean over all its parameters;
    kinds the model lacks are absent.
    """
    groups = layer_groups(model)
    params = dict(model.named_parameters())
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for layer, kind in layer_kinds(model).items():
        size = sum(params[n].numel() for n in groups[layer])
        sums[kind] = sums.get(kind, 0.0) + change[layer] * size
        counts[kind] = counts.get(kind, 0) + size
    return {kind: sums[kind] / counts[kind] for kind in sums}


def true_class_gradients(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                         chunk_size: int = 64) -> dict[str, torch.Tensor]:
    """Per-example gradients of the true-class logit, {name: (n, *param.shape)}, eval mode."""
    buffers = dict(model.named_buffers())

    def logit(p, xi, yi):
        out = functional_call(model, {**buffers, **p}, (xi[None],))
        return out[0].gather(0, yi[None])[0]

    per_example = vmap(grad(logit), in_dims=(None, 0, 0))
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in params}
    with eval_mode(model):
        for xs, ys in zip(x.split(chunk_size), y.split(chunk_size)):
            g = per_example(dict(params), xs, ys)
            for k in params:
                parts[k].append(g[k].detach())
    return {k: torch.cat(v) for k, v in parts.items()}


def gradient_change_by_layer(model: nn.Module, params_a: Params, params_b: Params, x: torch.Tensor,
                             y: torch.Tensor, chunk_size: int = 64) -> dict[str, float]:
    """G_l for every layer and ``"all"`` (NOTE [gradient change]); zero when a == b."""
    ga = true_class_gradients(model, params_a, x, y, chunk_size)
    gb = true_class_gradients(model, params_b, x, y, chunk_size)
    out: dict[str, float] = {}
    total, count = 0.0, 0
    for layer, names in layer_groups(model).items():
        sq = sum(float(((gb[n] - ga[n]) ** 2).sum()) for n in names if n in ga)
        size = sum(ga[n][0].numel() for n in names if n in ga)
        if size:
            out[layer] = sq / (size * x.shape[0])
            total += sq
            count += size
    out["all"] = total / (count * x.shape[0])
    return out


def first_order_prediction(model: nn.Module, params_base: Params, params_target: Params,
                           x: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """f_{θ_base}(x) + ∇f_{θ_base}(x)·(θ_target − θ_base): the telescoping prediction of an
    averaged model when gradients are frozen at θ_base (eval mode, buffers held fixed)."""
    buffers = dict(model.named_buffers())
    outs = []
    with torch.no_grad(), eval_mode(model), fwAD.dual_level():
        duals = {k: fwAD.make_dual(params_base[k], params_target[k] - params_base[k]) for k in params_base}
        for xs in x.split(chunk_size):
            primal, tangent = fwAD.unpack_dual(functional_call(model, {**buffers, **duals}, (xs,)))
            outs.append(primal + (tangent if tangent is not None else 0))
    return torch.cat(outs)
