"""Optimizers that torch.optim does not have (the smoother follows them exactly).

:class:`EMAMomentumSGD` lived in ``telescope.lens.smoother`` until the lens's step was fused
(issue 16); ``telescope.lens.EMAMomentumSGD`` still resolves here. The smoother recognises it
through its ``smoother_rule`` attribute (NOTE [optimizer rules] in lens/smoother.py), so the
math core does not import the training package.
"""

from __future__ import annotations

import torch

from telescope.errors import ConfigError


class EMAMomentumSGD(torch.optim.Optimizer):
    """SGD with the paper's bias-corrected EMA momentum (digest §3.1):

        m_t = β m_{t−1} + (1−β)(g_t + λ θ_{t−1}),   θ_t = θ_{t−1} − γ_t m_t / (1 − β^t)

    (Adam's first moment without the second; λ is coupled weight decay.) PyTorch's
    ``SGD(momentum=β)`` is the other convention (no (1−β), no bias correction); the
    smoother follows whichever of the two is used.
    """

    smoother_rule = "ema"       # NOTE [optimizer rules] in telescope/lens/smoother.py

    def __init__(self, params, lr: float, beta: float = 0.9, weight_decay: float = 0.0):
        if lr < 0 or not 0.0 <= beta < 1.0 or weight_decay < 0:
            raise ConfigError(f"EMAMomentumSGD(lr={lr}, beta={beta}, weight_decay={weight_decay}): "
                              "need lr ≥ 0, 0 ≤ beta < 1 and weight_decay ≥ 0")
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta, wd = group["lr"], group["beta"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                state["step"] += 1
                g = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                state["exp_avg"].mul_(beta).add_(g, alpha=1 - beta)
                p.add_(state["exp_avg"], alpha=-lr / (1 - beta ** state["step"]))
        return loss
