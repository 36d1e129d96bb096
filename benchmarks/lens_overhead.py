"""Cost of the lens on the approximation study's workload, measured in one run.

Workload: 64-200-200-1 ReLU MLP, squared loss, batch 200, 1000 probe points (float32, CPU).
Measured, interleaved and repeated (median of rounds):
  plain    one training step: zero_grad, forward, backward, optimizer.step()
  lens     the same step with lens.step(optimizer) (snapshot, step, JVP over the probes)
  forward  one forward pass over the 1000 probe points (no grad)
  jvp      the JVP alone: ∇f_{θ}(x)·v over the probes
Target (issue 2): lens <= 1.25 × (plain + 2 × forward).

    python benchmarks/lens_overhead.py [--rounds 15] [--iters 20] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from telescope import Lens
from telescope.models import MLP


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.rand(1000, 64), torch.rand(1000)
    probes = torch.rand(1000, 64)
    model = MLP(64, 200, 3)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    lens = Lens(model, {"test": probes})
    gen = torch.Generator().manual_seed(0)

    def step(with_lens: bool) -> None:
        idx = torch.randint(0, 1000, (200,), generator=gen)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
        if with_lens:
            lens.step(opt, batch=idx)
        else:
            opt.step()

    params = lens.snapshot()
    tangent = {k: torch.randn_like(v) * 1e-3 for k, v in params.items()}

    def forward() -> None:
        with torch.no_grad():
            model(probes)

    cases = {
        "plain": lambda: step(False),
        "lens": lambda: step(True),
        "forward": forward,
        "jvp": lambda: lens.jvp(params, tangent),
    }
    for fn in cases.values():  # warm up
        for _ in range(5):
            fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn()
            times[name].append((time.perf_counter() - t0) / args.iters)
    med = {k: statistics.median(v) for k, v in times.items()}
    budget = med["plain"] + 2 * med["forward"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, rounds {args.rounds} x {args.iters}")
    for name, value in med.items():
        print(f"  {name:<8} {value * 1e3:8.3f} ms")
    print(f"  jvp / forward                       = {med['jvp'] / med['forward']:.2f}")
    print(f"  lens / (plain + 2 forward)          = {med['lens'] / budget:.2f}   (target <= 1.25)")
    print(f"  lens / plain                        = {med['lens'] / med['plain']:.2f}")


if __name__ == "__main__":
    main()
