"""Trace tangent kernel of the modular-arithmetic transformer: structured (position pairs or rows,
NOTE [structured kernel]) vs jacobian, in one run, as ratios. CPU time of this process, best of R.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/transformer_kernel.py [--size quick|paper] [--n 64] [--repeats 2]

quick: p = 23, d_model 32, d_mlp 128 (the grokking-transformer quick preset); paper: p = 113, d_model 128,
d_mlp 512. Peak memory is the process's max RSS after each method (they run in order: positions,
rows, jacobian), so a later, smaller method shows the earlier peak.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from telescope.kernels import empirical_ntk, structured
from telescope.kernels.fastpath import no_fused_fastpath
from telescope.models.transformer import ModularTransformer, modular_tokens

SIZES = {"quick": (23, 32, 128), "paper": (113, 128, 512)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=SIZES, default="quick")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    p, d, d_mlp = SIZES[args.size]
    gen = torch.Generator().manual_seed(0)
    x, _, _, _ = modular_tokens(p, 0.5, generator=gen)
    model = ModularTransformer(p, d, 4, d_mlp, generator=gen)
    x = x[: args.n]
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, {args.size}: p={p} d_model={d} d_mlp={d_mlp}, n={args.n}, trace")
    rule = structured._positional
    results = {}
    for label, impl, force in (("structured, position pairs", "structured", True),
                               ("structured, per-example rows", "structured", False),
                               ("jacobian", "jacobian", None)):
        if force is not None:
            structured._positional = lambda *a, _f=force: _f
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.process_time()
            with no_fused_fastpath():
                K = empirical_ntk(model, x, output="trace", implementation=impl)
            best = min(best, time.process_time() - t0)
        structured._positional = rule
        results[label] = (best, K)
        print(f"  {label:30s} {best:8.3f} s   max RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    base = results["jacobian"][0]
    for label, (t, K) in results.items():
        err = float((K - results["jacobian"][1]).abs().max() / results["jacobian"][1].abs().max())
        print(f"  {label:30s} ×{base / t:6.1f} vs jacobian   max rel. difference {err:.1e}")


if __name__ == "__main__":
    main()
