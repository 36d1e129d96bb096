"""Every figure of issue 16's tables in one run, as ratios against a baseline of the same run.

1. The step (the ``grokking-mnist`` paper preset's size: MLP 64-200-200-1 at α = 6, AdamW, batch
   200, ``--n`` tracked training points + ``--n`` test probes): ms/step and × the plain AdamW step of
   plain / + lens / + smoother sketch K = 32 float32 / + smoother exact float32 / exact float64;
   the exact float64 step against its GEMM floor (the two dense products 2·|B|·p·L + 2·N·p·L of
   the same shapes, timed alone; target ≤ 1.5×); the sketch step against the plain one (target ≤ 3×).
2. Tangent kernels (float32, median of ``--repeats`` calls after a warm-up): ``structured`` and
   ``auto`` (``--impls`` for others) against ``jacobian`` on 784-200-200-10 full N = 256 and trace N = 1000,
   784-512-512-10 full N = 1000 and trace N = 4096, and a CNN (3×32×32, two conv layers) full
   N = 512.
3. The CPU proxy (benchmarks/lens_ops.py): top-level aten ops and host syncs per step.
4. Runs per GPU (issue 16 item 3, NOTE [units in parallel]): K = 1, 2, 4, 8 unit worker processes
   on the device, each training a grokking-mnist paper-size unit (sketch K = 32, float32) for
   ``--runs-steps`` steps; steady units·steps per second as a ratio to K = 1, and the projected wall
   time of the paper preset (12 units × 1e5 steps) at the best K. About 1 minute on a GPU.

About 4 minutes on one H100/H200 (the ``jacobian`` baselines dominate; part 4 about 1). ``--device cpu --small``
runs every part at small sizes in well under a minute, to prove the script works without a GPU.

    python benchmarks/gpu.py [--device cuda] [--small] [--steps 50] [--repeats 3] [--skip kernels,proxy,runs]
                             [--impls structured,auto,ntk_vp] [--runs-k 1,2,4,8] [--runs-steps 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import torch
from torch import nn

from telescope import empirical_ntk

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lens_ops import make_step  # noqa: E402  (the benchmarks folder, added to the path above)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn, device: str, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds, synchronised before and after each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------------------- 1. the step
STEP_CASES = {
    "plain AdamW step": None,
    "+ lens (telescoping only)": "lens",
    "+ smoother, sketch K = 32, float32": dict(method="sketch", probes=32, dtype="float32"),
    "+ smoother, exact, float32": dict(method="exact", dtype="float32"),
    "+ smoother, exact, float64": dict(method="exact", dtype="float64"),
}


def step_time(case, device: str, n: int, steps: int, batch: int = 200) -> float:
    """Seconds per steady-state training step (median over blocks of 10 steps); the step is
    benchmarks/lens_ops.py's, so the proxy counts and these timings measure the same thing."""
    one = make_step(case, n, device=device, n_test=n, batch=batch, memory_budget_gb=64)
    block = max(1, min(10, steps // 5))
    return median_time(lambda: [one() for _ in range(block)], device, max(1, steps // block), warmup=2) / block


def gemm_floor(device: str, n: int, batch: int = 200) -> float:
    """Seconds of the exact float64 step's two dense products alone: (p × |B|)(|B| × L), (N × p)(p × L)."""
    p = 64 * 200 + 200 + 200 * 200 + 200 + 200 + 1
    L = n + 1
    f64 = dict(device=device, dtype=torch.float64)
    jb, e = torch.randn(p, batch, **f64), torch.randn(batch, L, **f64)
    ja, d = torch.randn(2 * n, p, **f64), torch.randn(p, L, **f64)
    g = torch.empty(p, L, **f64)
    r = torch.empty(2 * n, L, **f64)

    def products() -> None:
        torch.mm(jb, e, out=g)
        torch.mm(ja, d, out=r)

    return median_time(products, device, 5)


def part_steps(args) -> dict[str, float]:
    n = 100 if args.small else 1000
    steps = min(args.steps, 10) if args.small else args.steps
    print(f"\n## 1. The step: MLP 64-200-200-1 (α = 6), AdamW, batch {min(200, n)}, {n} tracked training points + {n} probes\n")
    print("| step | ms/step | × plain |\n|---|---|---|")
    times = {}
    for name, case in STEP_CASES.items():
        try:
            times[name] = step_time(case, args.device, n, steps)
        except Exception as exc:                                   # report and go on
            print(f"| {name} | failed: {type(exc).__name__}: {str(exc)[:120]} | |")
            continue
        print(f"| {name} | {times[name] * 1e3:.2f} | {times[name] / times['plain AdamW step']:.1f} |")
    exact64 = times.get("+ smoother, exact, float64")
    if exact64:
        floor = gemm_floor(args.device, n)
        print(f"\nexact float64 step / its GEMM floor ({floor * 1e3:.2f} ms) = {exact64 / floor:.2f}  (target ≤ 1.5)")
    sketch = times.get("+ smoother, sketch K = 32, float32")
    if sketch:
        print(f"sketch step / plain step = {sketch / times['plain AdamW step']:.2f}  (target ≤ 3 on a GPU)")
    return times


# ---------------------------------------------------------------------------- 2. kernels
def build(kind: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if kind == "mlp200":
        return nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10)), (784,)
    if kind == "transformer":     # issue 20's paper model; inputs are tokens (see part_kernels)
        from telescope.models.transformer import ModularTransformer

        return ModularTransformer(113, 128, 4, 512, generator=torch.Generator().manual_seed(0)), (3,)
    if kind == "mlp512":
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)), (784,)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 10)), (3, 32, 32)


KERNEL_CASES = [  # (label, model, N, N with --small, output)
    ("784-200-200-10 full", "mlp200", 256, 32, "full"),
    ("784-200-200-10 trace", "mlp200", 1000, 64, "trace"),
    ("784-512-512-10 full", "mlp512", 1000, 32, "full"),
    ("784-512-512-10 trace", "mlp512", 4096, 64, "trace"),
    ("CNN 3×32×32 full", "cnn", 512, 16, "full"),
    ("transformer p=113 d=128 trace", "transformer", 128, 8, "trace"),   # position pairs (NOTE [structured kernel])
]


def part_kernels(args) -> None:
    print("\n## 2. Tangent kernels (float32), time of `jacobian` / time of each implementation\n")
    impls = args.impls.split(",")
    print("| kernel | N | jacobian ms | " + " | ".join(f"{i} ×" for i in impls) + " |")
    print("|---|---|---|" + "---|" * len(impls))
    for label, kind, big, small, output in KERNEL_CASES:
        n = small if args.small else big
        model, shape = build(kind)
        model = model.to(args.device)
        if kind == "transformer":
            from telescope.models.transformer import modular_tokens

            x = modular_tokens(113, 0.5, generator=torch.Generator().manual_seed(0))[0][:n].to(args.device)
        else:
            x = torch.randn(n, *shape, device=args.device)
        cells = []
        try:
            ref = median_time(lambda: empirical_ntk(model, x, output=output, implementation="jacobian"),
                              args.device, args.repeats)
        except Exception as exc:
            print(f"| {label} | {n} | failed: {type(exc).__name__}: {str(exc)[:100]} |")
            continue
        for impl in impls:
            try:
                t = median_time(lambda: empirical_ntk(model, x, output=output, implementation=impl),
                                args.device, args.repeats)
                cells.append(f"{ref / t:.1f}")
            except Exception as exc:
                cells.append(f"failed ({type(exc).__name__})")
        print(f"| {label} | {n} | {ref * 1e3:.1f} | " + " | ".join(cells) + " |")
    print("\ntargets: structured ≥ 20× on 784-200-200-10 full N = 256 and ≥ 3× on the CNN, on a GPU")


# ---------------------------------------------------------------------------- 3. CPU proxy
def part_proxy(args) -> None:
    from lens_ops import count, make_case
    from torch.profiler import ProfilerActivity, profile

    n = 100 if args.small else 1000
    print(f"\n## 3. CPU proxy (benchmarks/lens_ops.py): top-level aten ops and host syncs per step, n = {n}\n")
    print("| case | ops/step | × plain | syncs/step |\n|---|---|---|---|")
    base = None
    for case in ("plain", "lens", "lens+sketch", "lens+exact"):
        step = make_case(case, min(n, 200) if case == "lens+exact" else n)
        step()
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                step()
        ops, syncs, _ = count(prof.events())
        ops, syncs = ops / 2, syncs / 2
        base = base or (ops, syncs)
        print(f"| {case} | {ops:.0f} | {ops / base[0]:.2f} | {syncs:.0f} (+{syncs - base[1]:.0f}) |")


# ---------------------------------------------------------------------------- 4. runs per GPU
PAPER_UNITS, PAPER_STEPS = 12, 100_000   # the grokking-mnist paper preset: 3 α × 4 seeds × 1e5 steps


def runs_config(args, units: int):
    """grokking-mnist's paper unit (MLP 64-200-200-1, AdamW, n = 1000 + 1000 probes) with the issue's
    sketch (K = 32, float32), ``--runs-steps`` steps, ``units`` seeds of α = 6, two log points; MNIST
    from ``--data-dir`` / $TELESCOPE_DATA, else the 8×8 digits at n = 250 (printed). ``--small``:
    the tiny preset."""
    from telescope.data import data_dir as resolve_dir
    from telescope.experiments import grokking_mnist
    from telescope.experiments.base import resolve_config

    sets = {"seeds": str(units), "alphas": "6", "steps": str(args.runs_steps), "log_points": "2"}
    if args.small:
        return resolve_config("grokking-mnist", grokking_mnist.Config, "tiny", overrides=sets), "tiny preset (digits)"
    sets.update(methods="sketch", smoother_dtype="float32")
    note = "MNIST 3 vs 5"
    if not (resolve_dir(args.data_dir) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        sets.update(dataset="digits", n_train="250", n_test="100", n_probe="100")
        note = "8×8 digits 3 vs 5 at n = 250 (MNIST not found: --data-dir); the paper's n = 1000 costs more per step"
    return resolve_config("grokking-mnist", grokking_mnist.Config, "paper", overrides=sets), note


def part_runs(args, times: dict[str, float]) -> None:
    """K unit worker processes on one device (NOTE [units in parallel] in telescope.experiments.units):
    K units of ``--runs-steps`` steps each, K at once; steady units·steps per second (benchmarks/
    unit_throughput.py's measure: 20 %–90 % of the run's steps) as a ratio to K = 1 (in-process)."""
    import math

    from sweep_throughput import warm_forkserver
    from unit_throughput import measure

    ks = [int(k) for k in args.runs_k.split(",")]
    cfg, note = runs_config(args, 1)
    print(f"\n## 4. Runs per GPU: K worker processes, K grokking-mnist units of {cfg.steps} steps each "
          f"(width {cfg.width}, {note}, smoother {'/'.join(cfg.methods)} {cfg.smoother_dtype})\n")
    measure(dataclasses.replace(cfg, steps=20), args.device, 1, args.data_dir)   # first-use costs, not timed
    print(f"forkserver start (once): {warm_forkserver():.1f} s\n")
    print("| K | wall s | units·steps/s (steady) | × K = 1 |\n|---|---|---|---|")
    rates = {}
    for k in ks:
        try:
            r = measure(runs_config(args, k)[0], args.device, k, args.data_dir)
        except Exception as exc:                                   # report and go on
            print(f"| {k} | failed: {type(exc).__name__}: {str(exc)[:120]} | | |")
            continue
        rates[k] = r.rate
        base = rates.get(ks[0], float("nan"))
        print(f"| {k} | {r.wall:.1f} | {r.rate_text} | {r.rate / base:.2f} |")
    finite = {k: v for k, v in rates.items() if math.isfinite(v)}
    if finite:
        best = max(finite, key=finite.get)
        waves = math.ceil(PAPER_UNITS / best)
        hours = waves * PAPER_STEPS * best / finite[best] / 3600
        print(f"\nbest K = {best}: the paper preset ({PAPER_UNITS} units × {PAPER_STEPS:.0e} steps, {waves} waves "
              f"of {best}) would take {hours:.2f} h at this step rate (target ≤ 0.25 h on one H200 with the sketch;"
              " at the paper's n = 1000 only when MNIST was found above)")
    for name in ("+ smoother, sketch K = 32, float32", "+ smoother, exact, float64"):
        if name in times:
            hours = times[name] * PAPER_STEPS * PAPER_UNITS / 3600
            print(f"- one run after another at part 1's '{name}' step: {hours:.2f} h (step time only)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="small sizes (to check the script on a CPU)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: steps,kernels,proxy,runs")
    ap.add_argument("--runs-k", default="1,2,4,8", help="worker processes per device timed in part 4")
    ap.add_argument("--runs-steps", type=int, default=None,
                    help="steps per unit in part 4 (default 300; 40 with --small)")
    ap.add_argument("--data-dir", default=None, help="data folder with mnist/ for part 4 (default: $TELESCOPE_DATA)")
    ap.add_argument("--impls", default="structured,auto",
                    help="kernel implementations timed against jacobian (ntk_vp is slow on the CNN)")
    args = ap.parse_args()
    if args.runs_steps is None:
        args.runs_steps = 40 if args.small else 300
    skip = set(filter(None, args.skip.split(",")))
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"# benchmarks/gpu.py on {name} ({args.device}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"threads {torch.get_num_threads()}{', small sizes' if args.small else ''}")
    t0 = time.perf_counter()
    times = part_steps(args) if "steps" not in skip else {}
    if "kernels" not in skip:
        part_kernels(args)
    if "proxy" not in skip:
        part_proxy(args)
    if "runs" not in skip:
        part_runs(args, times)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
