"""LinearizedGD (closed form) against GD on the linearized network in parameter space."""

import math

import torch
from torch.func import functional_call, jacrev

from telescope.flow import LinearizedGD
from telescope.models.poly import CommitteeMachine, gaussian_quadratic_task


def test_closed_form_linearized_gd_equals_gd_on_the_linearized_network():
    g = torch.Generator().manual_seed(0)
    x, y, xt, yt, _ = gaussian_quadratic_task(5, 12, 7, generator=g)
    model = CommitteeMachine(5, 6, epsilon=0.3, alpha=1.5, centred=False, generator=g)
    w0 = model.weight.detach().clone()
    lr, steps = 0.8 * model.width / model.alpha ** 2, 40

    def f(w, inp):
        return functional_call(model, ({"weight": w}, {"weight0": model.weight0}), (inp,))

    jac = {name: jacrev(f)(w0, inp).reshape(inp.shape[0], -1) for name, inp in (("train", x), ("test", xt))}
    f0 = {"train": f(w0, x).detach(), "test": f(w0, xt).detach()}

    def f_lin(w, split):                     # the network linearized at W₀, in parameter space
        return f0[split] + jac[split] @ (w - w0).reshape(-1)

    w = w0.clone().requires_grad_(True)
    for _ in range(steps):
        loss = ((f_lin(w, "train") - y) ** 2).mean()
        (grad,) = torch.autograd.grad(loss, w)
        w = (w - lr * grad).detach().requires_grad_(True)
    with torch.no_grad():
        lin = LinearizedGD(model.tangent_kernel(x), model.tangent_kernel(xt, x), y, model(x), model(xt), lr)
        torch.testing.assert_close(lin.train_residual(steps), f_lin(w, "train") - y, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(lin.test_prediction(steps), f_lin(w, "test"), rtol=1e-9, atol=1e-11)
        # t = 0 is the initial network; t → ∞ is ridgeless kernel regression (interpolates the train set)
        torch.testing.assert_close(lin.test_prediction(0), model(xt))
        assert lin.train_residual(math.inf).abs().max() < 1e-9
        k = model.tangent_kernel(x)
        ridgeless = model(xt) + model.tangent_kernel(xt, x) @ torch.linalg.solve(k, y - model(x))
        torch.testing.assert_close(lin.test_prediction(math.inf), ridgeless, rtol=1e-8, atol=1e-10)
