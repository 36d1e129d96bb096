"""Speed and memory of the empirical-NTK implementations, as ratios to ``jacobian``.

    PYTHONPATH=src python benchmarks/ntk.py            # all workloads (~4 min on 2 cores)
    PYTHONPATH=src python benchmarks/ntk.py --quick    # smaller N, a smoke run

Every (workload, implementation) is measured in its own subprocess: the child builds
the model and inputs, runs a tiny warm-up call, reads its resident set size (VmRSS),
resets the kernel's resident high-water mark (``echo 5 > /proc/self/clear_refs``),
runs the measured call once, and reports the wall time and VmHWM − VmRSS_before:
the peak extra resident memory of the computation, torch allocations included
(tracemalloc would not see them), the returned kernel included. Float32, CPU, one torch thread per
measurement by default (``--threads``): on a shared 2-core machine more threads
make small operations wait on each other and the timings meaningless.

Peers: nngeometry's ``GramMatrix`` (``FMatDense``, layer-wise hooks, x2 = x1 only) when
it imports. Before timing, each implementation's kernel is checked against
``jacobian`` (or ``structured`` where ``jacobian`` is too slow) on a few examples.
``reference`` is only run on the CNN workload, at N = M = 32 (time extrapolated
by (N/32)², "est."): its Python loop over pairs takes minutes for the MLPs. The
same holds for ``ntk_vp`` on the CNN (1280 forward-mode passes over 128 images). On the 784-512-512-10 workload ``jacobian`` and ``ntk_vp`` would
take tens of minutes on 2 cores (about 1.3e14 multiply–adds for the contraction);
they are measured at N = M = 64 and their time extrapolated by (1000/64)², labelled
"est."; their memory there is that of the N = 64 run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch import nn

WORKLOADS = {
    # name: (model, N, output, implementations)
    "mlp784-200-200-10 full N=256": ("mlp200", 256, "full", ["jacobian", "ntk_vp", "structured", "nngeometry"]),
    "mlp784-200-200-10 trace N=256": ("mlp200", 256, "trace", ["jacobian", "ntk_vp", "structured", "nngeometry"]),
    "mlp784-512-512-10 full N=1000": ("mlp512", 1000, "full", ["jacobian@64", "ntk_vp@64", "structured", "nngeometry"]),
    "cnn 32x32x3 full N=128": ("cnn", 128, "full", ["reference@32", "jacobian", "ntk_vp@32", "structured", "nngeometry"]),
}


def build(kind: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if kind == "mlp200":
        model = nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))
        return model, (784,)
    if kind == "mlp512":
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        return model, (784,)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    )
    return model, (3, 32, 32)


def kernel(model: nn.Module, x: torch.Tensor, output: str, implementation: str) -> torch.Tensor:
    """The kernel by one implementation, in our layout ((n, n) or (n, n, k, k))."""
    if implementation == "nngeometry":
        from nngeometry.gram import GramMatrix
        from nngeometry.object import FMatDense

        gram = GramMatrix(model, (x,), representation=FMatDense).data  # (k, n, k, n)
        full = gram.permute(1, 3, 0, 2)
        return full if output == "full" else full.diagonal(dim1=2, dim2=3).sum(-1)
    from telescope.kernels import empirical_ntk

    return empirical_ntk(model, x, output=output, implementation=implementation)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM) of this process (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(kind: str, n: int, output: str, implementation: str, threads: int) -> None:
    torch.set_num_threads(threads)
    model, shape = build(kind)
    x = torch.randn(n, *shape)
    kernel(model, x[:2], output, implementation)  # warm-up: lazy imports, first-call paths
    before = _status_kib("VmRSS")
    if not _reset_peak():  # fall back to ru_maxrss, which cannot see peaks below earlier ones
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    K = kernel(model, x, output, implementation)
    seconds = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM") - before
    print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024, "shape": list(K.shape)}))


def check(kind: str, output: str, implementation: str, baseline: str, n: int = 6) -> float:
    """Max relative difference to the baseline implementation on n examples."""
    model, shape = build(kind)
    x = torch.randn(n, *shape)
    a = kernel(model, x, output, implementation)
    b = kernel(model, x, output, baseline)
    return ((a - b).abs().max() / b.abs().max()).item()


def nngeometry_available() -> str | None:
    try:
        import nngeometry.gram  # noqa: F401
    except Exception as exc:  # pragma: no cover - environment dependent
        return f"{type(exc).__name__}: {exc}"
    return None


def measure(kind: str, n: int, output: str, implementation: str, timeout: float, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(n), output, implementation, "--threads", str(threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s (--timeout)"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N divided by 4")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads per measurement (1: fair and stable on a shared machine)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per measurement")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "N", "OUTPUT", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, n, output, implementation = args.child
        child(kind, int(n), output, implementation, args.threads)
        return
    missing = nngeometry_available()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s) per measurement, float32, CPU")
    print("command: " + " ".join(["python", "benchmarks/ntk.py", *sys.argv[1:]]))
    print("nngeometry: " + ("available" if missing is None else f"skipped ({missing})"))
    start_all = time.perf_counter()
    for title, (kind, n, output, implementations) in WORKLOADS.items():
        if args.quick:
            n = max(8, n // 4)
        print(f"\n== {title}" + (" (quick)" if args.quick else ""))
        rows: dict[str, dict] = {}
        for spec in implementations:
            implementation, _, small = spec.partition("@")
            if implementation == "nngeometry" and missing is not None:
                continue
            n_run = min(n, int(small)) if small else n
            baseline = "structured" if small or implementation == "jacobian" else "jacobian"
            if implementation != baseline:
                err = check(kind, output, implementation, baseline)
            else:
                err = check(kind, output, implementation, "reference")
            result = measure(kind, n_run, output, implementation, args.timeout, args.threads)
            result["check"] = (err, "reference" if implementation == baseline else baseline)
            if small and "seconds" in result:
                result["seconds"] *= (n / n_run) ** 2
                result["estimated_from"] = n_run
            rows[implementation] = result
        base = rows.get("jacobian", {}).get("seconds")
        base_mem = rows.get("jacobian", {}).get("peak_mib")
        print(f"{'implementation':<14}{'seconds':>12}{'peak MiB':>11}{'time/jac':>10}{'mem/jac':>9}  check")
        for implementation, r in rows.items():
            if "error" in r:
                print(f"{implementation:<14}  failed: {r['error']}")
                continue
            est = " est." if "estimated_from" in r else ""
            ratio = f"{r['seconds'] / base:10.4f}" if base else f"{'-':>10}"
            mratio = f"{r['peak_mib'] / base_mem:9.3f}" if base_mem else f"{'-':>9}"
            err, against = r["check"]
            note = f"  (N=M={r['estimated_from']}, time x{(n / r['estimated_from']) ** 2:.0f})" if est else ""
            print(
                f"{implementation:<14}{r['seconds']:11.3f}{est:<1}{r['peak_mib']:11.1f}{ratio}{mratio}"
                f"  rel.diff {err:.1e} vs {against}{note}"
            )
    print(f"\ntotal benchmark time {time.perf_counter() - start_all:.0f} s")


if __name__ == "__main__":
    main()
