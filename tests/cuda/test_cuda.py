"""The lens, the smoother, every tangent-kernel implementation and every study's tiny preset on CUDA,
compared with the CPU (issue 16 item 4). Skipped without CUDA.

``TELESCOPE_TEST_DEVICE=cpu`` runs the same comparisons with the CPU in place of CUDA (trivially
equal): a check that this module itself works on a machine without a GPU.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from telescope import Lens, SmootherSpec, empirical_ntk
from telescope.kernels.ntk import Implementation
from telescope.lens import smoother_of
from telescope.models import MLP
from telescope.train import squared_loss

DEVICE = os.environ.get("TELESCOPE_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")
F64 = torch.float64


def train_with_lens(device, spec_kw=None, opt="adamw", steps=12, seed=0):
    torch.manual_seed(seed)
    n, m = 40, 15
    x, y, x_test = torch.randn(n, 6, dtype=F64), torch.randn(n, dtype=F64), torch.randn(m, 6, dtype=F64)
    model = MLP(6, 16, 3).to(F64)
    model.to(device)
    x, y, x_test = x.to(device), y.to(device), x_test.to(device)
    smoother = None if spec_kw is None else SmootherSpec(x, y, loss="mse", **spec_kw)
    lens = Lens(model, {"test": x_test}, smoother=smoother)
    optimizer = (torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1) if opt == "adamw"
                 else torch.optim.SGD(model.parameters(), lr=0.05))
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, n, (8,), generator=gen)            # CPU indices, as telescope.train.fit gives
        optimizer.zero_grad(set_to_none=True)
        squared_loss("mse")(model(x[idx.to(device)]), y[idx.to(device)]).backward()
        lens.step(optimizer, batch=idx)
    return lens


def test_lens_matches_cpu():
    cpu, dev = train_with_lens("cpu"), train_with_lens(DEVICE)
    for key in ("network", "telescope", "linearized"):
        a, b = cpu.predictions("test")[key], dev.predictions("test")[key].cpu()
        assert torch.allclose(a, b, atol=1e-9, rtol=1e-9), key


@pytest.mark.parametrize("opt", ["adamw", "sgd"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", ["exact", "sketch"])
def test_smoother_matches_cpu(method, dtype, opt):
    kw = dict(method=method, dtype=dtype, probes=8)
    cpu, dev = train_with_lens("cpu", kw, opt), train_with_lens(DEVICE, kw, opt)
    tol = 1e-9 if dtype == "float64" else 2e-4
    a, b = smoother_of(cpu), smoother_of(dev)
    assert a.path == b.path
    assert torch.allclose(a.R, b.R.cpu(), atol=tol, rtol=tol)
    for split, value in a.effective_parameters().items():
        assert b.effective_parameters()[split] == pytest.approx(value, rel=tol, abs=tol)
    for split, value in a.residuals().items():
        assert b.residuals()[split] == pytest.approx(value, rel=tol, abs=tol)


def kernel_models():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(7, 12), nn.ReLU(), nn.Linear(12, 3))
    cnn = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    return {"mlp": (mlp, (7,)), "cnn": (cnn, (2, 6, 6))}


@pytest.mark.parametrize("output", ["trace", "full", "diagonal"])
@pytest.mark.parametrize("implementation", [i.value for i in Implementation])
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_every_kernel_implementation_matches_cpu(model_name, implementation, output):
    model, shape = kernel_models()[model_name]
    model = model.to(F64)
    x1, x2 = torch.randn(5, *shape, dtype=F64), torch.randn(4, *shape, dtype=F64)
    ref = empirical_ntk(model, x1, x2, output=output, implementation=implementation)
    model.to(DEVICE)
    got = empirical_ntk(model, x1.to(DEVICE), x2.to(DEVICE), output=output, implementation=implementation)
    assert got.device.type == torch.device(DEVICE).type
    assert torch.allclose(ref, got.cpu(), atol=1e-10, rtol=1e-10)


def _studies():
    from telescope.experiments import get, names
    return [n for n in names() if not get(n).cpu_only]


def _metrics(run_dir):
    import pandas as pd
    frame = pd.read_parquet(os.path.join(run_dir, "metrics.parquet"))
    return frame.sort_values(["step", "split", "name"], kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("study", _studies())
def test_tiny_preset_runs_on_cuda_like_on_cpu(study, tmp_path):
    """Every study's tiny preset with ``--device cuda``: it finishes, logs the same rows as on the CPU,
    and every value is finite where the CPU's is (values may differ: float32 kernels on a GPU differ
    in rounding, and some studies amplify it)."""
    import numpy as np

    runs = {}
    for device in ("cpu", DEVICE):
        out = tmp_path / device
        cmd = [sys.executable, "-m", "telescope", "run", study, "--preset", "tiny", "--device", device, "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
        assert (run_dir / "DONE").exists()
        assert json.loads((run_dir / "config.json").read_text())["meta"]["device"] == device
        runs[device] = _metrics(run_dir)
    a, b = runs["cpu"], runs[DEVICE]
    assert a[["step", "split", "name"]].equals(b[["step", "split", "name"]])
    finite = np.isfinite(a["value"].to_numpy())
    assert np.isfinite(b["value"].to_numpy()[finite]).all()


def test_units_in_parallel_on_cuda_match_one_at_a_time(tmp_path):
    """grokking-mnist tiny (2 seeds) with ``--workers 2`` on the device gives the rows of ``--workers 1``
    (NOTE [units in parallel]): each worker process has its own CUDA context. Close, not bitwise: a CUDA
    kernel may use atomics; on the CPU (TELESCOPE_TEST_DEVICE=cpu) they are identical."""
    import numpy as np

    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        cmd = [sys.executable, "-m", "telescope", "run", "grokking-mnist", "--preset", "tiny", "--set", "seeds=2",
               "--device", DEVICE, "--workers", str(workers), "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
        assert len(list((run_dir / "parts").glob("*.parquet"))) == 2
        frame = _metrics(run_dir)
        runs[workers] = frame.sort_values(["seed", "step", "split", "name"], kind="stable").reset_index(drop=True)
    a, b = runs[1], runs[2]
    assert a[["seed", "step", "split", "name"]].equals(b[["seed", "step", "split", "name"]])
    if DEVICE == "cpu":
        assert np.array_equal(a["value"].to_numpy(), b["value"].to_numpy(), equal_nan=True)
    else:
        assert np.allclose(a["value"].to_numpy(), b["value"].to_numpy(), rtol=1e-5, atol=1e-7, equal_nan=True)


def _transformer_on(device):
    from telescope.models.transformer import ModularTransformer, modular_tokens

    gen = torch.Generator().manual_seed(0)
    x, c, xt, _ = modular_tokens(7, 0.6, generator=gen)
    model = ModularTransformer(7, 8, 2, 16, generator=gen, dtype=F64).to(device)
    return model, x.to(device), c.to(device), xt.to(device)


def test_transformer_lens_sharpness_and_position_pair_kernel_match_cpu(monkeypatch):
    """Issue 20's paths on the device: the lens with its trapezoid companion, AdamW's sharpness ratio
    (dense and matrix-free) and the structured kernel's position pairs, against the CPU."""
    from telescope.kernels import structured
    from telescope.kernels.fastpath import no_fused_fastpath
    from telescope.lens import adam_sharpness, stability

    out = {}
    for device in ("cpu", DEVICE):
        model, x, c, xt = _transformer_on(device)
        y = torch.nn.functional.one_hot(c, 7).to(F64)
        lens = Lens(model, {"test": xt}, second_order=True)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1.0, betas=(0.9, 0.98))
        for _ in range(5):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            lens.step(opt)
        dense = adam_sharpness(model, opt, x)["ratio"]
        with monkeypatch.context() as m:
            m.setattr(stability, "DENSE_ROWS", 0)
            free = adam_sharpness(model, opt, x)["ratio"]
        with monkeypatch.context() as m, no_fused_fastpath():
            m.setattr(structured, "_positional", lambda *args: True)      # position pairs at this small size
            kernel = empirical_ntk(model, x[:8], output="trace", implementation="structured")
        out[device] = (lens.errors("test"), dense, free, kernel.cpu())
    (e_cpu, d_cpu, f_cpu, k_cpu), (e_dev, d_dev, f_dev, k_dev) = out["cpu"], out[DEVICE]
    for key in e_cpu:
        assert e_dev[key] == pytest.approx(e_cpu[key], rel=1e-6, abs=1e-12)
    assert d_dev == pytest.approx(d_cpu, rel=1e-8) and f_dev == pytest.approx(f_cpu, rel=1e-6)
    assert torch.allclose(k_dev, k_cpu, rtol=1e-9, atol=1e-12)
