"""Smoother cost per step: the general p×(nk+1) path against its arithmetic floor, and the
SGD kernel shortcut against the general path, measured in the same run.

    PYTHONPATH=src python benchmarks/smoother.py [--n 512] [--m 512] [--width 64] [--batch 128]
        [--steps 5] [--dtype float64] [--device cpu] [--threads 1]

* general path (AdamW, λ > 0: step, momentum and θ buffers): time of the tracker's
  ``after_step`` (batch Jacobian, G = a·J_Bᵀ(Ê−R_B), the AdamW recursion over p×(n+1)
  buffers, Jacobians of all N tracked points and ΔR = J_all·Δ), without the optimizer
  step or the lens's own JVP;
* floor: the two dense products that step needs, on preallocated tensors of the same
  shapes and dtype: (p × |B|)(|B| × (n+1)) and (N × p)(p × (n+1)) (in the same chunks);
  reported as floor time / step time = the fraction of the floor's throughput reached;
* kernel shortcut vs general path, both under plain SGD (the only case the shortcut covers).

Times are the best of ``--steps`` steps; on CPU they are process CPU time, so other jobs on
a shared machine do not distort them (use ``--threads 1`` there).
"""

from __future__ import annotations

import argparse
import time

import torch

from telescope.lens import Lens, SmootherSpec, smoother_of
from telescope.models import MLP


def clock(device: str) -> float:
    """CPU: this process's CPU time (robust to other load on a shared machine; sums threads,
    so compare like with like); CUDA: wall time after a synchronize."""
    if device == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def timed(fn, steps: int, device: str) -> float:
    """Best of ``steps`` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(steps):
        t = clock(device)
        fn()
        best = min(best, clock(device) - t)
    return best


def tracker_step_time(args, optimizer: str, path: str) -> tuple[float, object]:
    torch.manual_seed(0)
    dev = args.device
    x = torch.rand(args.n, 64, device=dev)
    y = (torch.rand(args.n, device=dev) > 0.5).float()
    x_test = torch.rand(args.m, 64, device=dev)
    model = MLP(64, args.width, 3).to(dev)
    spec = SmootherSpec(x, y, loss="mse", dtype=args.dtype, path=path, memory_budget_gb=64,
                        chunk_size=args.chunk)
    lens = Lens(model, {"test": x_test}, smoother=spec)
    tracker = smoother_of(lens)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.99))
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    state = {}

    def prepare():
        idx = torch.randperm(args.n, generator=gen)[:args.batch].to(dev)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
        before = lens._snapshot()
        opt.step()
        after = dict(model.named_parameters())
        state.update(idx=idx, before=before, delta={k: after[k].detach() - before[k] for k in before})

    def step():
        tracker.after_step(lens, state["before"], state["delta"], state["idx"], opt)

    best = float("inf")
    prepare()
    step()                                       # first step allocates the buffers
    for _ in range(args.steps):
        prepare()
        t = clock(dev)
        step()
        best = min(best, clock(dev) - t)
    return best, tracker


def floor_time(args, tracker) -> float:
    dt = tracker.dtype
    dev = args.device
    p, L, N = tracker.p, tracker.L, tracker.n_points * tracker.k
    bk = args.batch * tracker.k
    Jb, E = torch.randn(bk, p, device=dev, dtype=dt), torch.randn(bk, L, device=dev, dtype=dt)
    G = torch.empty(p, L, device=dev, dtype=dt)
    R = torch.zeros(N, L, device=dev, dtype=dt)
    chunk = args.chunk * tracker.k
    Js = [torch.randn(min(chunk, N - s), p, device=dev, dtype=dt) for s in range(0, N, chunk)]

    def products():
        torch.mm(Jb.T, E, out=G)
        start = 0
        for J in Js:
            R[start:start + J.shape[0]].addmm_(J, G)
            start += J.shape[0]

    return timed(products, args.steps, dev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--m", type=int, default=512)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    general, tracker = tracker_step_time(args, "adamw", "general")
    floor = floor_time(args, tracker)
    flops = 2 * tracker.p * tracker.L * (args.batch + tracker.n_points) * tracker.k ** 2
    sgd_general, _ = tracker_step_time(args, "sgd", "general")
    sgd_kernel, _ = tracker_step_time(args, "sgd", "kernel")
    print(f"n={args.n} m={args.m} p={tracker.p} N={tracker.n_points} L={tracker.L} batch={args.batch} "
          f"dtype={args.dtype} device={args.device} threads={torch.get_num_threads()}")
    print(f"general path (AdamW) per step      {general * 1e3:9.1f} ms")
    print(f"dense-product floor per step       {floor * 1e3:9.1f} ms  ({flops / floor / 1e9:.1f} GFLOP/s)")
    print(f"fraction of floor throughput       {floor / general:9.2f}   (target >= 0.60)")
    print(f"SGD general path per step          {sgd_general * 1e3:9.1f} ms")
    print(f"SGD kernel shortcut per step       {sgd_kernel * 1e3:9.1f} ms")
    print(f"kernel shortcut speed-up           {sgd_general / sgd_kernel:9.2f}x")


if __name__ == "__main__":
    main()
