"""The sketched smoother (SmootherSpec(method="sketch")): with identity probes it is the exact
smoother; with K random probes p̂ lies within a few standard errors of the exact p⁰ for SGD,
momentum and AdamW, s·y and c stay exact, and the standard error falls like 1/√K."""

import math

import pytest
import torch

from telescope.errors import ConfigError
from telescope.lens import Lens, SmootherSpec, smoother_of
from telescope.models import MLP
from telescope.train import squared_loss

F64 = torch.float64

OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05),
    "momentum": lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9, weight_decay=0.01),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.003, weight_decay=0.1),
}




def run(opt_name, k=1, steps=80, device="cpu", **spec_kw):
    """Train a small float64 MLP with a smoother; returns the tracker (same data, init and batches
    for every call, so exact and sketch runs follow the same trajectory)."""
    torch.manual_seed(0)
    n, d, m = 40, 5, 24
    x, x_test = torch.randn(n, d, dtype=F64), torch.randn(m, d, dtype=F64)
    y = torch.randn(n, dtype=F64) if k == 1 else torch.randn(n, k, dtype=F64)
    model = MLP(d, 16, 3, d_out=k).to(F64).to(device)
    x, x_test, y = x.to(device), x_test.to(device), y.to(device)
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, loss="mse", **spec_kw))
    opt = OPTIMIZERS[opt_name](model.parameters())
    gen = torch.Generator().manual_seed(1)
    loss_fn = squared_loss("mse")
    for _ in range(steps):
        idx = torch.randint(0, n, (8,), generator=gen)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        lens.step(opt, batch=idx)
    return smoother_of(lens)


@pytest.fixture(scope="module")
def exact():
    return {name: run(name) for name in OPTIMIZERS}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_identity_probes_reproduce_the_exact_smoother(exact, name):
    ref = exact[name]
    sk = run(name, method="sketch", probes="identity")
    assert sk.path == ref.path and sk.L == ref.L + 1
    p_ref, p_sk = ref.effective_parameters(), sk.effective_parameters()
    for split in ("train", "test"):
        assert p_sk[split] == pytest.approx(p_ref[split], rel=1e-10, abs=1e-10)
        assert torch.allclose(sk.point_norms(split), ref.point_norms(split), atol=1e-10, rtol=1e-10)
    # the stored columns are √n·s: the same smoother, column by column
    assert torch.allclose(sk.R[:, :-2] / math.sqrt(ref.n), ref.R[:, :-1], atol=1e-12, rtol=0)


def test_identity_probes_multi_output():
    ref, sk = run("adamw", k=2, steps=30), run("adamw", k=2, steps=30, method="sketch", probes="identity")
    for split, p in ref.effective_parameters().items():
        assert sk.effective_parameters()[split] == pytest.approx(p, rel=1e-10)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_sketch_estimate_within_four_standard_errors_of_exact(exact, name):
    ref = exact[name]
    sk = run(name, method="sketch", probes=64, seed=0)
    p_ref, p_sk, se = ref.effective_parameters(), sk.effective_parameters(), sk.effective_parameters_se()
    for split in ("train", "test"):
        assert p_ref[split] > 1.0                                   # the smoother moved
        assert 0 < se[split] < 0.25 * p_ref[split]                  # an informative estimate
        assert abs(p_sk[split] - p_ref[split]) < 4 * se[split], (split, p_sk[split], p_ref[split], se[split])
        # s·y and c are carried exactly, so the predictions are the exact smoother's
        assert torch.allclose(sk.predictions(split), ref.predictions(split), atol=1e-10, rtol=0)
    assert sk.path == ref.path and sk.L == 66


def test_point_norms_estimate_per_point_norms(exact):
    ref = exact["adamw"]
    sk = run("adamw", method="sketch", probes=512, seed=3, distribution="gaussian")
    est, true = sk.point_norms("test"), ref.point_norms("test")
    # Gaussian probes: relative error of each point's estimate ~ √(2/K) ≈ 0.06
    rel = (est - true).abs() / true
    assert float(rel.mean()) < 0.15 and float(rel.max()) < 0.4


def test_standard_error_shrinks_like_inverse_sqrt_k():
    se = {}
    for K in (16, 256):
        # average over seeds: one standard error from 16 probes is itself ~20% noisy
        se[K] = sum(run("sgd", steps=40, method="sketch", probes=K, seed=s).effective_parameters_se()["train"]
                    for s in range(4)) / 4
    assert 3.0 < se[16] / se[256] < 5.3


def test_metrics_and_refusals():
    sk = run("sgd", steps=5, method="sketch", probes=8)
    m = sk.metrics()
    assert set(m["train"]) == {"smoother/p_eff", "smoother/p_eff_se", "smoother/residual", "smoother/valid"}
    assert m["train"]["smoother/valid"] == 1.0 == m["test"]["smoother/valid"]      # NOTE [smoother validity]
    assert m["test"]["smoother/p_eff"] == sk.effective_parameters()["test"]
    with pytest.raises(ConfigError, match="point_norms"):
        sk.weights("test")
    assert "smoother/p_eff_se" not in run("sgd", steps=5).metrics()["train"]
    x, y = torch.randn(10, 3), torch.randn(10)
    for bad in (dict(method="sketchy"), dict(method="sketch", probes=0), dict(method="sketch", probes=2.5),
                dict(method="sketch", distribution="uniform")):
        with pytest.raises(ConfigError):
            SmootherSpec(x, y, **bad)


def test_sketch_memory_fits_where_exact_is_refused():
    n, p, N = 5000, 600_000, 6000
    x, y = torch.randn(n, 3), torch.randn(n)
    exact = SmootherSpec(x, y, dtype="float32", memory_budget_gb=24 * 2 ** 30 / 1e9)
    sketch = SmootherSpec(x, y, dtype="float32", method="sketch", probes=32)
    e = exact.memory_estimate(N, p, buffers=3, batch_size=128)
    s = sketch.memory_estimate(N, p, buffers=3, batch_size=128)
    assert e > 24 * 2 ** 30 > 10 * s
    assert sketch.label_columns() == 34 and exact.label_columns() == n + 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sketch_matches_cpu():
    # probes are drawn on the CPU from the seed, so both devices see the same P
    res = {dev: run("adamw", steps=20, device=dev, method="sketch", probes=16, seed=5) for dev in ("cpu", "cuda")}
    assert torch.allclose(res["cpu"].R, res["cuda"].R.cpu(), atol=1e-9, rtol=0)
    for split, p in res["cpu"].effective_parameters().items():
        assert res["cuda"].effective_parameters()[split] == pytest.approx(p, rel=1e-8)
