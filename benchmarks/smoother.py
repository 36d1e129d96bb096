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

``--mode sketch``: the sketched smoother (K = ``--probes``) against the exact one on the
same training trajectory (one lens, both trackers fed the same steps): per-step time of each
tracker's ``after_step`` (AdamW, general path, and plain SGD, kernel shortcut), their state
memory (bytes of R and the p × L buffers, and ``memory_estimate``), and after ``--train``
AdamW steps the estimate p̂ ± se against the exact p⁰ on train and test.

    PYTHONPATH=src python benchmarks/smoother.py --mode sketch --n 1000 --m 1000 --threads 1

``--mode sketch-large``: a sketch run the exact path cannot hold: it builds the exact spec
with ``--budget-gib`` (default 24 GiB) and shows its refusal, then times ``--steps`` AdamW
steps of the sketch and reports its p̂ ± se.

    PYTHONPATH=src python benchmarks/smoother.py --mode sketch-large --n 5000 --m 500 --d 784 \
        --width 256 --chunk 128 --threads 1

Times are the best of ``--steps`` steps; on CPU they are process CPU time, so other jobs on
a shared machine do not distort them (use ``--threads 1`` there).
"""

from __future__ import annotations

import argparse
import time

import torch

from telescope.errors import ConfigError
from telescope.lens import Lens, SmootherSpec, smoother_of
from telescope.lens.smoother import SmootherTracker
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


def state_bytes(tracker) -> int:
    """Bytes actually held by a tracker's state: R, the p × L buffers and the sketch basis."""
    tensors = [tracker.R, *tracker.buffers.values()] + ([tracker.basis] if tracker.basis is not None else [])
    return sum(t.numel() * t.element_size() for t in tensors)


def sketch_comparison(args) -> None:
    """Exact vs sketch on one trajectory: step times, memory, and p̂ against p⁰."""
    torch.manual_seed(0)
    dev = args.device
    x = torch.rand(args.n, args.d, device=dev)
    y = (torch.rand(args.n, device=dev) > 0.5).float()
    x_test = torch.rand(args.m, args.d, device=dev)
    for opt_name in ("adamw", "sgd"):
        torch.manual_seed(0)
        model = MLP(args.d, args.width, 3).to(dev)
        common = dict(loss="mse", dtype=args.dtype, memory_budget_gb=64, chunk_size=args.chunk)
        lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, **common))
        exact = smoother_of(lens)
        sketch = SmootherTracker(SmootherSpec(x, y, method="sketch", probes=args.probes, seed=args.seed,
                                              **common), lens)
        if opt_name == "adamw":
            opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.99))
        else:
            opt = torch.optim.SGD(model.parameters(), lr=0.5)
        gen = torch.Generator().manual_seed(0)
        times = {"exact": float("inf"), "sketch": float("inf")}
        steps = args.train if opt_name == "adamw" else args.steps + 1
        for t in range(steps):
            idx = torch.randperm(args.n, generator=gen)[:args.batch].to(dev)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
            before = lens._snapshot()
            opt.step()
            after = dict(model.named_parameters())
            delta = {k: after[k].detach() - before[k] for k in before}
            for name, tr in (("exact", exact), ("sketch", sketch)):
                c = clock(dev)
                tr.after_step(lens, before, delta, idx, opt)
                if 0 < t <= args.steps:                  # step 0 allocates the buffers
                    times[name] = min(times[name], clock(dev) - c)
        print(f"[{opt_name}, {exact.path} path] n={args.n} m={args.m} p={exact.p} K={args.probes} "
              f"dtype={args.dtype} device={dev} threads={torch.get_num_threads()} steps={steps}")
        print(f"  exact  per step {times['exact'] * 1e3:9.1f} ms   state {state_bytes(exact) / 2**20:9.1f} MiB"
              f"   (L = {exact.L})")
        print(f"  sketch per step {times['sketch'] * 1e3:9.1f} ms   state {state_bytes(sketch) / 2**20:9.1f} MiB"
              f"   (L = {sketch.L})")
        print(f"  speed-up {times['exact'] / times['sketch']:.1f}x   memory ratio "
              f"{state_bytes(exact) / state_bytes(sketch):.1f}x   (target >= 10x)")
        if opt_name == "adamw":
            p0, ph, se = exact.effective_parameters(), sketch.effective_parameters(), \
                sketch.effective_parameters_se()
            for split in p0:
                print(f"  p_eff {split:5s} exact {p0[split]:9.3f}   sketch {ph[split]:9.3f} ± {se[split]:.3f}"
                      f"   rel. error {abs(ph[split] - p0[split]) / p0[split]:.2%} (target < 5%)")


def sketch_large(args) -> None:
    """A sketch at a size the exact path refuses within ``--budget-gib``."""
    torch.manual_seed(0)
    dev = args.device
    x = torch.rand(args.n, args.d, device=dev)
    y = (torch.rand(args.n, device=dev) > 0.5).float()
    x_test = torch.rand(args.m, args.d, device=dev)
    model = MLP(args.d, args.width, 3).to(dev)
    budget = args.budget_gib * 2 ** 30 / 1e9
    common = dict(loss="mse", dtype=args.dtype, memory_budget_gb=budget, chunk_size=args.chunk)
    p = sum(q.numel() for q in model.parameters())
    need = SmootherSpec(x, y, **common).memory_estimate(args.n + args.m, p, buffers=3, batch_size=args.batch)
    print(f"n={args.n} m={args.m} p={p} dtype={args.dtype} device={dev} threads={torch.get_num_threads()}")
    print(f"exact path (AdamW) needs ~{need / 2**30:.1f} GiB; budget {args.budget_gib} GiB")
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, **common))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    idx = torch.arange(args.batch, device=dev)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
    try:
        lens.step(opt, batch=idx)
        print("exact path: NOT refused")
    except ConfigError as err:
        print(f"exact path refused: {str(err)[:160]}...")
    torch.manual_seed(0)
    model = MLP(args.d, args.width, 3).to(dev)
    spec = SmootherSpec(x, y, method="sketch", probes=args.probes, seed=args.seed, **common)
    lens = Lens(model, {"test": x_test}, smoother=spec)
    tracker = smoother_of(lens)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    best, t_all = float("inf"), time.perf_counter()
    for t in range(args.steps + 1):
        idx = torch.randperm(args.n, generator=gen)[:args.batch].to(dev)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
        c = clock(dev)
        lens.step(opt, batch=idx)
        if t:
            best = min(best, clock(dev) - c)
    p_hat, se = tracker.effective_parameters(), tracker.effective_parameters_se()
    print(f"sketch K={args.probes}: state {state_bytes(tracker) / 2**20:.1f} MiB (estimate "
          f"{spec.memory_estimate(args.n + args.m, p, buffers=3, batch_size=args.batch) / 2**20:.1f} MiB), "
          f"lens.step per step {best:.2f} s (best of {args.steps}), wall {time.perf_counter() - t_all:.1f} s "
          f"for {args.steps + 1} steps")
    for split in p_hat:
        print(f"  p_eff {split:5s} {p_hat[split]:9.3f} ± {se[split]:.3f}")


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
    ap.add_argument("--mode", default="paths", choices=["paths", "sketch", "sketch-large"])
    ap.add_argument("--probes", type=int, default=32, help="K, sketch modes")
    ap.add_argument("--seed", type=int, default=0, help="probe seed, sketch modes")
    ap.add_argument("--d", type=int, default=64, help="input dimension, sketch modes")
    ap.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, sketch modes")
    ap.add_argument("--train", type=int, default=40, help="AdamW steps before comparing p_eff (--mode sketch)")
    ap.add_argument("--budget-gib", type=float, default=24.0, help="exact path's budget (--mode sketch-large)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "sketch":
        return sketch_comparison(args)
    if args.mode == "sketch-large":
        return sketch_large(args)

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
