"""A training loop you can read top to bottom.

``fit`` runs ``steps`` optimizer steps on mini-batches drawn from ``(x, y)`` and calls
each callback after every step. A :class:`telescope.Lens` passed as ``lens`` takes the
place of ``optimizer.step()`` so it sees every realised update. A non-finite loss stops
training with :class:`telescope.errors.DivergenceError` (callbacks have logged what came
before it). Studies plug their needs in rather than copying the loop: ``before_step``
hooks see the batch before the update (a learning-rate schedule, a snapshot of θ_{t−1}),
``prepare`` maps the batch (augmentation, a device move), and ``stream`` continues a
batch sequence across calls (a trainer that pauses, is copied and resumes).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import torch
import torch.nn as nn

from telescope.errors import ConfigError, DivergenceError
from telescope.train.recording import RecordAt


class Callback(Protocol):
    """Called after every step with the step's mini-batch loss as a Python float.

    Reading the float is a host sync on an accelerator; a callback that can work with the
    loss as a device tensor sets ``loss_on_device = True`` instead (see :class:`RecordAt`
    and NOTE [training without host syncs]).
    """

    def __call__(self, step: int, loss: float) -> None: ...


# NOTE [training without host syncs]
# On a GPU, reading the loss (``float(loss)``) waits for the step to finish, so a loop that
# reads it every step never runs ahead of the device. ``fit`` reads it only where something
# needs it: when a callback takes floats, or at a divergence check. Callbacks with
# ``loss_on_device = True`` receive the detached 0-dim loss tensor (RecordAt sums it on the
# device and reads the mean at its record steps). Divergence is still caught: every step
# adds ``loss − loss`` (0 when finite, NaN otherwise) into a device scalar, read every
# ``check_every`` steps, at the last step, and before any step a device callback declares
# ``due(step)`` for (so no record is made from diverged weights). On the CPU the read
# costs nothing and the check runs every step, as it always did (``sync_free`` defaults to
# False there): the error names the exact step and loss; on an accelerator it names the
# window of steps in which the loss left the finite numbers.


class BeforeStep(Protocol):
    def __call__(self, step: int, batch: torch.Tensor) -> None: ...


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


def batches(n: int, batch_size: int, generator: torch.Generator, *,
            drop_last: bool = True) -> Iterator[torch.Tensor]:
    """Endless epochs of shuffled index batches (1-d int64 tensors), one ``randperm`` per epoch.

    ``drop_last=True``: ``n // batch_size`` batches per epoch, the last short batch dropped;
    ``batch_size >= n`` gives full-batch steps ``arange(n)`` and draws nothing.
    ``drop_last=False``: ``ceil(n / batch_size)`` batches per epoch, the last one short.
    """
    if drop_last and batch_size >= n:
        idx = torch.arange(n)
        while True:
            yield idx
    per_epoch = n // batch_size if drop_last else -(-n // batch_size)
    while True:
        perm = torch.randperm(n, generator=generator)
        for b in range(per_epoch):
            yield perm[b * batch_size:(b + 1) * batch_size]


class _FiniteGuard:
    """The divergence check of NOTE [training without host syncs]: a device scalar that
    turns NaN once any loss added since the last check was not finite."""

    def __init__(self, start_step: int):
        self.poison: torch.Tensor | None = None
        self.since = start_step          # the last step known to be finite

    def add(self, loss: torch.Tensor) -> None:
        term = loss - loss               # 0 when finite; NaN for NaN and ±inf
        self.poison = term if self.poison is None else self.poison.add_(term)

    def check(self, step: int) -> None:
        if self.poison is not None and not bool(torch.isfinite(self.poison)):   # the one host read
            raise DivergenceError(
                f"training diverged: the loss left the finite numbers between steps {self.since + 1} and "
                f"{step}; lower the learning rate (metrics logged up to step {self.since} are kept)")
        self.since = step


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
        x: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int | None = None,
        generator: torch.Generator | None = None, stream: Iterator[torch.Tensor] | None = None,
        lens=None, scheduler=None, callbacks: Sequence[Callback] = (),
        before_step: Sequence[BeforeStep] = (),
        prepare: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        progress=None, start_step: int = 0, check_every: int = 100,
        sync_free: bool | None = None,
        record_at: tuple[Iterable[int], Callable[[int, float | None], None]] | None = None) -> int:
    """Train for ``steps`` steps; returns the number of the last step taken.

    Step ``t`` (1-based, counted from ``start_step``) takes batch B_t (index tensor) from
    ``stream`` (default: ``batches(n, batch_size, generator)``), calls every ``before_step``
    hook with ``(t, B_t)``, computes ``loss_fn(model(x_B), y_B)`` on ``prepare(x[B_t], y[B_t])``
    (or the plain batch), back-propagates and steps (through ``lens.step(optimizer,
    batch=B_t)`` when a lens is given), steps the scheduler, then calls every callback with
    ``(t, loss)``. Shapes: x (n, ...), y (n, ...) indexed along the first axis.

    ``record_at=(steps, record)``: call ``record(step, mean_loss)`` at those steps through a
    :class:`~telescope.train.RecordAt` (and ``record(0, None)`` first when 0 is among them and
    training starts at step 0), the way most studies measure.
    ``sync_free``: read the loss only where needed (NOTE [training without host syncs]);
    default: on an accelerator, not on the CPU (where reading costs nothing and divergence is
    caught at its exact step). ``check_every``: then read the divergence check every this
    many steps.
    """
    if check_every < 1:
        raise ConfigError(f"fit(check_every={check_every}): give a positive number of steps")
    if stream is None:
        if batch_size is None or generator is None:
            raise ConfigError("fit(stream=None): pass batch_size and generator (or a stream of index batches)")
        stream = batches(x.shape[0], batch_size, generator)
    if record_at is not None:
        recorder = RecordAt(*record_at)
        if start_step == 0:
            recorder.start()
        callbacks = [*callbacks, recorder]
    model.train()
    takes_tensor = [bool(getattr(cb, "loss_on_device", False)) for cb in callbacks]
    on_device = [cb for cb, t in zip(callbacks, takes_tensor) if t]
    if sync_free is None:
        sync_free = next(model.parameters()).device.type != "cpu"
    read_every_step = not (sync_free and all(takes_tensor))
    guard = _FiniteGuard(start_step)
    last = start_step + steps
    step = start_step
    for step in range(start_step + 1, last + 1):
        idx = next(stream)
        for hook in before_step:
            hook(step, idx)
        optimizer.zero_grad(set_to_none=True)
        xb, yb = x[idx], y[idx]
        if prepare is not None:
            xb, yb = prepare(xb, yb)
        loss = loss_fn(model(xb), yb)
        detached = loss.detach()
        value = None
        if read_every_step:
            value = float(detached)
            if not math.isfinite(value):
                raise DivergenceError(
                    f"training diverged: the loss is {value} at step {step}; lower the learning rate "
                    "(metrics logged up to the previous step are kept)")
        else:
            guard.add(detached)
            if step % check_every == 0 or step == last or any(cb.due(step) for cb in on_device):
                guard.check(step)
        loss.backward()
        if lens is not None:
            lens.step(optimizer, batch=idx)
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for cb, tensor in zip(callbacks, takes_tensor):
            cb(step, detached if tensor else value)
        if progress is not None:
            progress.update(1)
    return step
