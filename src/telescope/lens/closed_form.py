"""A closed-form telescoping smoother for full-batch GD on a squared loss.

:class:`ClosedFormSmoother` runs the same recursion as the general smoother
(:mod:`telescope.lens.smoother`, SGD kernel path) for a model whose tangent kernel and JVP
have closed forms, so that 10⁴–10⁵ steps are affordable on a CPU. Its self-check and
effective parameters are read with the same rules (NOTE [smoother validity]).
"""

from __future__ import annotations

import torch


class ClosedFormSmoother:
    """The telescoping model as a smoother, for full-batch GD on mean((f − y)²) of a model that
    gives its tangent kernel and JVP in closed form (NOTE [two smoother paths] in
    telescope/experiments/grokking_poly.py), e.g. :class:`telescope.models.poly.CommitteeMachine`.

    The model must provide ``model(x) -> (n,)``, ``model.tangent_kernel(x1, x2, weight=w) -> (n1, n2)``
    and ``model.directional_derivative(x, delta, weight=w) -> (n,)`` at the weights ``w``
    before the step. Cost per step O((n + m)·n·(cost of one kernel entry)), memory O((n + m)·n).

    State R (n + m, n + 1): row r = [s(x_r), c(x_r)] over the training points then the
    probes; f̃ (n + m,) is the telescoping model built from the realised updates.
    Call :meth:`step` after each GD update with the weights before it and the update.
    """

    def __init__(self, model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
                 x_test: torch.Tensor, lr: float):
        self.model, self.lr = model, float(lr)
        self.n, self.m = int(x_train.shape[0]), int(x_test.shape[0])
        self.x_train, self.x_all = x_train, torch.cat([x_train, x_test])
        self.y_aug = torch.cat([y_train, torch.ones(1, dtype=y_train.dtype)])
        with torch.no_grad():
            f0 = model(self.x_all)
        self.R = torch.zeros(self.n + self.m, self.n + 1, dtype=x_train.dtype)
        self.R[:, -1] = f0
        self.f_tilde = f0.clone()
        self.eye = torch.eye(self.n, self.n + 1, dtype=x_train.dtype)

    @torch.no_grad()
    def step(self, weight_before: torch.Tensor, delta: torch.Tensor) -> None:
        k = self.model.tangent_kernel(self.x_all, self.x_train, weight=weight_before)      # (n+m, n)
        self.R += (self.lr * 2.0 / self.n) * (k @ (self.eye - self.R[: self.n]))
        self.f_tilde += self.model.directional_derivative(self.x_all, delta, weight=weight_before)

    def effective_parameters(self) -> dict[str, float]:
        s_train, s_test = self.R[: self.n, :-1], self.R[self.n:, :-1]
        return {"train": float((s_train ** 2).sum()), "test": float(self.n / self.m * (s_test ** 2).sum())}

    def weights(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.R[: self.n] if split == "train" else self.R[self.n:]
        return rows[:, :-1], rows[:, -1]

    def residual(self, split: str) -> float:
        rows = slice(0, self.n) if split == "train" else slice(self.n, None)
        return float((self.R[rows] @ self.y_aug - self.f_tilde[rows]).abs().mean())

    def telescope(self, split: str) -> torch.Tensor:
        return self.f_tilde[: self.n] if split == "train" else self.f_tilde[self.n:]
