"""The network's kernel weight norms against a batch (telescope.lens.kernel_weights), each against a
direct per-example computation in float64."""

import pytest
import torch

from telescope.errors import ShapeError
from telescope.lens import KernelWeightRecorder, adam_phi, batch_kernel_rows, batch_kernel_weight_norms
from telescope.models import MLP
from telescope.train import batches, fit


def _model(d=3):
    torch.manual_seed(0)
    return MLP(d, 8, 3).double()


def _grads(model, x, params=None):
    """Reference: one autograd backward per example at ``params`` (default: the model's), (n, P)."""
    if params is not None:
        model = _copy_with(model, params)
    rows = []
    for xi in x:
        model.zero_grad()
        model(xi[None]).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows)


def _copy_with(model, params):
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in other.named_parameters():
            p.copy_(params[name])
    return other


def test_kernel_rows_match_per_example_gradients():
    model = _model()
    x = torch.randn(11, 3, dtype=torch.float64)
    xb = torch.randn(4, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    phi = torch.rand(sum(p.numel() for p in model.parameters()), dtype=torch.float64) + 0.5
    J, JB = _grads(model, x), _grads(model, xb)
    k, kphi = batch_kernel_rows(model, params, x, xb, phi, chunk=4)
    torch.testing.assert_close(k, J @ JB.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kphi, J @ (JB / phi).T, rtol=1e-12, atol=1e-12)
    k2, k2b = batch_kernel_rows(model, params, x, xb, None)
    torch.testing.assert_close(k2, J @ JB.T, rtol=1e-12, atol=1e-12)
    assert k2b is k2
    with pytest.raises(ShapeError, match="phi"):
        batch_kernel_rows(model, params, x, xb, phi[:-1])


def test_adam_phi_is_the_one_adam_divides_by():
    model = _model()
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    for _ in range(3):
        before = torch.cat([p.detach().reshape(-1).clone() for p in params])
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        after = torch.cat([p.detach().reshape(-1) for p in params])
        step = opt.state[params[0]]["step"]
        m_hat = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in params]) / (1 - 0.9 ** float(step))
        torch.testing.assert_close((before - after) / 1e-2, m_hat / adam_phi(opt, params), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("adam", [True, False])
def test_recorder_gives_the_norms_at_the_parameters_before_each_step(adam):
    """‖k_t(x)‖₂ = ‖K_{θ_{t−1}}(x, x_B)‖₂ / |B| (φ_t from Adam's state after step t), step by step."""
    model = _model()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    x_probe = torch.randn(5, 3, dtype=torch.float64)
    opt = (torch.optim.Adam(model.parameters(), lr=1e-2) if adam
           else torch.optim.SGD(model.parameters(), lr=1e-1))
    recorded, reference = {}, {}
    seen = {}

    def remember(step, idx):              # the reference's own copy of θ_{t−1} and B_t
        seen[step] = ({k: v.detach().clone() for k, v in model.named_parameters()}, idx.clone())

    def check(step, loss):
        if step not in (1, 3):
            return
        params, idx = seen[step]
        JB = _grads(model, x[idx], params)
        phi = adam_phi(opt, model.parameters()) if adam else torch.ones(JB.shape[1], dtype=torch.float64)
        reference[step] = {name: (torch.linalg.vector_norm(_grads(model, pts, params) @ JB.T, dim=1) / len(idx),
                                  torch.linalg.vector_norm(_grads(model, pts, params) @ (JB / phi).T, dim=1)
                                  / len(idx))
                           for name, pts in (("train", x), ("probe", x_probe))}

    rec = KernelWeightRecorder(model, opt, x, {"train": x, "probe": x_probe}, [1, 3], precondition=adam,
                               record=lambda step, norms: recorded.__setitem__(step, norms))
    fit(model, opt, torch.nn.functional.mse_loss, x, y, steps=4,
        stream=batches(10, 4, torch.Generator().manual_seed(0), drop_last=False),
        before_step=[remember, rec.before_step], callbacks=[rec, check])
    assert sorted(recorded) == [1, 3]
    for step in (1, 3):
        for name in ("train", "probe"):
            plain, pre = recorded[step][name]
            assert plain.dtype == torch.float64 and plain.shape == (len(x) if name == "train" else 5,)
            torch.testing.assert_close(plain, reference[step][name][0], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(pre, reference[step][name][1], rtol=1e-10, atol=1e-12)
            if not adam:
                assert pre is plain
    if adam:   # the preconditioner changes the norms (so the test above could tell them apart)
        assert not torch.allclose(recorded[3]["train"][0], recorded[3]["train"][1])


def test_norms_divide_by_the_batch_size():
    model = _model()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, xb = torch.randn(6, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    norms = batch_kernel_weight_norms(model, params, {"a": x}, xb)
    k, _ = batch_kernel_rows(model, params, x, xb)
    torch.testing.assert_close(norms["a"][0], k.norm(dim=1) / 3)
