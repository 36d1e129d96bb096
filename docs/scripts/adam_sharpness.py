"""Preconditioned sharpness of the grokking-mnist problem under AdamW (docs/grokking.md,
"Why the AdamW smoother runs away").

AdamW (α = 6, β = (0.9, 0.99), 100-step warmup; by default the quick problem: n = 200, width 100,
full batches) and, at log-spaced steps from step 100 on, ``telescope.lens.adam_sharpness``: the top
eigenvalue of γ_t·a·J_B diag(1/φ_t) J_Bᵀ on a batch B (the training set when the batch is full;
a = 2/|B| for the mean squared error, φ_t = √v̂_t + ε), the matrix that the smoother's label-space
recursion applies to the batch residual every step with φ held fixed. Adam's EMA momentum
(β1 = 0.9) is stable below 2(1 + β1)/(1 − β1) = 38. With N > BATCH the batches come from
``telescope.train.batches`` (reshuffled every epoch, as in ``fit``) and the sharpness is taken
on the first BATCH images.

    PYTHONPATH=src TELESCOPE_DATA=../shared/data python docs/scripts/adam_sharpness.py LR WEIGHT_DECAY STEPS [N WIDTH BATCH]
"""

import math
import os
import sys

import torch

from telescope.experiments.grokking_mnist import Config, load_task
from telescope.lens import adam_sharpness
from telescope.models import MLP, scale_init
from telescope.train import batches


def main(lr: float, weight_decay: float, steps: int, n: int = 200, width: int = 100, batch: int = 200) -> None:
    torch.set_num_threads(1)
    data = load_task(Config(n_train=n, width=width), os.environ.get("TELESCOPE_DATA", "../shared/data"))
    x, y, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    torch.manual_seed(0)
    model = MLP(x.shape[1], width, 3, 1)
    scale_init(model, 6.0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / 100))
    marks = {round(10 ** (k / 8)) for k in range(8 * int(math.log10(steps)) + 1)} | {steps}
    index_batches = batches(n, batch, torch.Generator().manual_seed(0))
    for t in range(1, steps + 1):
        idx = next(index_batches)
        loss = ((model(x[idx]).squeeze(-1) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if t in marks and t >= 100:
            sharp = adam_sharpness(model, opt, x[:batch], loss="mse")
            with torch.no_grad():
                err_train = ((model(x).squeeze(-1) > 0.5).float() != y).float().mean().item()
                err_test = ((model(x_test).squeeze(-1) > 0.5).float() != y_test).float().mean().item()
            print(f"{t:6d}  train error {err_train:.3f}  test error {err_test:.3f}  loss {loss.item():.1e}  "
                  f"lambda_max {sharp['sharpness']:.3g}  ratio to {sharp['threshold']:g}: {sharp['ratio']:.3f}",
                  flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 7):
        sys.exit("usage: adam_sharpness.py LR WEIGHT_DECAY STEPS [N WIDTH BATCH]")
    main(float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), *map(int, sys.argv[4:7]))
