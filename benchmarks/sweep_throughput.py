"""Sweep throughput: a 16-run tiny sweep on 1 local worker, then on K, measured in one run.

    PYTHONPATH=src python benchmarks/sweep_throughput.py [--workers 2] [--repeats 1]

Each sweep starts from an empty directory (nothing skipped). Three numbers per worker count:

* warm: 16 runs / wall time of `run_sweep`, workers started from the already running
  forkserver (NOTE [warm workers] in telescope.sweeps.backends): what every sweep after the
  first in a driver process, and every replacement worker, pays;
* cold: the same sweep in a fresh Python process, so the wall time includes starting the
  forkserver (importing torch, scikit-learn and the experiments once);
* steady state: runs finished after every worker has finished its first run, divided by
  the time from that moment to the end.

Issue 9's target: >= 1.7x with 2 workers on a 2-core machine. On a shared machine other
processes take the cores away, so the benchmark also prints the load average and a control:
the same CPU-bound pure-Python loop in K spawned processes at once vs one after the other.
A control near 1.0x means the machine has no spare parallel capacity at the moment, and no
sweep can be faster with more workers then.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time

from telescope.sweeps import SweepSpec, default_workers, parse_grid, run_sweep
from telescope.sweeps.backends import worker_context

GRID = ["width=16,24,32,48"]
SEEDS = 4  # 4 widths x 4 seeds = 16 runs


def _spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i
    return x


def parallel_capacity(workers: int, n: int = 10_000_000) -> float:
    """Speed-up of ``workers`` spawned processes spinning at once over running them in turn."""
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_spin, [1000] * workers)  # start-up not timed
        start = time.perf_counter()
        for _ in range(workers):
            pool.apply(_spin, (n,))
        serial = time.perf_counter() - start
        start = time.perf_counter()
        pool.map(_spin, [n] * workers, chunksize=1)
        parallel = time.perf_counter() - start
    return serial / parallel


def timed_sweep(workers: int) -> tuple[float, float]:
    """``(end-to-end seconds, steady-state runs per second)``."""
    spec = SweepSpec("approximation", "tiny", parse_grid(GRID), seeds=SEEDS)
    done: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as out:
        start = time.perf_counter()

        def on_event(kind, info):
            if kind == "done":
                done.append((time.perf_counter() - start, info["pid"]))

        result = run_sweep(spec, out, workers=workers, on_event=on_event)
        seconds = time.perf_counter() - start
    if not result.ok or len(result.ran) != 16:
        raise SystemExit(f"benchmark sweep did not finish cleanly: {result}")
    first = {}
    for t, pid in done:
        first.setdefault(pid, t)
    warm = max(first.values())
    later = [t for t, _ in done if t > warm]
    steady = len(later) / (seconds - warm) if later and seconds > warm else float("nan")
    return seconds, steady


def warm_forkserver() -> float:
    """Start the forkserver the local backend uses and wait for its preload; seconds taken."""
    start = time.perf_counter()
    process = worker_context().Process(target=os.getpid)  # served only once the preload is done
    process.start()
    process.join()
    return time.perf_counter() - start


def cold_sweep(workers: int) -> float:
    """End-to-end seconds of the sweep in a fresh interpreter (forkserver start included)."""
    out = subprocess.run([sys.executable, __file__, "--single", str(workers)], check=True,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--single", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(timed_sweep(args.single)[0])
        return
    print(f"cores available: {default_workers()}  load average before: {os.getloadavg()[0]:.1f}  "
          f"control: {args.workers} spinning processes x{parallel_capacity(args.workers):.2f} vs one by one")
    counts = (1, args.workers)
    cold = {w: min(cold_sweep(w) for _ in range(args.repeats)) for w in counts}
    print(f"forkserver start (imports, once per driver process): {warm_forkserver():.1f} s")
    rows: dict[int, list[tuple[float, float]]] = {w: [] for w in counts}
    for _ in range(args.repeats):
        for workers in rows:
            rows[workers].append(timed_sweep(workers))
    base_wall = min(t for t, _ in rows[1])
    base_rate = max(r for _, r in rows[1])
    for workers, results in rows.items():
        wall = min(t for t, _ in results)
        rate = max(r for _, r in results)
        print(f"workers={workers}: warm {wall:5.1f} s for 16 runs ({16 / wall:.2f} runs/s, x{base_wall / wall:.2f} vs 1)"
              f"  cold {cold[workers]:5.1f} s (x{cold[1] / cold[workers]:.2f})"
              f"  steady state {rate:.2f} runs/s (x{rate / base_rate:.2f})")
    print(f"load average after: {os.getloadavg()[0]:.1f}  "
          f"control: x{parallel_capacity(args.workers):.2f}")


if __name__ == "__main__":
    main()
