"""Smoother cost per step: the general p×(nk+1) path against its arithmetic floor, and the
SGD kernel shortcut against the general path, measured in the same run. Every tracker runs
twice: with the structured Jacobian products of lens/products.py (``jacobian_method="auto"``,
the default) and with per-example Jacobians by vmap(jacrev) (``"jacrev"``, the old path), the
in-run baseline.

    PYTHONPATH=src python benchmarks/smoother.py [--n 512] [--m 512] [--width 64] [--batch 128]
        [--steps 5] [--dtype float64] [--device cpu] [--threads 1]

* general path (AdamW, λ > 0: step, momentum and θ buffers): time of the tracker's
  ``after_step`` (batch derivatives, G = a·J_Bᵀ(Ê−R_B), the AdamW recursion over p×(n+1)
  buffers, derivatives of all N tracked points and ΔR = J_all·Δ), without the optimizer
  step or the lens's own JVP;
* floor: the two dense products that step needs, on preallocated tensors of the same
  shapes and dtype: (p × |B|)(|B| × (n+1)) and (N × p)(p × (n+1)) (in the same chunks);
  reported as floor time / step time = the fraction of the floor's throughput reached;
* kernel shortcut vs general path, both under plain SGD (the only case the shortcut covers).

``--mode sketch``: the sketched smoother (K = ``--probes``) against the exact one on the
same training trajectory (one lens, all trackers fed the same steps), each with structured
products and with vmap(jacrev) rows: per-step time of each tracker's ``after_step`` (AdamW,
general path, and plain SGD, kernel shortcut), the step's peak memory, the state memory
(bytes of R, the p × L buffers and the probe basis), the agreement of the structured and
jacrev trackers, and after ``--train`` AdamW steps the estimate p̂ ± se against the exact p⁰
on train and test (with ``--seeds S``: the spread of p̂ over S probe seeds).

    PYTHONPATH=src python benchmarks/smoother.py --mode sketch --n 1000 --m 1000 --threads 1

``--mode sketch-large``: a sketch run the exact path cannot hold: it builds the exact spec
with ``--budget-gib`` (default 24 GiB) and shows its refusal, then times ``--steps`` AdamW
steps of the sketch and reports its p̂ ± se; ``--baseline-steps B`` also times B steps of
the same tracker with vmap(jacrev) rows.

    PYTHONPATH=src python benchmarks/smoother.py --mode sketch-large --n 5000 --m 500 --d 784 \
        --width 256 --chunk 128 --threads 1 --baseline-steps 2

Times are the best of ``--steps`` steps; on CPU they are process CPU time, so other jobs on
a shared machine do not distort them (use ``--threads 1`` there). "peak" (``--mode sketch``)
is the largest resident-memory rise during one extra, untimed tracker step, i.e. the step's
temporaries (Linux/glibc: allocations over 64 KiB are switched to mmap with mallopt and free
heap memory is returned with malloc_trim, so that freed memory leaves the process; VmHWM is
reset through /proc/self/clear_refs and read after the step, minus VmRSS before it).
"""

from __future__ import annotations

import argparse
import ctypes
import re
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


def _status_kb(key: str) -> int:
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1))


def mmap_large_allocations() -> bool:
    """glibc: serve allocations over 64 KiB by mmap, so that memory freed after a step leaves
    the process and the next step's temporaries show in its resident size. Irreversible (it
    also stops glibc's dynamic threshold), so call it after the timed steps."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 65536))       # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def peak_rise(fn) -> float:
    """The largest rise of resident memory during fn() in bytes (nan where Linux's
    /proc/self/clear_refs is not available). Free heap memory is returned first (malloc_trim),
    so temporaries cannot hide in memory the process already holds."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                  # reset VmHWM to the current VmRSS
        before = _status_kb("VmRSS")
    except OSError:
        fn()
        return float("nan")
    fn()
    return (_status_kb("VmHWM") - before) * 1024.0


def tracker_step_time(args, optimizer: str, path: str, jacobians: str = "auto") -> tuple[float, object]:
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
    tracker.jacobian_method = jacobians
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
        before = lens.snapshot()
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


class _Trajectory:
    """One training run (one lens) feeding four trackers: exact / sketch × structured / jacrev."""

    def __init__(self, args, opt_name: str, x, y, x_test):
        dev = args.device
        torch.manual_seed(0)
        self.args, self.opt_name, self.x, self.y = args, opt_name, x, y
        self.model = MLP(args.d, args.width, 3).to(dev)
        common = dict(loss="mse", dtype=args.dtype, memory_budget_gb=64, chunk_size=args.chunk)
        sketch_kw = dict(method="sketch", probes=args.probes, seed=args.seed)
        self.lens = Lens(self.model, {"test": x_test}, smoother=SmootherSpec(x, y, **common))
        tr = {("exact", "auto"): smoother_of(self.lens)}
        tr["sketch", "auto"] = SmootherTracker(SmootherSpec(x, y, **sketch_kw, **common), self.lens)
        tr["exact", "jacrev"] = SmootherTracker(SmootherSpec(x, y, **common), self.lens)
        tr["sketch", "jacrev"] = SmootherTracker(SmootherSpec(x, y, **sketch_kw, **common), self.lens)
        for (_, jac), t in tr.items():
            t.jacobian_method = jac
        self.trackers = tr
        # more probe seeds (untimed, structured products): how often p̂ falls within 5 %
        self.seeds = [SmootherTracker(SmootherSpec(x, y, **{**sketch_kw, "seed": args.seed + s}, **common), self.lens)
                      for s in range(1, args.seeds)] if opt_name == "adamw" else []
        if opt_name == "adamw":
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.99))
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.5)
        self.gen = torch.Generator().manual_seed(0)
        self.steps = 0
        self.times = {key: float("inf") for key in tr}
        self.peaks = {key: float("nan") for key in tr}

    def step(self, keys, measure: str | None = None) -> None:
        """One optimizer step fed to the trackers ``keys``; measure "time" (best of) or "peak"."""
        dev, x, y = self.args.device, self.x, self.y
        idx = torch.randperm(self.args.n, generator=self.gen)[:self.args.batch].to(dev)
        self.opt.zero_grad()
        torch.nn.functional.mse_loss(self.model(x[idx]), y[idx]).backward()
        before = self.lens.snapshot()
        self.opt.step()
        after = dict(self.model.named_parameters())
        delta = {k: after[k].detach() - before[k] for k in before}
        for extra in self.seeds:
            extra.after_step(self.lens, before, delta, idx, self.opt)
        for key in keys:
            tr = self.trackers[key]
            if measure == "peak":
                self.peaks[key] = peak_rise(lambda: tr.after_step(self.lens, before, delta, idx, self.opt))
                continue
            c = clock(dev)
            tr.after_step(self.lens, before, delta, idx, self.opt)
            if measure == "time":
                self.times[key] = min(self.times[key], clock(dev) - c)
        self.steps += 1


def sketch_comparison(args) -> None:
    """Exact vs sketch on one trajectory per optimizer, each with structured products and with
    vmap(jacrev): step times, step peak memory, state memory, and p̂ against p⁰."""
    torch.manual_seed(0)
    dev = args.device
    x = torch.rand(args.n, args.d, device=dev)
    y = (torch.rand(args.n, device=dev) > 0.5).float()
    x_test = torch.rand(args.m, args.d, device=dev)
    runs = {name: _Trajectory(args, name, x, y, x_test) for name in ("adamw", "sgd")}
    every = list(runs["sgd"].trackers)
    for run in runs.values():
        run.step(every)                                   # step 0 allocates the buffers
    for _ in range(args.steps):
        for run in runs.values():
            run.step(every, "time")
    peak = dev == "cpu" and mmap_large_allocations()      # after the timed steps: it changes malloc
    diff = {}
    for name, run in runs.items():
        run.step(every, "peak" if peak else None)
        tr = run.trackers
        diff[name] = {m: float((tr[m, "auto"].R - tr[m, "jacrev"].R).abs().max() / tr[m, "jacrev"].R.abs().max())
                      for m in ("exact", "sketch")}
    adamw = runs["adamw"]
    while adamw.steps < args.train:
        adamw.step([("exact", "auto"), ("sketch", "auto")])
    for name, run in runs.items():
        times, peaks, tr = run.times, run.peaks, run.trackers
        ex = tr["exact", "auto"]
        print(f"[{name}, {ex.path} path] n={args.n} m={args.m} p={ex.p} K={args.probes} "
              f"dtype={args.dtype} device={dev} threads={torch.get_num_threads()} steps={run.steps} "
              f"(timed: {args.steps})")
        for (method, jac), t in tr.items():
            print(f"  {method:6s} {jac:6s} per step {times[method, jac] * 1e3:9.1f} ms   peak "
                  f"{peaks[method, jac] / 2**20:8.1f} MiB   state {state_bytes(t) / 2**20:8.1f} MiB   (L = {t.L})")
        for jac in ("auto", "jacrev"):
            print(f"  sketch speed-up over exact ({jac:6s}) {times['exact', jac] / times['sketch', jac]:6.1f}x"
                  + ("   (target >= 10x)" if jac == "auto" else ""))
        for m in ("exact", "sketch"):
            print(f"  structured over jacrev ({m:6s})       {times[m, 'jacrev'] / times[m, 'auto']:6.1f}x   "
                  f"max |R_structured - R_jacrev| / max |R| after {args.steps + 2} steps: {diff[name][m]:.1e}")
        print(f"  memory ratio exact/sketch (state) {state_bytes(ex) / state_bytes(tr['sketch', 'auto']):.1f}x")
        if name == "adamw":
            sk = tr["sketch", "auto"]
            p0, ph, se = ex.effective_parameters(), sk.effective_parameters(), sk.effective_parameters_se()
            for split in p0:
                print(f"  p_eff {split:5s} exact {p0[split]:9.3f}   sketch {ph[split]:9.3f} ± {se[split]:.3f}"
                      f"   rel. error {abs(ph[split] - p0[split]) / p0[split]:.2%} (target < 5%)")
            if run.seeds:
                every_seed = [sk] + run.seeds
                for split in p0:
                    err = torch.tensor([abs(t.effective_parameters()[split] - p0[split]) / p0[split]
                                        for t in every_seed])
                    rse = torch.tensor([t.effective_parameters_se()[split] / p0[split] for t in every_seed])
                    print(f"  over {len(every_seed)} probe seeds, {split:5s}: rel. error median {err.median():.1%}, "
                          f"max {err.max():.1%}, within 5 %: {int((err < 0.05).sum())}/{len(every_seed)}; "
                          f"se / p0 mean {rse.mean():.1%}")


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
    baseline = None
    if args.baseline_steps:                      # the same sketch with vmap(jacrev) rows, same steps
        baseline = SmootherTracker(spec, lens)
        baseline.jacobian_method = "jacrev"
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    best, best_tracker, best_base, t_all = float("inf"), float("inf"), float("inf"), time.perf_counter()
    for t in range(args.steps + 1):
        idx = torch.randperm(args.n, generator=gen)[:args.batch].to(dev)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
        c = clock(dev)
        before = lens.snapshot()
        opt.step()
        c_obs = clock(dev)
        lens.observe(before, batch=idx, optimizer=opt)          # the lens's JVP and the sketch tracker
        done = clock(dev)
        if t:
            best = min(best, done - c)
        if baseline is not None and t <= args.baseline_steps:
            after = dict(model.named_parameters())
            delta = {k: after[k].detach() - before[k] for k in before}
            c_b = clock(dev)
            baseline.after_step(lens, before, delta, idx, opt)
            if t:
                best_base = min(best_base, clock(dev) - c_b)
                best_tracker = min(best_tracker, done - c_obs)
    p_hat, se = tracker.effective_parameters(), tracker.effective_parameters_se()
    print(f"sketch K={args.probes}: state {state_bytes(tracker) / 2**20:.1f} MiB (estimate "
          f"{spec.memory_estimate(args.n + args.m, p, buffers=3, batch_size=args.batch) / 2**20:.1f} MiB), "
          f"lens.step per step {best:.2f} s (best of {args.steps}), wall {time.perf_counter() - t_all:.1f} s "
          f"for {args.steps + 1} steps")
    if baseline is not None:
        same = args.steps == args.baseline_steps                # both trackers saw the same steps
        gap = float((tracker.R - baseline.R).abs().max()) if same else float("nan")
        print(f"  lens.observe (JVP + tracker, structured) {best_tracker:.2f} s; the same tracker step with "
              f"vmap(jacrev) rows {best_base:.2f} s (best of {args.baseline_steps}); max |R - R_jacrev| after "
              f"{args.baseline_steps + 1} steps {gap:.1e}")
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
    ap.add_argument("--seeds", type=int, default=1, help="probe seeds for the p_eff accuracy (--mode sketch)")
    ap.add_argument("--train", type=int, default=40, help="AdamW steps before comparing p_eff (--mode sketch)")
    ap.add_argument("--baseline-steps", type=int, default=0,
                    help="--mode sketch-large: also time this many steps of the sketch with vmap(jacrev) rows")
    ap.add_argument("--budget-gib", type=float, default=24.0, help="exact path's budget (--mode sketch-large)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "sketch":
        return sketch_comparison(args)
    if args.mode == "sketch-large":
        return sketch_large(args)

    general, tracker = tracker_step_time(args, "adamw", "general")
    general_j, _ = tracker_step_time(args, "adamw", "general", "jacrev")
    floor = floor_time(args, tracker)
    flops = 2 * tracker.p * tracker.L * (args.batch + tracker.n_points) * tracker.k ** 2
    sgd = {jac: tracker_step_time(args, "sgd", "general", jac)[0] for jac in ("auto", "jacrev")}
    kern = {jac: tracker_step_time(args, "sgd", "kernel", jac)[0] for jac in ("auto", "jacrev")}
    print(f"n={args.n} m={args.m} p={tracker.p} N={tracker.n_points} L={tracker.L} batch={args.batch} "
          f"dtype={args.dtype} device={args.device} threads={torch.get_num_threads()}")
    print(f"dense-product floor per step       {floor * 1e3:9.1f} ms  ({flops / floor / 1e9:.1f} GFLOP/s)")
    print("                                  structured     jacrev")
    print(f"general path (AdamW) per step      {general * 1e3:9.1f} ms {general_j * 1e3:9.1f} ms")
    print(f"fraction of floor throughput       {floor / general:9.2f}    {floor / general_j:9.2f}   (target >= 0.60)")
    print(f"SGD general path per step          {sgd['auto'] * 1e3:9.1f} ms {sgd['jacrev'] * 1e3:9.1f} ms")
    print(f"SGD kernel shortcut per step       {kern['auto'] * 1e3:9.1f} ms {kern['jacrev'] * 1e3:9.1f} ms")
    print(f"kernel shortcut speed-up           {sgd['auto'] / kern['auto']:9.2f}x   "
          f"{sgd['jacrev'] / kern['jacrev']:9.2f}x")


if __name__ == "__main__":
    main()
