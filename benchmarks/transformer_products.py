"""Closed-form Jacobian products for transformer layers (nn.Embedding, nn.LayerNorm, nn.Linear on
sequences; NOTE [token and sequence layers] in lens/products.py) against vmap(jacrev) rows, the
in-run baseline, on the grokking-transformer model (ModularTransformer with LayerNorms).

    PYTHONPATH=src python benchmarks/transformer_products.py [--p 23] [--d 32] [--n 256] [--L 18]
        [--repeats 5] [--threads 1] [--dtype float64]

Per method (``auto`` = closed form, ``jacrev`` = rows): the time of a side (the derivative
information of n inputs), of J·Δ and of Jᵀ·E with Δ: p × L and E: n·k × L (L = K + 2 of the
sketch), best of ``--repeats``, as process CPU time (other jobs on a shared machine do not
distort it; use --threads 1), and the ratio jacrev / auto. The two methods' results are
compared (max abs difference) so the ratio is between equal computations.
"""

from __future__ import annotations

import argparse
import time

import torch

from telescope.lens.products import JacobianProducts, Prepared
from telescope.models.transformer import ModularTransformer, modular_tokens


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=int, default=23)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--L", type=int, default=18)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float64")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    g = torch.Generator().manual_seed(0)
    x = modular_tokens(a.p, 0.9, generator=g)[0][:a.n]
    model = ModularTransformer(a.p, a.d, 4, layer_norm=True, generator=g, dtype=dtype)
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    sizes = [params[n].numel() for n in names]
    k, pdim, n = a.p, sum(sizes), x.shape[0]
    D = torch.randn(pdim, a.L, dtype=dtype)
    E = torch.randn(n * k, a.L, dtype=dtype)
    print(f"ModularTransformer p={a.p} d={a.d} (+LayerNorm), parameters {pdim}, n={n}, k={k}, L={a.L}, "
          f"{a.dtype}, threads {torch.get_num_threads()}")
    res, times = {}, {}
    for method in ("auto", "jacrev"):
        prod = JacobianProducts(model, names, sizes, k, dtype, method=method)
        side = prod.side(params, x)
        out = torch.zeros(n * k, a.L, dtype=dtype)
        G = torch.zeros(pdim, a.L, dtype=dtype)
        prep_d, prep_g = Prepared(D), Prepared(G)
        t_side = best(lambda: prod.side(params, x), a.repeats)
        t_apply = best(lambda: (prep_d.new_step(), prod.apply(side, prep_d, out.zero_())), a.repeats)
        t_t = best(lambda: prod.transpose_apply(side, E, prep_g), a.repeats)
        res[method] = (out.clone(), G.clone())
        times[method] = (t_side, t_apply, t_t)
        print(f"  {method:7s} side {t_side * 1e3:9.1f} ms   J·Δ {t_apply * 1e3:8.2f} ms   Jᵀ·E {t_t * 1e3:8.2f} ms")
    diff = max(float((res['auto'][i] - res['jacrev'][i]).abs().max()) for i in range(2))
    ratios = [times["jacrev"][i] / times["auto"][i] for i in range(3)]
    total = sum(times["jacrev"]) / sum(times["auto"])
    print(f"  ratio jacrev/auto: side {ratios[0]:.1f}x, J·Δ {ratios[1]:.1f}x, Jᵀ·E {ratios[2]:.1f}x, "
          f"all three {total:.1f}x; max |auto − jacrev| = {diff:.1e}")


if __name__ == "__main__":
    main()
