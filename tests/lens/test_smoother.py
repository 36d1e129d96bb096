"""The smoother: closed form on linear regression, exactness for every optimizer on models
linear in their parameters, first-order agreement on an MLP, kernel shortcut = general path,
and the refusals."""

import math

import pytest
import torch
import torch.nn as nn

from telescope.errors import ConfigError, ShapeError, UnsupportedModelError
from telescope.lens import Lens, SmootherSpec, smoother_metrics, smoother_of
from telescope.models import MLP
from telescope.train import squared_loss
from telescope.train.optim import EMAMomentumSGD

F64 = torch.float64




class RandomFeatures(nn.Module):
    """f(x) = W tanh(A x) + b: linear in its trainable parameters (A is a frozen buffer)."""

    def __init__(self, d_in, n_features, d_out):
        super().__init__()
        self.register_buffer("A", torch.randn(n_features, d_in, dtype=F64))
        self.head = nn.Linear(n_features, d_out, dtype=F64)

    def forward(self, x):
        out = self.head(torch.tanh(x @ self.A.T))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def train(model, lens, opt, x, y, steps, batch=8, loss="mse", seed=0, sched=None, check=None):
    gen = torch.Generator().manual_seed(seed)
    loss_fn = squared_loss(loss)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen) if batch < x.shape[0] else torch.arange(x.shape[0])
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        lens.step(opt, batch=idx)
        if sched is not None:
            sched.step()
        if check is not None:
            check()


def data(n=40, d=5, m=30, k=1):
    x, x_test = torch.randn(n, d, dtype=F64), torch.randn(m, d, dtype=F64)
    y = torch.randn(n, dtype=F64) if k == 1 else torch.randn(n, k, dtype=F64)
    return x, y, x_test


# ---------------------------------------------------------------------------- closed form
@pytest.mark.parametrize("loss", ["mse", "half_mse", "sum"])
def test_full_batch_gd_matches_closed_form_linear_regression_smoother(loss):
    n, d, m, T = 60, 4, 25, 120
    x, y, x_test = data(n, d, m)
    model = nn.Linear(d, 1, dtype=F64)
    model = nn.Sequential(model, nn.Flatten(0))
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, loss=loss))
    phi = torch.cat([x, torch.ones(n, 1, dtype=F64)], 1)            # features of a model linear in (w, b)
    phi_t = torch.cat([x_test, torch.ones(m, 1, dtype=F64)], 1)
    a = {"mse": 2.0 / n, "half_mse": 1.0 / n, "sum": 2.0}[loss]
    K = phi @ phi.T
    lam, Q = torch.linalg.eigh(K)
    pos = lam[lam > 1e-9 * lam.max()]
    lr = 2.0 / (a * float(pos.max() + pos.min()))                    # the fastest constant step
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with torch.no_grad():
        f0, f0_test = model(x), model(x_test)
    train(model, lens, opt, x, y, T, batch=n, loss=loss)

    decay = (1 - lr * a * lam) ** T                                   # (I − γaK)^T in K's eigenbasis
    S = Q @ torch.diag(1 - decay) @ Q.T
    c = Q @ torch.diag(decay) @ Q.T @ f0
    geo = torch.where(lam > 1e-9 * lam.max(), (1 - decay) / lam.clamp_min(1e-300), torch.zeros_like(lam))
    S_test = phi_t @ phi.T @ Q @ torch.diag(geo) @ Q.T               # γa k(x)ᵀ Σ_{τ<T} (I − γaK)^τ
    c_test = f0_test - S_test @ f0
    tracker = smoother_of(lens)
    s_tr, c_tr = tracker.weights("train")
    s_te, c_te = tracker.weights("test")
    assert torch.allclose(s_tr, S, atol=1e-10, rtol=0)
    assert torch.allclose(c_tr, c, atol=1e-10, rtol=0)
    assert torch.allclose(s_te, S_test, atol=1e-10, rtol=0)
    assert torch.allclose(c_te, c_test, atol=1e-10, rtol=0)
    # converged least squares: S is the hat matrix, p_train = ‖S‖_F² = trace = number of features
    assert float(decay[lam > 1e-9 * lam.max()].max()) < 1e-12
    p = lens.effective_parameters()
    assert p["train"] == pytest.approx(d + 1, abs=1e-8)
    hat_test = phi_t @ torch.linalg.solve(phi.T @ phi, phi.T)
    assert p["test"] == pytest.approx(float(n / m * hat_test.pow(2).sum()), rel=1e-9)


# ---------------------------------------------------------------------------- every optimizer
OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05),
    "sgd-wd": lambda ps: torch.optim.SGD(ps, lr=0.05, weight_decay=0.05),
    "momentum-dampening": lambda ps: torch.optim.SGD(ps, lr=0.03, momentum=0.9, dampening=0.3),
    "nesterov-wd": lambda ps: torch.optim.SGD(ps, lr=0.03, momentum=0.9, nesterov=True, weight_decay=0.01),
    "ema-momentum": lambda ps: EMAMomentumSGD(ps, lr=0.05, beta=0.9, weight_decay=0.01),
    "adam-l2-amsgrad": lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.01, amsgrad=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, betas=(0.9, 0.99)),
    "adamw-groups": lambda ps: torch.optim.AdamW(
        [{"params": [ps[0]], "lr": 0.02}, {"params": [ps[1]], "lr": 0.005, "weight_decay": 0.0}],
        weight_decay=0.1),
    "sgd-groups": lambda ps: torch.optim.SGD([{"params": [ps[0]], "lr": 0.05}, {"params": [ps[1]], "lr": 0.01}]),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("k", [1, 3])
def test_smoother_reproduces_model_linear_in_parameters_exactly(name, k):
    x, y, x_test = data(k=k)
    model = RandomFeatures(5, 20, k)
    spec = SmootherSpec(x, y, loss="mse")
    lens = Lens(model, {"test": x_test, "x_train_again": x}, smoother=spec)
    opt = OPTIMIZERS[name](list(model.parameters()))
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / 10) * 0.99 ** t)   # warmup + decay
    tracker = smoother_of(lens)
    worst = []

    def check():
        with torch.no_grad():
            for split, xs in (("train", x), ("test", x_test)):
                worst.append(float((tracker.predictions(split) - model(xs).reshape(-1)).abs().max()))

    train(model, lens, opt, x, y, 60, sched=warm, check=check)
    assert max(worst) < 1e-10
    assert all(v < 1e-10 for v in tracker.residuals().values())
    # the smoother's own f̃ on the training inputs is the lens's f̃ on the same points
    assert torch.allclose(tracker.telescope("train"), tracker.telescope("x_train_again"), atol=1e-12, rtol=0)
    assert tracker.path == ("kernel" if name in ("sgd", "sgd-groups") else "general")
    if "theta" in tracker.buffers:      # θ_t = D^S y + D^C
        theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        assert torch.allclose(tracker.buffers["theta"] @ tracker.y_aug, theta, atol=1e-10, rtol=0)
    p = lens.effective_parameters()
    assert set(p) == {"train", "test", "x_train_again"}
    assert p["train"] == pytest.approx(p["x_train_again"], rel=1e-12)


def test_parameter_without_gradient_is_skipped_like_the_optimizer_does():
    x, y, x_test = data()
    model = RandomFeatures(5, 20, 1)
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, loss="half_mse"))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    gen = torch.Generator().manual_seed(1)
    for t in range(20):
        idx = torch.randint(0, 40, (5,), generator=gen)
        opt.zero_grad(set_to_none=True)
        (0.5 * nn.functional.mse_loss(model(x[idx]), y[idx])).backward()
        if t % 3 == 0:
            model.head.bias.grad = None            # AdamW leaves the bias untouched this step
        lens.step(opt, batch=idx)
    with torch.no_grad():
        assert float((smoother_of(lens).predictions("test") - model(x_test)).abs().max()) < 1e-10


# ---------------------------------------------------------------------------- nonlinear model
@pytest.mark.parametrize("name", ["sgd", "nesterov-wd", "adamw"])
def test_residual_on_mlp_is_of_the_order_of_the_telescoping_error(name):
    x, y, x_test = data(n=48, d=6, m=20)
    model = MLP(6, 16, 3).to(F64)
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, loss="mse"))
    lr = {"sgd": 0.05, "nesterov-wd": 0.005, "adamw": 0.003}[name]
    opt = {"sgd": lambda ps: torch.optim.SGD(ps, lr=lr),
           "nesterov-wd": lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.01),
           "adamw": lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=0.1)}[name](model.parameters())
    train(model, lens, opt, x, y, 150, batch=12)
    tel_err = lens.errors("test")["telescope/abs_err"]
    metrics = smoother_metrics(lens)
    assert 0 < tel_err < 0.05                              # the first-order model is good but not exact
    for split in ("train", "test"):
        assert metrics[split]["smoother/residual"] < 5 * tel_err
    assert metrics["train"]["smoother/p_eff"] > 0


@pytest.mark.parametrize("k", [1, 2])
def test_kernel_shortcut_equals_general_path(k):
    x, y, x_test = data(n=30, d=4, m=12, k=k)
    out = {}
    for path in ("kernel", "general"):
        torch.manual_seed(3)
        model = MLP(4, 12, 3, d_out=k).to(F64)
        lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, loss="mse", path=path, chunk_size=7))
        opt = torch.optim.SGD([{"params": list(model.parameters())[:2], "lr": 0.05},
                               {"params": list(model.parameters())[2:], "lr": 0.1}])
        train(model, lens, opt, x, y, 40, batch=6)
        assert smoother_of(lens).path == path
        out[path] = smoother_of(lens).R.clone()
    assert torch.allclose(out["kernel"], out["general"], atol=1e-10, rtol=0)
    assert float(out["kernel"][:, :-1].abs().max()) > 1e-3       # the smoother moved


def test_float32_state_follows_float64():
    x, y, x_test = data()
    res = {}
    for dtype in ("float64", "float32"):
        torch.manual_seed(0)
        model = RandomFeatures(5, 20, 1)
        lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, dtype=dtype))
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
        train(model, lens, opt, x, y, 30)
        res[dtype] = lens.effective_parameters()
        assert smoother_of(lens).R.dtype == getattr(torch, dtype)
    for split in res["float64"]:
        assert res["float32"][split] == pytest.approx(res["float64"][split], rel=1e-4)


def test_batch_of_one_and_single_training_point():
    x, y, x_test = data(n=1, m=3)
    model = RandomFeatures(5, 6, 1)
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, loss="sum"))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    train(model, lens, opt, x, y, 10, batch=1)
    with torch.no_grad():
        assert float((smoother_of(lens).predictions("test") - model(x_test)).abs().max()) < 1e-12
    assert math.isfinite(lens.effective_parameters()["train"])


# ---------------------------------------------------------------------------- refusals
def test_memory_budget_refused_before_allocating():
    x, y, x_test = data()
    model = RandomFeatures(5, 20, 1)
    spec = SmootherSpec(x, y, memory_budget_gb=1e-6)
    with pytest.raises(ConfigError, match="memory_budget_gb"):
        Lens(model, {"test": x_test}, smoother=spec)
    # the budget at build covers s, c and one buffer; Adam's extra buffers are checked at the first step
    need = SmootherSpec(x, y).memory_estimate(70, 21, buffers=1, batch_size=1)
    spec = SmootherSpec(x, y, memory_budget_gb=need * 1.01 / 1e9)
    lens = Lens(model, {"test": x_test}, smoother=spec)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    with pytest.raises(ConfigError, match="general path for AdamW"):
        train(model, lens, opt, x, y, 1)
    assert smoother_of(lens).buffers == {}


def test_refusals():
    x, y, x_test = data()
    model = RandomFeatures(5, 20, 1)
    with pytest.raises(ConfigError, match="loss"):
        SmootherSpec(x, y, loss="cross_entropy")
    with pytest.raises(ShapeError, match="y_train"):
        SmootherSpec(x, y[:5])
    with pytest.raises(ShapeError, match="y_train"):
        Lens(model, {"test": x_test}, smoother=SmootherSpec(x, torch.randn(40, 2, dtype=F64)))
    with pytest.raises(ConfigError, match="'train'"):
        Lens(model, {"train": x}, smoother=SmootherSpec(x, y))
    with pytest.raises(ShapeError, match="dtype"):
        Lens(model, {"test": x_test}, smoother=SmootherSpec(x.float(), y))
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, path="kernel"))
    with pytest.raises(ConfigError, match="kernel shortcut"):
        train(model, lens, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), x, y, 1)
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y))
    with pytest.raises(UnsupportedModelError, match="RMSprop"):
        train(model, lens, torch.optim.RMSprop(model.parameters(), lr=0.1), x, y, 1)
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="batch=idx"):
        lens.step(opt)
    with pytest.raises(ShapeError, match="indices"):
        lens.step(opt, batch=torch.tensor([0, 40]))
    plain = Lens(model, {"test": x_test})
    with pytest.raises(ConfigError, match="no smoother"):
        smoother_metrics(plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, y, x_test = data()
    res = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = RandomFeatures(5, 20, 1).to(device)
        lens = Lens(model, {"test": x_test.to(device)}, smoother=SmootherSpec(x.to(device), y.to(device)))
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
        train(model, lens, opt, x.to(device), y.to(device), 20)
        res[device] = smoother_of(lens).R.cpu()
    assert torch.allclose(res["cpu"], res["cuda"], atol=1e-9, rtol=0)
