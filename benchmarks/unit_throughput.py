"""Units in parallel inside one run (NOTE [units in parallel]): grokking-mnist's units with K workers vs 1, in one run.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/unit_throughput.py [--workers 2] [--units 4] [--steps 1500]

The units are grokking-mnist's tiny problem (8×8 digits 3 vs 5, n = 60, width 16, the exact
smoother) trained for ``--steps`` steps, ``--units`` seeds; the study's own ``run`` does the work
(``RunContext(workers=K)``), exactly what ``telescope run grokking-mnist --workers K`` does.
Per worker count:

* wall: the whole run (the K = 1 run is in this process, after an untimed 20-step run that pays
  its first-use costs; K > 1 starts K worker processes from the already running forkserver, whose
  start-up is timed once and printed apart);
* steady rate: training steps per second while the run is between 20 % and 90 % of its steps
  (read from the progress reports: start-up and the last unit's tail left out).

The rows of every K are compared with K = 1 (they must be identical). On a shared machine other
processes take the cores away, so the load average and a control are printed too: the same
CPU-bound pure-Python loop in K processes at once vs one after the other
(benchmarks/sweep_throughput.py). A control near 1.0× means there is no spare parallel capacity
at the moment. :func:`measure` is also the "runs per GPU" section of benchmarks/gpu.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

from telescope.experiments import grokking_mnist
from telescope.experiments.base import RunContext, resolve_config
from telescope.store import MemorySink

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sweep_throughput import parallel_capacity, warm_forkserver  # noqa: E402  (the benchmarks folder)


class Clock:
    """A progress bar that records ``(seconds since start, steps so far)`` at every update."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.points: list[tuple[float, int]] = []
        self.n = 0

    def update(self, n: int = 1) -> None:
        if n:
            self.n += n
            self.points.append((time.perf_counter() - self.start, self.n))

    def close(self) -> None:
        pass

    def steady_rate(self, lo: float = 0.2, hi: float = 0.9) -> float:
        """Steps per second between the updates where the run passed ``lo`` and ``hi`` of its steps."""
        total = self.n
        inside = [(t, n) for t, n in self.points if lo * total <= n <= hi * total]
        if len(inside) < 3 or inside[-1][0] <= inside[0][0]:   # too short a run for a window: NaN
            return float("nan")
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        return (n1 - n0) / (t1 - t0)


class ClockSink(MemorySink):
    """A MemorySink whose progress bar is a :class:`Clock`."""

    def progress(self, total: int, desc: str) -> Clock:
        self.clock = Clock()
        return self.clock


@dataclasses.dataclass
class Result:
    workers: int
    wall: float
    rate: float        # steady steps per second; the whole run's steps / wall where the run is too short
    steady: bool       # whether ``rate`` is the steady rate
    steps: int
    frame: object

    @property
    def rate_text(self) -> str:
        return f"{self.rate:.0f}" + ("" if self.steady else " (whole run)")


def measure(cfg, device: str, workers: int, data_dir=None) -> Result:
    """Run grokking-mnist's ``cfg`` with ``workers`` unit workers on ``device``: wall, steady rate, rows."""
    sink = ClockSink()
    start = time.perf_counter()
    grokking_mnist.run(cfg, sink, RunContext(device=device, data_dir=data_dir, workers=workers))
    wall = time.perf_counter() - start
    frame = sink.metrics()
    keys = [c for c in frame.columns if c != "value"]
    frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    rate = sink.clock.steady_rate()
    steady = rate == rate
    return Result(workers, wall, rate if steady else sink.clock.n / wall, steady, sink.clock.n, frame)


def same_rows(a: Result, b: Result) -> bool:
    return a.frame.equals(b.frame[a.frame.columns])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--units", type=int, default=4, help="seeds of the one α: the units of the run")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(1)   # each worker runs one thread (NOTE [one thread per worker]); so does K = 1
    cfg = resolve_config("grokking-mnist", grokking_mnist.Config, "tiny",
                         overrides={"steps": str(args.steps), "seeds": str(args.units)})
    print(f"cores available: {len(os.sched_getaffinity(0))}  load average before: {os.getloadavg()[0]:.1f}  "
          f"control: {args.workers} spinning processes x{parallel_capacity(args.workers):.2f} vs one by one")
    print(f"torch {torch.__version__}, threads per process 1; grokking-mnist tiny, {args.units} units x "
          f"{args.steps} steps (exact smoother, n = {cfg.n_train}, width {cfg.width})")
    print(f"forkserver start (imports, once per driver process): {warm_forkserver():.1f} s")
    measure(dataclasses.replace(cfg, steps=20, seeds=1), "cpu", 1)   # in-process first-use costs, not timed
    base = measure(cfg, "cpu", 1)
    rows = [base, measure(cfg, "cpu", args.workers)]
    print("\n| workers | wall s | x wall | steady steps/s | x steady | rows identical to K = 1 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.workers} | {r.wall:.1f} | {base.wall / r.wall:.2f} | {r.rate_text} | {r.rate / base.rate:.2f} | "
              f"{same_rows(base, r)} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
