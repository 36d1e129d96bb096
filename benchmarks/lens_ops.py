"""CPU proxy of the lens's GPU cost: top-level aten operations and host syncs per step.

On a GPU a small step is launch-bound: its time is about (number of kernel launches) × a few µs,
plus a stall at every host sync (``.item()``, ``float(t)``, ``int(t)``, a Python branch on a
tensor). Both can be counted on any machine with ``torch.profiler`` on the CPU, without a GPU
(issue 16's CPU proxy). Workload (issue 16, the ``grokking-mnist`` paper preset's size): MLP
64-200-200-1 (α = 6), AdamW, batch 200, 1000 tracked training points + 1000 test probes.

Cases, each profiled over ``--steps`` steady-state steps (after ``--warmup`` steps):
  plain          zero_grad, forward, loss, backward, ``optimizer.step()``
  lens           the same with ``lens.step(optimizer, batch=idx)`` (telescoping only)
  lens+sketch    ``SmootherSpec(method="sketch", probes=32, dtype="float32")``
  lens+exact     ``SmootherSpec(method="exact", dtype="float64")``  (n = ``--exact-n``)

Counted per step: top-level aten operations (an ``aten::`` event with no ``aten::`` ancestor,
i.e. what the Python side dispatches; each is at least one kernel launch on a GPU) and host syncs
(``aten::_local_scalar_dense``, the op under ``.item()``/``float()``/``int()``/``bool()`` of a
tensor, plus ``aten::nonzero``, whose output size needs the data). The optimizer's own syncs
(CPU AdamW reads its step counter with ``.item()``) are in the plain count.
Targets (issue 16): lens ≤ 1.5 × plain ops; lens+sketch ≤ 2.5 × plain ops; no sync beyond the plain
step's. The counts do not depend on the machine's speed or load; the exact case's ops do not
depend on n (only its time does), so ``--exact-n 200`` gives the same counts quickly.

A second table counts the host reads of the training loop around the step, ``telescope.train.fit``
with a ``RecordAt`` recording at 4 of ``--fit-steps`` steps: read-every-step (the CPU default,
``sync_free=False``) vs ``sync_free=True`` (the accelerator default; NOTE [training without host
syncs]: the loss is summed on the device and read at record steps and every ``check_every``).

    python benchmarks/lens_ops.py [--steps 3] [--warmup 2] [--exact-n 1000] [--cases plain,lens,...]
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

from telescope import Lens, SmootherSpec
from telescope.models import MLP
from telescope.models.mlp import scale_init

SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero")


def count(events) -> tuple[int, int, collections.Counter]:
    """(top-level aten ops, host syncs, Counter of top-level op names) over profiler events."""
    top, syncs, names = 0, 0, collections.Counter()
    for e in events:
        if e.name in SYNC_OPS:
            syncs += 1
        if not e.name.startswith("aten::"):
            continue
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            top += 1
            names[e.name] += 1
    return top, syncs, names


# the cases of issue 16's table: None = plain optimizer step, "lens" = telescoping only, a dict =
# the smoother's settings (SmootherSpec keyword arguments)
CASES = {
    "plain": None,
    "lens": "lens",
    "lens+sketch": dict(method="sketch", probes=32, dtype="float32"),
    "lens+exact": dict(method="exact", dtype="float64"),
}


def make_step(smoother, n_train: int, *, device: str = "cpu", n_test: int = 1000, seed: int = 0,
              batch: int = 200, memory_budget_gb: float = 8.0):
    """One training step of issue 16's problem (MLP 64-200-200-1 at α = 6, AdamW, batch ``batch``) on
    fresh data and a fresh model; ``smoother`` as in :data:`CASES`. Batches are CPU indices, as in fit()."""
    torch.manual_seed(seed)
    x, y = torch.rand(n_train, 64, device=device), torch.rand(n_train, device=device)
    x_test = torch.rand(n_test, 64, device=device)
    model = scale_init(MLP(64, 200, 3), 6.0).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    lens = None
    if smoother == "lens":
        lens = Lens(model, {"test": x_test})
    elif smoother is not None:
        lens = Lens(model, {"test": x_test},
                    smoother=SmootherSpec(x, y, loss="mse", memory_budget_gb=memory_budget_gb, **smoother))
    gen = torch.Generator().manual_seed(seed)
    stream = [torch.randperm(n_train, generator=gen)[:batch] for _ in range(64)]
    counter = iter(range(10 ** 9))

    def step() -> None:
        idx = stream[next(counter) % len(stream)]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
        if lens is None:
            opt.step()
        else:
            lens.step(opt, batch=idx)

    return step


def make_case(case: str, n_train: int, seed: int = 0):
    """The step function of one named case of :data:`CASES`."""
    if case not in CASES:
        raise SystemExit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    return make_step(CASES[case], n_train, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--exact-n", type=int, default=1000)
    ap.add_argument("--cases", default="plain,lens,lens+sketch,lens+exact")
    ap.add_argument("--fit-steps", type=int, default=200, help="steps of the fit() table (0: skip it)")
    ap.add_argument("--top", type=int, default=0, help="also list the N most frequent top-level ops per case")
    args = ap.parse_args()
    results = {}
    for case in args.cases.split(","):
        step = make_case(case, args.exact_n if case == "lens+exact" else 1000)
        for _ in range(args.warmup):
            step()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        wall = (time.perf_counter() - t0) / args.steps
        ops, syncs, names = count(prof.events())
        results[case] = (ops / args.steps, syncs / args.steps, wall, names)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.steps} profiled steps after "
          f"{args.warmup} warm-up steps")
    plain = results.get("plain")
    print(f"  {'case':<12} {'ops/step':>9} {'x plain':>8} {'syncs/step':>11} {'beyond plain':>13} "
          f"{'ms/step (profiled)':>19}")
    for case, (ops, syncs, wall, names) in results.items():
        ratio = f"{ops / plain[0]:.2f}" if plain else "-"
        extra = f"{syncs - plain[1]:+.0f}" if plain else "-"
        print(f"  {case:<12} {ops:9.0f} {ratio:>8} {syncs:11.0f} {extra:>13} {wall * 1e3:19.1f}")
        if args.top:
            print("      " + ", ".join(f"{n} {c / args.steps:.0f}" for n, c in names.most_common(args.top)))
    if plain:
        for case, target in (("lens", 1.5), ("lens+sketch", 2.5)):
            if case in results:
                r = results[case][0] / plain[0]
                print(f"  {case} / plain ops = {r:.2f}  (target <= {target}: {'met' if r <= target else 'NOT met'})")
    if args.fit_steps:
        main_fit(args.fit_steps)


def fit_reads(steps: int, sync_free: bool, check_every: int = 100) -> float:
    """Host reads per step of ``fit`` (MLP of :func:`make_step`, AdamW, lens, RecordAt at 4 steps),
    the optimizer's own included (CPU AdamW reads its step counter: the first table's plain syncs)."""
    from telescope.train import fit

    torch.manual_seed(0)
    x, y = torch.rand(1000, 64), torch.rand(1000)
    model = scale_init(MLP(64, 200, 3), 6.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    lens = Lens(model, {"test": torch.rand(1000, 64)})
    records = {int(s) for s in torch.linspace(1, steps, 4).round().tolist()}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fit(model, opt, torch.nn.functional.mse_loss, x, y, steps=steps, batch_size=200, lens=lens,
            generator=torch.Generator().manual_seed(0), record_at=(records, lambda s, m: None),
            sync_free=sync_free, check_every=check_every)
    return count(prof.events())[1] / steps


def main_fit(steps: int) -> None:
    print(f"  fit: host reads per step over {steps} steps (lens, RecordAt at 4 of them; the optimizer's own "
          "reads included):")
    print(f"    sync_free=False (the CPU default): {fit_reads(steps, sync_free=False):.2f}")
    print(f"    sync_free=True  (the GPU default): {fit_reads(steps, sync_free=True):.2f}")


if __name__ == "__main__":
    main()
