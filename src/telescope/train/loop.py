"""A training loop you can read top to bottom.

``fit`` runs ``steps`` optimizer steps on mini-batches drawn from ``(x, y)`` and calls
each callback after every step. A :class:`telescope.Lens` passed as ``lens`` takes the
place of ``optimizer.step()`` so it sees every realised update. A non-finite loss stops
training with :class:`telescope.errors.DivergenceError` (callbacks have logged what came
before it).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Protocol, Sequence

import torch
import torch.nn as nn

from telescope.errors import ConfigError, DivergenceError


class Callback(Protocol):
    def __call__(self, step: int, loss: float) -> None: ...


def squared_loss(kind: str = "mse") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The squared losses the smoother understands (CONTRACT.md, SmootherSpec.loss).

    ``"mse"``: mean over batch and outputs of (f − y)²; ``"half_mse"``: half of that;
    ``"sum"``: the sum of (f − y)² over the batch and outputs.
    """
    if kind == "mse":
        return lambda f, y: torch.nn.functional.mse_loss(f, y)
    if kind == "half_mse":
        return lambda f, y: 0.5 * torch.nn.functional.mse_loss(f, y)
    if kind == "sum":
        return lambda f, y: torch.nn.functional.mse_loss(f, y, reduction="sum")
    raise ConfigError(f"squared_loss(kind={kind!r}): choose 'mse', 'half_mse' or 'sum'")


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless epochs of shuffled index batches; the last short batch of an epoch is dropped
    unless it would be the only one (``batch_size >= n`` gives full-batch steps)."""
    if batch_size >= n:
        idx = torch.arange(n)
        while True:
            yield idx
    per_epoch = n // batch_size
    while True:
        perm = torch.randperm(n, generator=generator)
        for b in range(per_epoch):
            yield perm[b * batch_size:(b + 1) * batch_size]


def make_optimizer(name: str, params, *, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0, betas: Sequence[float] = (0.9, 0.999),
                   nesterov: bool = False) -> torch.optim.Optimizer:
    """``sgd`` (with optional momentum / coupled weight decay), ``adam`` or ``adamw``."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    raise ConfigError(f"make_optimizer(name={name!r}): choose 'sgd', 'adam' or 'adamw'")


def fit(model: nn.Module, optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int,
        generator: torch.Generator, lens=None, scheduler=None,
        callbacks: Sequence[Callback] = (), progress=None, start_step: int = 0) -> int:
    """Train for ``steps`` steps; returns the number of the last step taken.

    Step ``t`` (1-based) draws batch B_t, computes the loss, back-propagates and steps
    (through ``lens.step(optimizer, batch=B_t)`` when a lens is given), then calls every
    callback with ``(t, loss)``.
    """
    model.train()
    stream = batches(x.shape[0], batch_size, generator)
    step = start_step
    for step in range(start_step + 1, start_step + steps + 1):
        idx = next(stream)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DivergenceError(
                f"training diverged: the loss is {value} at step {step}; lower the learning rate "
                "(metrics logged up to the previous step are kept)")
        loss.backward()
        if lens is not None:
            lens.step(optimizer, batch=idx)
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for cb in callbacks:
            cb(step, value)
        if progress is not None:
            progress.update(1)
    return step
