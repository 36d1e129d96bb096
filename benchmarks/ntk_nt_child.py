"""neural-tangents side of ``benchmarks/ntk.py --nt-python PYTHON`` (runs in that interpreter).

    PYTHON benchmarks/ntk_nt_child.py WORKLOAD.npz --calls 5 --threads 1 --check-out CHECK.npz

Needs only numpy, jax and neural_tangents (``benchmarks/nt_env.sh`` builds the environment);
never imports torch. ``WORKLOAD.npz`` (written by ``benchmarks/ntk.py``) holds the network as a
JSON layer list plus its weights already in JAX layouts (dense ``(d_in, d_out)``, conv HWIO,
the dense layer after a flatten with its input permuted to NHWC order), the inputs
(images NHWC) and the check subsets. The kernel is
``nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=3)`` under ``jax.jit``:
its fastest implementation (structured derivatives) on these networks. Prints one JSON line:
the first call (tracing and compilation included) and each steady-state call in seconds
(wall and process CPU time);
writes the (n1, n2, k, k) kernel of the check subsets to ``--check-out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check-out", required=True)
    parser.add_argument("--implementation", type=int, default=3)
    parser.add_argument("--affinity", help="pin this process to these CPUs, e.g. 0")
    args = parser.parse_args()
    if args.affinity:  # XLA's CPU client keeps worker threads whatever the flags say
        os.sched_setaffinity(0, {int(c) for c in args.affinity.split(",")})
    if args.threads == 1:  # before jax is imported: XLA reads its flags once
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt
    import numpy as np

    data = np.load(args.workload)
    spec = json.loads(str(data["spec"]))
    params = [jnp.asarray(data[name]) for name in spec["params"]]
    layers = spec["layers"]

    def apply(p, x):
        for layer in layers:
            kind = layer["type"]
            if kind == "dense":
                x = x @ p[layer["w"]] + p[layer["b"]]
            elif kind == "relu":
                x = jax.nn.relu(x)
            elif kind == "conv":
                pad = layer["pad"]
                x = jax.lax.conv_general_dilated(
                    x, p[layer["w"]], (1, 1), ((pad, pad), (pad, pad)),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                ) + p[layer["b"]]
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            else:
                raise ValueError(f"ntk_nt_child: unknown layer type {kind!r}")
        return x

    kernel_fn = jax.jit(
        nt.empirical_ntk_fn(apply, trace_axes=(), vmap_axes=0, implementation=args.implementation)
    )
    x1 = jnp.asarray(data["x1_nt"])
    x2 = jnp.asarray(data["x2_nt"]) if "x2_nt" in data else None
    start = time.perf_counter()
    kernel_fn(x1, x2, params).block_until_ready()
    first = time.perf_counter() - start
    steady, steady_cpu = [], []
    for _ in range(args.calls):
        start, start_cpu = time.perf_counter(), time.process_time()
        kernel_fn(x1, x2, params).block_until_ready()
        steady.append(time.perf_counter() - start)
        steady_cpu.append(time.process_time() - start_cpu)
    c1 = jnp.asarray(data["c1_nt"])
    c2 = jnp.asarray(data["c2_nt"]) if "c2_nt" in data else None
    np.savez(args.check_out, K=np.asarray(kernel_fn(c1, c2, params)))
    print(json.dumps({
        "first": first, "steady": steady, "steady_cpu": steady_cpu, "device": str(jax.devices()[0]),
        "versions": f"jax {jax.__version__}, neural-tangents {nt.__version__}",
    }))


if __name__ == "__main__":
    main()
