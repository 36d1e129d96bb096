"""Speed and memory of the empirical-NTK implementations, and telescope against its peers.

    PYTHONPATH=src python benchmarks/ntk.py --suite peers --nt-python /work/nt-env/bin/python --affinity 0
    PYTHONPATH=src python benchmarks/ntk.py          # --suite implementations: ratios to ``jacobian``
    ... --quick                       # smaller N, one process, two calls: a smoke run
    ... --device cuda                 # torch on the GPU (neural-tangents: wherever its jax runs)

``--suite peers`` (issue 26): the workloads of the issue's table, each (workload, method) in
``--processes`` fresh processes (default 3); in each, the first call is timed alone (lazy
imports, neural-tangents' jit compilation) and then ``--calls`` (default 5) steady-state calls;
the table gives the median over processes of each process's median, and the median first
call. Methods: ``telescope`` (``empirical_ntk(..., implementation="structured")``), the
``closed form`` (``closed_form_ntk`` below: a plain torch function for ReLU MLPs computing the
same sum of per-layer products, one batched backward through the ReLU masks for all outputs,
full products even for a Gram: the floor), ``neural-tangents`` (``--nt-python``: a separate
interpreter running ``benchmarks/ntk_nt_child.py`` on the same weights, exported to ``.npz``
with conv weights HWIO and the flatten order permuted to NHWC; ``benchmarks/nt_env.sh`` builds
it) and ``nngeometry`` (Grams only, if it imports; one process, one steady call: it is slow).
Every method's kernel on a check subset (8 × 8 or 8 × 4 examples, same weights) is compared
with ``jacobian`` in float64 ("max rel. err").

``--suite implementations`` (the default; ratios to ``jacobian``):
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
import os
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


def child(kind: str, n: int, output: str, implementation: str, threads: int, device: str = "cpu") -> None:
    torch.set_num_threads(threads)
    model, shape = build(kind)
    model = model.to(device)
    x = torch.randn(n, *shape).to(device)
    kernel(model, x[:2], output, implementation)  # warm-up: lazy imports, first-call paths
    if device == "cuda":  # peak of torch's allocator on the device, the kernel included
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = _status_kib("VmRSS")
        if not _reset_peak():  # fall back to ru_maxrss, which cannot see peaks below earlier ones
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    K = kernel(model, x, output, implementation)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device == "cuda":
        peak_kib = (torch.cuda.max_memory_allocated() - before) // 1024
    else:
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


def measure(kind: str, n: int, output: str, implementation: str, timeout: float, threads: int, device: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(n), output, implementation, "--threads", str(threads),
           "--device", device]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s (--timeout)"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- peers (issue 26)

PEER_WORKLOADS = {
    # name: (network, n1, n2 (None: Gram), output)
    "MLP 784-512-512-1, Gram": (("mlp", [512, 512], 1), 1000, None, "trace"),
    "MLP 784-512-512-1, cross": (("mlp", [512, 512], 1), 1000, 100, "trace"),
    "MLP 784-512-512-10, full Gram": (("mlp", [512, 512], 10), 1000, None, "full"),
    "MLP 784-512-512-10, full cross": (("mlp", [512, 512], 10), 1000, 100, "full"),
    "MLP 784-512x4-1, Gram": (("mlp", [512] * 4, 1), 1000, None, "trace"),
    "MLP 784-2048-2048-1, Gram": (("mlp", [2048, 2048], 1), 1000, None, "trace"),
    "MLP 784-128-128-1, Gram": (("mlp", [128, 128], 1), 1000, None, "trace"),
    "CNN 3x32x32 conv16-conv16-linear, full Gram": (("cnn", None, 10), 128, None, "full"),
}
PEER_METHODS = ("telescope", "closed form", "neural-tangents", "nngeometry")
CHECK_N1, CHECK_N2 = 8, 4


def build_peer(net: tuple) -> tuple[nn.Module, tuple[int, ...]]:
    kind, widths, k = net
    torch.manual_seed(0)
    if kind == "mlp":
        layers: list[nn.Module] = []
        d = 784
        for w in widths:
            layers += [nn.Linear(d, w), nn.ReLU()]
            d = w
        return nn.Sequential(*layers, nn.Linear(d, k)), (784,)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 32 * 32, k),
    )
    return model, (3, 32, 32)


def export_workload(path: str, net: tuple, n1: int, n2: int | None) -> None:
    """Weights and inputs in both layouts: torch (``t/...``) and JAX (``*_nt``, NOTE in ntk_nt_child)."""
    import numpy as np

    model, shape = build_peer(net)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(n1, *shape, generator=g)
    x2 = None if n2 is None else torch.randn(n2, *shape, generator=g)
    c1 = torch.randn(CHECK_N1, *shape, generator=g)
    c2 = None if n2 is None else torch.randn(CHECK_N2, *shape, generator=g)
    arrays: dict[str, object] = {f"t/{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    layers, names = [], []
    image = None  # (C, H, W) while the activations are images
    if len(shape) == 3:
        image = shape
    for i, m in enumerate(model):
        if isinstance(m, nn.Linear):
            w = m.weight.detach()
            if layers and layers[-1]["type"] == "flatten" and image is not None:
                c, h, wd = image  # torch flattens (C, H, W); NHWC flattens (H, W, C)
                w = w.reshape(-1, c, h, wd).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
                image = None
            arrays[f"w{i}"], arrays[f"b{i}"] = w.T.contiguous().numpy(), m.bias.detach().numpy()
            layers.append({"type": "dense", "w": len(names), "b": len(names) + 1})
            names += [f"w{i}", f"b{i}"]
        elif isinstance(m, nn.Conv2d):
            arrays[f"w{i}"] = m.weight.detach().permute(2, 3, 1, 0).contiguous().numpy()  # HWIO
            arrays[f"b{i}"] = m.bias.detach().numpy()
            layers.append({"type": "conv", "w": len(names), "b": len(names) + 1, "pad": m.padding[0]})
            names += [f"w{i}", f"b{i}"]
            image = (m.out_channels, *image[1:])
        elif isinstance(m, nn.ReLU):
            layers.append({"type": "relu"})
        elif isinstance(m, nn.Flatten):
            layers.append({"type": "flatten"})
        else:  # pragma: no cover - the workloads above use only these
            raise TypeError(type(m).__name__)

    def nt_layout(x: torch.Tensor) -> object:
        return (x.permute(0, 2, 3, 1) if x.dim() == 4 else x).contiguous().numpy()

    for label, x in (("x1", x1), ("x2", x2), ("c1", c1), ("c2", c2)):
        if x is not None:
            arrays[label] = x.numpy()
            arrays[f"{label}_nt"] = nt_layout(x)
    arrays["spec"] = np.array(json.dumps({"params": names, "layers": layers}))
    np.savez(path, **arrays)


def load_workload(path: str, net: tuple, device: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    import numpy as np

    data = np.load(path)
    model, _ = build_peer(net)
    model.load_state_dict({k[2:]: torch.from_numpy(data[k]) for k in data.files if k.startswith("t/")})
    xs = {k: torch.from_numpy(data[k]).to(device) for k in ("x1", "x2", "c1", "c2") if k in data.files}
    return model.to(device), xs


def closed_form_ntk(model: nn.Sequential, x1: torch.Tensor, x2: torch.Tensor | None, output: str) -> torch.Tensor:
    """The floor: the kernel of a ReLU MLP written out by hand.

    Per side: a forward keeping each layer's input ``a_l`` and ReLU mask, then one backward
    batched over the k outputs, ``G_L = I``, ``G_l = (G_{l+1} W_{l+1}) ⊙ mask_l`` as
    ``(n, k, d_l)``. Then ``K = Σ_l (A_l A_l'ᵀ + 1) ⊙ (G_l G_l'ᵀ)``, accumulated in place in
    ``(n1, k, n2, k)`` order (``addcmul_``) and returned as a ``(n1, n2, k, k)`` view
    (``"trace"``: ``(n1, n2)``). No use of symmetry: a Gram costs what a cross kernel of the
    same size does.
    """
    linears = [m for m in model if isinstance(m, nn.Linear)]

    def side(x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        A, masks, a = [], [], x
        for i, lin in enumerate(linears):
            A.append(torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1))
            z = torch.addmm(lin.bias, a, lin.weight.T)
            if i < len(linears) - 1:
                masks.append(z > 0)
                a = z.clamp_min(0)
        n, k = x.shape[0], linears[-1].out_features
        g = torch.eye(k, dtype=x.dtype, device=x.device).expand(n, k, k)
        G = [g]
        for i in range(len(linears) - 2, -1, -1):
            g = (g @ linears[i + 1].weight) * masks[i][:, None, :]  # (n, k, d_i)
            G.append(g)
        return A, G[::-1]

    with torch.no_grad():
        A1, G1 = side(x1)
        A2, G2 = (A1, G1) if x2 is None else side(x2)
        n1, n2, k = x1.shape[0], A2[0].shape[0], G1[-1].shape[1]
        out = None
        for a1, g1, a2, g2 in zip(A1, G1, A2, G2):
            AA = a1 @ a2.T
            if output == "full":
                GG = (g1.reshape(n1 * k, -1) @ g2.reshape(n2 * k, -1).T).view(n1, k, n2, k)
                scale = AA[:, None, :, None]
            else:
                GG, scale = g1.reshape(n1, -1) @ g2.reshape(n2, -1).T, AA
            if out is None:
                out = GG.mul_(scale)
            else:
                out.addcmul_(GG, scale)
        return out.permute(0, 2, 1, 3) if output == "full" else out


def peer_kernel(method: str, model: nn.Module, x1, x2, output: str) -> torch.Tensor:
    """(n1, n2, k, k) or (n1, n2) by one method (torch side)."""
    if method == "closed form":
        return closed_form_ntk(model, x1, x2, output)
    if method == "nngeometry":
        return kernel(model, x1, output, "nngeometry")
    from telescope.kernels import empirical_ntk

    return empirical_ntk(model, x1, x2, output=output, implementation="structured")


def pin(affinity: str | None) -> None:
    """Restrict this process to the CPUs in ``affinity`` ("0" or "0,1"), if given."""
    if affinity:
        os.sched_setaffinity(0, {int(c) for c in affinity.split(",")})


def peer_child(workload: str, net: tuple, output: str, method: str, calls: int, threads: int,
               device: str, check_out: str) -> None:
    import numpy as np

    torch.set_num_threads(threads)
    if method == "telescope":  # imported before timing, as the neural-tangents child imports jax
        import telescope.kernels  # noqa: F401
    elif method == "nngeometry":
        import nngeometry.gram  # noqa: F401
    model, xs = load_workload(workload, net, device)
    x1, x2 = xs["x1"], xs.get("x2")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times, cpu = [], []
    for _ in range(calls + 1):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        peer_kernel(method, model, x1, x2, output)
        sync()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    K = peer_kernel(method, model, xs["c1"], xs.get("c2"), output)
    if output == "trace":
        K = K[:, :, None, None]
    np.savez(check_out, K=K.detach().cpu().numpy())
    print(json.dumps({"first": times[0], "steady": times[1:], "steady_cpu": cpu[1:], "device": device}))


def run_peer(cmd: list[str], timeout: float) -> dict:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s (--timeout)"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_against_jacobian(workload: str, net: tuple, output: str, K: "object") -> float:
    """Max relative difference of a check-subset kernel to ``jacobian`` in float64."""
    import numpy as np

    from telescope.kernels import empirical_ntk

    model, xs = load_workload(workload, net, "cpu")
    model = model.double()
    c1, c2 = xs["c1"].double(), xs.get("c2")
    R = empirical_ntk(model, c1, None if c2 is None else c2.double(), output="full", implementation="jacobian")
    R = R.numpy()
    return float(np.abs(np.asarray(K, dtype=np.float64) - R).max() / np.abs(R).max())


def peers(args: argparse.Namespace) -> None:
    import statistics
    import tempfile

    import numpy as np

    print(f"torch {torch.__version__}, {args.threads} thread(s) per process (torch and XLA), float32, "
          f"device {args.device}; {args.processes} process(es) x (first call + {args.calls} calls); "
          f"children pinned to CPUs {args.affinity or '(not pinned)'}")
    print("command: " + " ".join(["python", "benchmarks/ntk.py", *sys.argv[1:]]))
    missing = nngeometry_available()
    print("nngeometry: " + ("available" if missing is None else f"skipped ({missing})"))
    print("neural-tangents: " + (args.nt_python or "skipped (no --nt-python)"))
    with open("/proc/loadavg") as f:
        print("load average at start: " + f.read().strip())
    here = os.path.dirname(os.path.abspath(__file__))
    chosen = [w for w in PEER_WORKLOADS if not args.only or any(s in w for s in args.only)]
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="ntk-peers-") as tmp:
        for title in chosen:
            net, n1, n2, output = PEER_WORKLOADS[title]
            if args.quick:
                n1, n2 = max(8, n1 // 4), None if n2 is None else max(4, n2 // 4)
            path = os.path.join(tmp, "workload.npz")
            export_workload(path, net, n1, n2)
            rows: dict[str, dict] = {}
            for method in PEER_METHODS:
                if method == "closed form" and net[0] != "mlp":
                    continue
                if method == "nngeometry" and (missing is not None or n2 is not None or args.device != "cpu"):
                    continue
                if method == "neural-tangents" and not args.nt_python:
                    continue
                processes, calls = (1, 1) if method == "nngeometry" else (args.processes, args.calls)
                runs = []
                for p in range(processes):
                    check_out = os.path.join(tmp, f"check{p}.npz")
                    if method == "neural-tangents":
                        cmd = [args.nt_python, os.path.join(here, "ntk_nt_child.py"), path, "--calls", str(calls),
                               "--threads", str(args.threads), "--check-out", check_out]
                        cmd += ["--affinity", args.affinity] if args.affinity else []
                    else:
                        cmd = [sys.executable, os.path.abspath(__file__), "--peer-child", path, title, method,
                               "--calls", str(calls), "--threads", str(args.threads), "--device", args.device,
                               "--check-out", check_out]
                        cmd += ["--affinity", args.affinity] if args.affinity else []
                    r = run_peer(cmd, args.timeout)
                    if "error" not in r:
                        r["check"] = check_against_jacobian(path, net, output, np.load(check_out)["K"])
                    runs.append(r)
                good = [r for r in runs if "error" not in r]
                if not good:
                    rows[method] = {"error": runs[0]["error"]}
                    continue
                rows[method] = {
                    "steady": statistics.median(statistics.median(r["steady"]) for r in good),
                    "cpu": statistics.median(statistics.median(r["steady_cpu"]) for r in good),
                    "first": statistics.median(r["first"] for r in good),
                    "check": max(r["check"] for r in good),
                    "spread": [round(statistics.median(r["steady"]), 4) for r in good],
                    "device": good[0].get("device"),
                }
            with open("/proc/loadavg") as f:
                load = f.read().split()[:3]
            results[title] = rows
            size = f"N={n1}" + ("" if n2 is None else f" x {n2}")
            print(f"\n== {title} ({size}, output={output})   load average after: {' '.join(load)}")
            tel = rows.get("telescope", {}).get("steady")
            print(f"{'method':<17}{'steady s':>10}{'cpu s':>9}{'first s':>10}{'x telescope':>13}"
                  "  max rel. err  per-process medians (wall)")
            for method, r in rows.items():
                if "error" in r:
                    print(f"{method:<17}  failed: {r['error']}")
                    continue
                ratio = f"{r['steady'] / tel:13.2f}" if tel else f"{'-':>13}"
                print(f"{method:<17}{r['steady']:10.4f}{r['cpu']:9.4f}{r['first']:10.3f}{ratio}  {r['check']:.1e}"
                      f"      {r['spread']}")
    print("\nsummary, steady state wall (process CPU time): NT / telescope (goal >= 1.0), "
          "telescope / closed form (goal <= 1.1); first call NT / telescope")
    for title, rows in results.items():
        get = lambda m, f: rows.get(m, {}).get(f)  # noqa: E731

        def ratio(a: str, b: str) -> str:
            wall = (get(a, "steady"), get(b, "steady"))
            cpu = (get(a, "cpu"), get(b, "cpu"))
            return f"{wall[0] / wall[1]:.2f} ({cpu[0] / cpu[1]:.2f})" if all(wall) and all(cpu) else "-"

        first = (get("neural-tangents", "first"), get("telescope", "first"))
        print(f"  {title:<46}NT/tel {ratio('neural-tangents', 'telescope'):<13}"
              f"tel/closed {ratio('telescope', 'closed form'):<13}"
              f"first NT/tel {first[0] / first[1]:.1f}" if all(first) else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suite", choices=("implementations", "peers"), default="implementations",
        help="implementations: ratios to jacobian (the default, as before); peers: issue 26's table",
    )
    parser.add_argument("--quick", action="store_true", help="N divided by 4 (peers: also 1 process, 2 calls)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch (and XLA) threads per measurement (1: fair and stable on a shared machine)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch's device")
    parser.add_argument("--nt-python", help="interpreter with neural-tangents (benchmarks/nt_env.sh)")
    parser.add_argument("--processes", type=int, default=3, help="peers: fresh processes per method")
    parser.add_argument("--calls", type=int, default=5, help="peers: steady-state calls per process")
    parser.add_argument(
        "--affinity", help="peers: pin every child to these CPUs, e.g. 0 (XLA ignores thread flags "
        "for some of its pools; pinning gives every method the same cores)",
    )
    parser.add_argument("--only", nargs="*", help="peers: workloads whose title contains one of these")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per measurement")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "N", "OUTPUT", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--peer-child", nargs=3, metavar=("NPZ", "WORKLOAD", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--check-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if args.child:
        kind, n, output, implementation = args.child
        child(kind, int(n), output, implementation, args.threads, args.device)
        return
    if args.peer_child:
        pin(args.affinity)
        path, title, method = args.peer_child
        net, _, _, output = PEER_WORKLOADS[title]
        peer_child(path, net, output, method, args.calls, args.threads, args.device, args.check_out)
        return
    if args.quick and args.suite == "peers":
        args.processes, args.calls = 1, 2
    if args.suite == "peers":
        peers(args)
    else:
        implementations(args)


def implementations(args: argparse.Namespace) -> None:
    missing = nngeometry_available()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s) per measurement, float32, {args.device}")
    print("command: " + " ".join(["python", "benchmarks/ntk.py", *sys.argv[1:]]))
    print("nngeometry: " + ("available" if missing is None else f"skipped ({missing})"))
    if args.device != "cpu":
        missing = "CPU only"
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
            result = measure(kind, n_run, output, implementation, args.timeout, args.threads, args.device)
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
