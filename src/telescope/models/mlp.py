"""Fully connected networks, and the large-initialisation scaling used for grokking."""

from __future__ import annotations

import torch
import torch.nn as nn

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class MLP(nn.Sequential):
    """``depth`` linear layers: d_in → width → … → width → d_out, activation between them.

    ``depth`` counts ``nn.Linear`` modules (Omnigrok's convention: a "3-layer" MLP is
    Linear–ReLU–Linear–ReLU–Linear). ``output`` = ``"sigmoid"`` appends a sigmoid.
    ``squeeze`` drops the last axis when ``d_out == 1``, so a scalar model returns (n,).
    Input (n, *shape) is flattened to (n, d_in).
    """

    def __init__(self, d_in: int, width: int, depth: int, d_out: int = 1, *,
                 activation: str = "relu", bias: bool = True, output: str | None = None,
                 squeeze: bool = True):
        if depth < 1:
            raise ValueError(f"MLP(depth={depth}): need at least one linear layer")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLP(activation={activation!r}): choose one of {sorted(_ACTIVATIONS)}")
        dims = [d_in] + [width] * (depth - 1) + [d_out]
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
            if i < depth - 1:
                layers.append(_ACTIVATIONS[activation]())
        if output == "sigmoid":
            layers.append(nn.Sigmoid())
        elif output is not None:
            raise ValueError(f"MLP(output={output!r}): choose None or 'sigmoid'")
        if squeeze and d_out == 1:
            layers.append(nn.Flatten(start_dim=0))
        super().__init__(*layers)

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]


@torch.no_grad()
def scale_init(model: nn.Module, alpha: float) -> nn.Module:
    """Multiply every parameter (weights and biases) by ``alpha`` in place (Omnigrok's α)."""
    for p in model.parameters():
        p.mul_(alpha)
    return model
