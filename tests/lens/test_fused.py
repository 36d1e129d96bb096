"""The fused step (issue 16): segments of the optimizer rules, chunked products on one capture, no
host sync in a step, the enums of the smoother's choices, and EMAMomentumSGD's new home."""

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

from telescope.errors import ConfigError
from telescope.lens import JacobianMethod, Lens, SmootherMethod, SmootherPath, SmootherSpec, smoother_of
from telescope.lens import smoother as smoother_module
from telescope.models import MLP
from telescope.train import squared_loss
from telescope.train.optim import EMAMomentumSGD

F64 = torch.float64


class TwoHeads(nn.Module):
    """f(x) = W1 tanh(A1 x) + W2 tanh(A2 x) + b: linear in its trainable parameters."""

    def __init__(self, d=5, h=12):
        super().__init__()
        self.register_buffer("A1", torch.randn(h, d, dtype=F64))
        self.register_buffer("A2", torch.randn(h, d, dtype=F64))
        self.h1 = nn.Linear(h, 1, dtype=F64)
        self.h2 = nn.Linear(h, 1, bias=False, dtype=F64)

    def forward(self, x):
        return (self.h1(torch.tanh(x @ self.A1.T)) + self.h2(torch.tanh(x @ self.A2.T))).squeeze(-1)


def run(model, spec_kw, make_opt, steps=30, skip=None, n=40, seed=0):
    torch.manual_seed(seed)
    x, y, x_test = torch.randn(n, 5, dtype=F64), torch.randn(n, dtype=F64), torch.randn(17, 5, dtype=F64)
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, loss="mse", **spec_kw))
    opt = make_opt(model)
    gen = torch.Generator().manual_seed(1)
    for t in range(steps):
        idx = torch.randint(0, n, (8,), generator=gen)
        opt.zero_grad(set_to_none=True)
        squared_loss("mse")(model(x[idx]), y[idx]).backward()
        if skip is not None and t % 3 == 1:
            skip(model).grad = None                       # the optimizer skips this parameter this step
        lens.step(opt, batch=idx)
    return lens, smoother_of(lens), (x, x_test)


@pytest.mark.parametrize("opt", ["adamw-groups", "sgd-momentum", "ema"])
def test_skipped_parameters_and_groups_split_segments_and_stay_exact(opt):
    make = {
        "adamw-groups": lambda m: torch.optim.AdamW([{"params": [m.h1.weight, m.h1.bias], "lr": 0.02},
                                                     {"params": [m.h2.weight], "lr": 0.005}], weight_decay=0.1),
        "sgd-momentum": lambda m: torch.optim.SGD(m.parameters(), lr=0.03, momentum=0.9, weight_decay=0.01),
        "ema": lambda m: EMAMomentumSGD(m.parameters(), lr=0.05, beta=0.9, weight_decay=0.01),
    }[opt]
    torch.manual_seed(3)
    model = TwoHeads()
    lens, tracker, (x, x_test) = run(model, {}, make, skip=lambda m: m.h1.bias)
    assert tracker.block_steps == [30, 20, 30]          # h1.bias skipped on 10 of 30 steps
    with torch.no_grad():
        for split, xs in (("train", x), ("test", x_test)):
            assert float((tracker.predictions(split) - model(xs)).abs().max()) < 1e-10
    assert all(v < 1e-10 for v in tracker.residuals().values())


@pytest.mark.parametrize("method", ["exact", "sketch"])
def test_one_capture_chunked_products_and_chunked_captures_agree(monkeypatch, method):
    """Default (one capture, one product chunk), product chunks of ``chunk_size`` on one capture, and a
    capture per chunk (the side too large to capture at once) give the same smoother."""
    results = []
    for knob in (None, "_TEMP_BYTES", "_CAPTURE_BYTES"):
        if knob is not None:
            monkeypatch.setattr(smoother_module, knob, 1)
        torch.manual_seed(0)
        model = MLP(5, 9, 3).to(F64)
        lens, tracker, _ = run(model, {"chunk_size": 7, "method": method, "probes": 5},
                               lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1), steps=8)
        if knob == "_TEMP_BYTES":
            assert tracker._apply_chunk() == 7 < tracker.n_points
        results.append((tracker.R.clone(), tracker.f_tilde.clone()))
        monkeypatch.undo()
    for R, f in results[1:]:
        assert torch.allclose(results[0][0], R, atol=1e-12, rtol=0)
        assert torch.allclose(results[0][1], f, atol=1e-12, rtol=0)
    assert float(results[0][0][:, :-1].abs().max()) > 1e-3


@pytest.mark.parametrize("method", ["exact", "sketch"])
def test_a_smoother_step_has_no_host_sync(method):
    """NOTE [fused step]: SGD on the CPU reads nothing back itself, so a step with the lens and the
    smoother must show no ``_local_scalar_dense`` (the op under .item(), float(t), int(t), bool(t))."""
    torch.manual_seed(0)
    model = MLP(5, 9, 3).to(F64)
    n = 30
    x, y = torch.randn(n, 5, dtype=F64), torch.randn(n, dtype=F64)
    lens = Lens(model, {"test": torch.randn(11, 5, dtype=F64)},
                smoother=SmootherSpec(x, y, method=method, probes=4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.01)

    def step(idx):
        opt.zero_grad(set_to_none=True)
        squared_loss("mse")(model(x[idx]), y[idx]).backward()
        lens.step(opt, batch=idx)

    step(torch.arange(6))                                   # the first step sets up (and may read back)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(torch.arange(6, 12))
        step(torch.arange(3, 9))
    names = [e.name for e in prof.events()]
    assert "aten::mm" in names or "aten::addmm" in names    # the profiler saw the step
    assert [nm for nm in names if nm in ("aten::_local_scalar_dense", "aten::item", "aten::nonzero")] == []
    assert smoother_of(lens).steps == 3


def test_choices_are_enums_and_strings_still_work():
    x, y = torch.randn(6, 2), torch.randn(6)
    spec = SmootherSpec(x, y, method="sketch", path="general", jacobian_method="jacrev")
    assert spec.method is SmootherMethod.SKETCH and spec.method == "sketch" and str(spec.method) == "sketch"
    assert spec.path is SmootherPath.GENERAL and spec.jacobian_method is JacobianMethod.JACREV
    assert SmootherSpec(x, y, method=SmootherMethod.EXACT).method == "exact"
    for field, bad, choices in (("method", "approx", "exact, sketch"), ("path", "fast", "auto, general, kernel"),
                                ("jacobian_method", "jvp", "auto, jacrev")):
        with pytest.raises(ConfigError, match=f"SmootherSpec\\({field}='{bad}'\\): choose one of {choices}"):
            SmootherSpec(x, y, **{field: bad})
    for kind in (SmootherMethod, SmootherPath, JacobianMethod):     # a cost model for every choice
        for member in kind:
            assert f"``{member.name}``" in kind.__doc__


def test_optimizers_declare_their_rule():
    import telescope.lens
    import telescope.lens.smoother
    assert telescope.lens.EMAMomentumSGD is EMAMomentumSGD is telescope.lens.smoother.EMAMomentumSGD
    assert EMAMomentumSGD.smoother_rule in smoother_module.RULES

    class Renamed(EMAMomentumSGD):
        pass

    class Unknown(torch.optim.SGD):
        smoother_rule = "lion"

    torch.manual_seed(0)
    lens, tracker, _ = run(MLP(5, 4, 2).to(F64), {}, lambda m: Renamed(m.parameters(), lr=0.01), steps=2)
    assert tracker.kind == "ema"
    with pytest.raises(Exception, match="smoother_rule = 'lion' names no rule"):
        run(MLP(5, 4, 2).to(F64), {}, lambda m: Unknown(m.parameters(), lr=0.01), steps=1)


def test_lens_imports_no_training_code():
    code = "import sys, telescope.lens; print('telescope.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
