"""What the validity signal (NOTE [smoother validity] in telescope/lens/smoother.py) costs at a log
point, against the smoother's metrics without it and against one training step with the lens, all
measured in the same run. The signal is computed when asked (one forward pass over the tracked points
and the residuals), never in the step, so the step's time does not change; this measures the log point.

    PYTHONPATH=src python benchmarks/smoother_validity.py [--n 200] [--m 100] [--width 100] [--reps 50]

Default shape: grokking-mnist's quick preset (n = 200 training images of 64 pixels, 100 test probes,
a depth-3 width-100 MLP, AdamW, float32 sketch with K = 32).
"""

from __future__ import annotations

import argparse
import time

import torch

from telescope.lens import Lens, SmootherSpec, smoother_of
from telescope.models import MLP


def best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, xt = torch.rand(args.n, 64), torch.rand(args.m, 64)
    y = (torch.rand(args.n) > 0.5).float()
    model = MLP(64, args.width, 3, 1)
    lens = Lens(model, {"test": xt}, smoother=SmootherSpec(x, y, loss="mse", dtype="float32", method="sketch",
                                                           probes=32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1.0)
    tracker = smoother_of(lens)

    def step():
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        lens.step(opt, batch=torch.arange(args.n))

    for _ in range(5):
        step()
    t_step = best(step, args.reps)
    t_plain = best(lambda: (tracker.effective_parameters(), tracker.residuals()), args.reps)
    t_full = best(tracker.metrics, args.reps)
    t_valid = best(tracker.validity, args.reps)
    print(f"n={args.n} m={args.m} width={args.width} p={tracker.p} threads={args.threads} reps={args.reps} (best of)")
    print(f"step with lens+sketch       {t_step * 1e3:8.3f} ms")
    print(f"metrics without validity    {t_plain * 1e3:8.3f} ms")
    print(f"metrics with validity       {t_full * 1e3:8.3f} ms  ratio {t_full / t_plain:.2f}")
    print(f"validity alone              {t_valid * 1e3:8.3f} ms  = {t_valid / t_step:.2f} steps")


if __name__ == "__main__":
    main()
