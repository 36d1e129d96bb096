"""The telescoping lens: exactness on linear models, first-order convergence, optimizer
independence and the refusals that keep it honest."""

import pytest
import torch
import torch.nn as nn

from telescope import Lens, SmootherSpec
from telescope.errors import ConfigError, ShapeError, UnsupportedModelError
from telescope.lens import smoother_of
from telescope.models import MLP

torch.set_default_dtype(torch.float32)


class RandomFeatures(nn.Module):
    """f(x) = W tanh(A x) + b: linear in its trainable parameters (A is a frozen buffer)."""

    def __init__(self, d_in, n_features, d_out, dropout=0.0):
        super().__init__()
        self.register_buffer("A", torch.randn(n_features, d_in, dtype=torch.float64))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(n_features, d_out, dtype=torch.float64)

    def forward(self, x):
        out = self.head(self.drop(torch.tanh(x @ self.A.T)))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def train(model, lens, opt, x, y, steps, batch=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        opt.zero_grad()
        loss = ((model(x[idx]) - y[idx]) ** 2).mean()
        loss.backward()
        lens.step(opt, batch=idx)


def data(n=64, d=5, k=1, dtype=torch.float64):
    x = torch.randn(n, d, dtype=dtype)
    y = torch.randn(n, k, dtype=dtype).squeeze(-1) if k == 1 else torch.randn(n, k, dtype=dtype)
    return x, y


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1, betas=(0.9, 0.99)),
], ids=["momentum", "nesterov-wd", "adamw"])
@pytest.mark.parametrize("k", [1, 3])
def test_exact_on_model_linear_in_parameters(make_opt, k):
    x, y = data(k=k)
    x_test = torch.randn(40, 5, dtype=torch.float64)
    model = RandomFeatures(5, 20, k)
    lens = Lens(model, {"test": x_test, "train": x})
    opt = make_opt(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)
    for _ in range(6):
        train(model, lens, opt, x, y, steps=50)
        sched.step()
    for split in ("test", "train"):
        p = lens.predictions(split)
        assert p["telescope"].shape == p["network"].shape == (x_test.shape[0] if split == "test" else 64,) + ((k,) if k > 1 else ())
        assert torch.allclose(p["telescope"], p["network"], atol=1e-10, rtol=0)
        assert torch.allclose(p["linearized"], p["network"], atol=1e-10, rtol=0)
        # and the model really moved
        assert (p["network"] - lens.f0[lens.probe_slice(split)]).abs().max() > 0.1


def test_dropout_probes_use_eval_mode_and_stay_exact():
    x, y = data()
    model = RandomFeatures(5, 20, 1, dropout=0.3)
    lens = Lens(model, {"test": x})
    train(model, lens, torch.optim.SGD(model.parameters(), lr=0.05), x, y, steps=100)
    assert model.training  # the lens restores the caller's mode
    p = lens.predictions("test")
    assert torch.allclose(p["telescope"], p["network"], atol=1e-10, rtol=0)


def _mlp_errors(lr, steps, seed=0):
    torch.manual_seed(seed)
    x = torch.rand(200, 16)
    y = (x[:, 0] > 0.5).float()
    model = MLP(16, 64, 3)
    lens = Lens(model, {"test": torch.rand(100, 16)})
    train(model, lens, torch.optim.SGD(model.parameters(), lr=lr), x, y, steps, batch=50, seed=seed)
    return lens.errors("test")


def test_first_order_convergence_in_learning_rate():
    big = _mlp_errors(lr=0.04, steps=150)
    small = _mlp_errors(lr=0.02, steps=300)
    ratio = big["telescope/abs_err"] / small["telescope/abs_err"]
    assert 1.5 < ratio < 3.0, ratio  # halving γ at fixed γT about halves the telescoping error
    lin_ratio = big["linearized/abs_err"] / small["linearized/abs_err"]
    assert 0.6 < lin_ratio < 1.5, lin_ratio  # while the linearized error does not vanish
    assert small["linearized/abs_err"] > 10 * small["telescope/abs_err"]


class Replay(torch.optim.Optimizer):
    """An optimizer that adds recorded updates: same Δθ sequence, different optimizer."""

    def __init__(self, params, deltas):
        super().__init__(params, {})
        self.deltas = iter(deltas)

    @torch.no_grad()
    def step(self, closure=None):
        for p, d in zip(self.param_groups[0]["params"], next(self.deltas)):
            p.add_(d)


def test_same_updates_give_same_telescoping_model_whatever_the_optimizer():
    torch.manual_seed(1)
    x, y = torch.rand(100, 8), torch.rand(100)
    probes = {"test": torch.rand(30, 8)}
    model = MLP(8, 32, 3)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    lens = Lens(model, probes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    deltas, gen = [], torch.Generator().manual_seed(0)
    for _ in range(80):
        before = [p.detach().clone() for p in model.parameters()]
        idx = torch.randint(0, 100, (20,), generator=gen)
        opt.zero_grad()
        ((model(x[idx]) - y[idx]) ** 2).mean().backward()
        lens.step(opt)
        deltas.append([p.detach() - b for p, b in zip(model.parameters(), before)])

    twin = MLP(8, 32, 3)
    twin.load_state_dict(init)
    twin_lens = Lens(twin, probes)
    replay = Replay(twin.parameters(), deltas)
    for _ in range(80):
        twin_lens.step(replay)
    a, b = lens.predictions("test"), twin_lens.predictions("test")
    assert torch.equal(a["network"], b["network"])
    assert torch.allclose(a["telescope"], b["telescope"], atol=1e-12, rtol=0)
    assert (a["telescope"] - a["network"]).abs().max() > 0  # a real MLP: not trivially exact


def test_batchnorm_is_refused_with_the_fix():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    with pytest.raises(UnsupportedModelError, match="BatchNorm.*allow_buffers"):
        Lens(model, {"test": torch.randn(5, 4)})
    Lens(model, {"test": torch.randn(5, 4)}, allow_buffers=True)


def test_bad_probes_get_clear_messages():
    model = MLP(4, 8, 2)
    with pytest.raises(ShapeError, match="dtype"):
        Lens(model, {"test": torch.randn(5, 4, dtype=torch.float64)})
    with pytest.raises(ShapeError, match="non-empty"):
        Lens(model, {"test": torch.randn(0, 4)})
    with pytest.raises(ShapeError, match="same input shape"):
        Lens(model, {"a": torch.randn(3, 4), "b": torch.randn(3, 5)})
    lens = Lens(model, {"test": torch.randn(3, 4)})
    with pytest.raises(ShapeError, match="unknown probe set 'train'"):
        lens.predictions("train")
    with pytest.raises(ShapeError, match="smoother"):
        lens.effective_parameters()


def test_single_probe_point_and_float64_accumulation():
    model = MLP(4, 8, 2)
    lens = Lens(model, {"one": torch.randn(1, 4)}, accumulate="float64")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(10, 4), torch.randn(10)
    train(model, lens, opt, x, y, steps=5, batch=4)
    p = lens.predictions("one")
    assert p["telescope"].dtype == torch.float64 and p["telescope"].shape == (1,)


# ---------------------------------------------------------------------------- input checks at the door (issue 17 item 7)
def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def unchanged(model, before):
    return all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_1d_probe_is_refused_with_the_fix():
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(ShapeError, match=r"probes\['test'\].*1-D probe.*x\[None\]"):
        Lens(model, {"test": torch.randn(10)})
    # a model of scalar inputs takes a 1-D probe: n points of shape ()
    lens = Lens(nn.Sequential(nn.Unflatten(0, (-1, 1)), nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1),
                              nn.Flatten(0)), {"test": torch.randn(7)})
    assert lens.predictions("test")["network"].shape == (7,)


def test_a_probe_with_the_wrong_feature_count_names_the_probe():
    model = MLP(4, 8, 2)
    with pytest.raises(ShapeError, match=r"Lens\(probes\['wide'\]\): the model cannot take these probes "
                                         r"\(shape \(3, 5\).*mat1 and mat2"):
        Lens(model, {"wide": torch.randn(3, 5)})
    with pytest.raises(ShapeError, match=r"same input shape.*\(4,\) for 'a' and \(5,\) for 'b'"):
        Lens(model, {"a": torch.randn(3, 4), "b": torch.randn(3, 5)})


def test_a_numpy_probe_is_converted_to_the_models_dtype_and_device():
    import numpy as np

    torch.manual_seed(0)
    model = MLP(4, 8, 2)
    x = np.random.default_rng(0).standard_normal((6, 4))          # float64, the model is float32
    lens = Lens(model, {"test": x})
    ref = Lens(model, {"test": torch.tensor(x, dtype=torch.float32)})
    assert lens.probe("test").dtype == torch.float32
    assert torch.equal(lens.predictions("test")["network"], ref.predictions("test")["network"])
    with pytest.raises(ShapeError, match=r"probes\['bad'\]\): expected a tensor or NumPy array.*got list"):
        Lens(model, {"bad": [[1.0, 2.0, 3.0, 4.0]]})


def smoother_lens(model, n=20):
    x, y = torch.randn(n, 4, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    lens = Lens(model, {"test": torch.randn(5, 4, dtype=torch.float64)}, smoother=SmootherSpec(x, y))
    return lens, x, y


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_bad_batch_with_a_smoother_raises_before_the_optimizer_steps(opt_name):
    torch.manual_seed(0)
    model = MLP(4, 8, 2).to(torch.float64)
    lens, x, y = smoother_lens(model)
    opt = (torch.optim.SGD(model.parameters(), lr=0.1) if opt_name == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=0.01))
    idx = torch.arange(6)
    ((model(x[idx]) - y[idx]) ** 2).mean().backward()
    before = params_of(model)
    bad = [({}, ConfigError, "batch=None.*batch=idx"),
           ({"batch": torch.tensor([0, 20])}, ShapeError, r"indices must lie in \[0, 20\).*\[0, 20\]"),
           ({"batch": torch.tensor([-1, 3])}, ShapeError, "indices must lie"),
           ({"batch": torch.tensor([], dtype=torch.long)}, ShapeError, "non-empty"),
           ({"batch": torch.ones(20, dtype=torch.bool)}, ShapeError, "integer indices.*not a mask"),
           ({"batch": x[idx]}, ShapeError, "integer indices")]
    for kwargs, error, message in bad:
        with pytest.raises(error, match=message):
            lens.step(opt, **kwargs)
        assert unchanged(model, before), kwargs                  # nothing was stepped
        assert opt.state == {} or all(not s for s in opt.state.values())
        assert lens.steps == 0 and smoother_of(lens).steps == 0
        assert torch.equal(lens.f_tilde, lens.f0.to(lens.acc_dtype))
    # the same lens then steps normally, and is not a step behind: it equals a fresh lens's first step
    lens.step(opt, batch=[0, 1, 2, 3, 4, 5])                     # a list is accepted
    torch.manual_seed(0)
    twin = MLP(4, 8, 2).to(torch.float64)
    twin_lens = Lens(twin, {"test": lens.probe("test")}, smoother=SmootherSpec(x, y))
    twin_opt = (torch.optim.SGD(twin.parameters(), lr=0.1) if opt_name == "sgd"
                else torch.optim.AdamW(twin.parameters(), lr=0.01))
    ((twin(x[idx]) - y[idx]) ** 2).mean().backward()
    twin_lens.step(twin_opt, batch=idx)
    assert torch.equal(smoother_of(lens).R, smoother_of(twin_lens).R)
    assert smoother_of(lens).steps == 1


def test_an_unsupported_optimizer_is_refused_before_it_steps():
    torch.manual_seed(0)
    model = MLP(4, 8, 2).to(torch.float64)
    lens, x, y = smoother_lens(model)
    opt = torch.optim.RMSprop(model.parameters(), lr=0.1)
    ((model(x[:4]) - y[:4]) ** 2).mean().backward()
    before = params_of(model)
    with pytest.raises(UnsupportedModelError, match="RMSprop"):
        lens.step(opt, batch=torch.arange(4))
    assert unchanged(model, before) and lens.steps == 0
