"""Is oneDNN faster than torch's default BLAS for the structured kernel's products here?

    PYTHONPATH=src python benchmarks/gemm_backends.py [--threads 1]

Issue 26 measured oneDNN (``tensor.to_mkldnn()`` + ``torch._C._nn.mkldnn_linear``) 1.3-2.3x
faster than MKL's sgemm on an AMD EPYC and slower on an Intel Xeon. This times both, in one
process, at the shapes of docs/benchmarks-ntk.md (``A Bᵀ`` with A (m, d), B (n, d), float32),
median of 5 after a warm-up, and prints GFLOP/s and the ratio. "oneDNN incl. conversion"
counts converting the left operand each call (the right one is converted once, as it would
be cached per call); "raw" excludes both. The structured path uses oneDNN only if this says
it pays on the machine at hand (NOTE [gemm backend] in telescope/kernels/structured.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

SHAPES = [  # (m, n, d): the products of the table's workloads
    (1000, 1000, 785),  # A₁A₁ᵀ, first layer of a Gram
    (1000, 1000, 512),  # G₁G₁ᵀ, hidden layer, k = 1
    (1000, 100, 785),  # cross kernel 1000 x 100
    (10000, 1000, 512),  # full cross, k = 10
    (2500, 10000, 512),  # a row tile of the full Gram, k = 10
]


def median_time(fn, reps: int = 5) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), mkldnn available: "
          f"{torch.backends.mkldnn.is_available()}")
    with open("/proc/loadavg") as f:
        print("load average: " + f.read().strip())
    print(f"{'m x n x d':<20}{'BLAS GF/s':>10}{'oneDNN GF/s':>13}{'raw':>8}{'oneDNN/BLAS':>13}{'raw':>7}  max rel. diff")
    for m, n, d in SHAPES:
        a, b = torch.randn(m, d), torch.randn(n, d)
        a_dnn, b_dnn = a.to_mkldnn(), b.to_mkldnn()
        flops = 2 * m * n * d / 1e9
        t_blas = median_time(lambda: a @ b.T)
        t_dnn = median_time(lambda: torch._C._nn.mkldnn_linear(a.to_mkldnn(), b_dnn, None).to_dense())
        t_raw = median_time(lambda: torch._C._nn.mkldnn_linear(a_dnn, b_dnn, None))
        ref = a @ b.T
        diff = ((torch._C._nn.mkldnn_linear(a_dnn, b_dnn, None).to_dense() - ref).abs().max() / ref.abs().max()).item()
        print(f"{f'{m} x {n} x {d}':<20}{flops / t_blas:10.0f}{flops / t_dnn:13.0f}{flops / t_raw:8.0f}"
              f"{t_blas / t_dnn:13.2f}{t_blas / t_raw:7.2f}  {diff:.1e}")


if __name__ == "__main__":
    main()
