"""Sweep throughput: a 16-run tiny sweep on 1 local worker, then on 2, in one process.

    PYTHONPATH=src python benchmarks/sweep_throughput.py [--workers 2] [--repeats 1]

Each sweep starts from an empty directory (nothing skipped) and includes starting the
worker processes. Prints runs per second for each worker count and the ratio against
1 worker (issue 9's target: >= 1.7x with 2 workers on a 2-core machine). The load
average is printed too: on a shared machine other processes take cores away.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from telescope.sweeps import SweepSpec, default_workers, parse_grid, run_sweep

GRID = ["width=16,24,32,48"]
SEEDS = 4  # 4 widths x 4 seeds = 16 runs


def timed_sweep(workers: int) -> float:
    spec = SweepSpec("approximation", "tiny", parse_grid(GRID), seeds=SEEDS)
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as out:
        start = time.perf_counter()
        result = run_sweep(spec, out, workers=workers)
        seconds = time.perf_counter() - start
    if not result.ok or len(result.ran) != 16:
        raise SystemExit(f"benchmark sweep did not finish cleanly: {result}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"cores available: {default_workers()}  load average before: {os.getloadavg()[0]:.1f}")
    rows = {1: [], args.workers: []}
    for _ in range(args.repeats):
        for workers in rows:
            rows[workers].append(timed_sweep(workers))
    base = min(rows[1])
    for workers, times in rows.items():
        best = min(times)
        print(f"workers={workers}: {best:7.1f} s for 16 runs  ({16 / best:.3f} runs/s)  "
              f"throughput x{base / best:.2f} vs 1 worker  (all: {', '.join(f'{t:.1f}' for t in times)} s)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
