"""Speed and memory of the boosting smoother (not a test).

    PYTHONPATH=src python benchmarks/trees.py [--n 10000] [--trees 500] [--depth 3]

Fits a squared-loss GradientBoostingRegressor on synthetic data and builds its training
smoother S (n × n) with the chunked leaf-wise path (NOTE [leaf-wise smoother]). Reports
wall time, peak resident memory above the process baseline in units of one n × n float64
matrix, the exactness max|S y + c − predict|, and — as the in-run baseline — the same
computation one tree per pass (``staged_boosting_smoother``) on the first trees,
extrapolated to all trees. CPU seconds are printed beside wall seconds because a shared
machine stretches wall time.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--baseline-trees", type=int, default=10)
    args = ap.parse_args()

    import torch
    from sklearn.ensemble import GradientBoostingRegressor

    from telescope.trees import boosting_offset, boosting_smoother, staged_boosting_smoother

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, 8))
    y = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.3 * rng.normal(size=args.n)
    t0 = time.perf_counter()
    gbr = GradientBoostingRegressor(n_estimators=args.trees, max_depth=args.depth,
                                    learning_rate=0.1, random_state=0).fit(x, y)
    t_fit = time.perf_counter() - t0
    nn_bytes = args.n * args.n * 8

    _reset_peak()
    base = _rss_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    S = boosting_smoother(gbr, x)
    t_smoother, cpu_smoother = time.perf_counter() - t0, time.process_time() - c0
    peak = _peak_bytes() - base
    c = boosting_offset(gbr, x)
    err = float(np.abs(S @ y + c - gbr.predict(x)).max())
    del S

    # baseline: one tree per pass over S
    t0 = time.perf_counter()
    for k, _ in enumerate(staged_boosting_smoother(gbr, x), start=1):
        if k == args.baseline_trees:
            break
    t_per_tree = (time.perf_counter() - t0) / args.baseline_trees

    print(f"n={args.n} trees={args.trees} depth={args.depth} torch_threads={torch.get_num_threads()}")
    print(f"gbr.fit: {t_fit:.1f} s")
    print(f"boosting_smoother (chunked leaf-wise): {t_smoother:.1f} s wall, {cpu_smoother:.1f} s CPU "
          f"(all threads; on a shared machine wall time includes waiting)")
    print(f"baseline one-tree-per-pass: {t_per_tree:.3f} s/tree -> {t_per_tree * args.trees:.1f} s "
          f"extrapolated; speed-up {t_per_tree * args.trees / t_smoother:.1f}x")
    print(f"peak memory above baseline: {peak / 2**20:.0f} MiB = {peak / nn_bytes:.2f} x one n*n float64 "
          f"({nn_bytes / 2**20:.0f} MiB)")
    print(f"max |S y + c - predict| = {err:.2e}")


if __name__ == "__main__":
    main()
