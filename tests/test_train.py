import math

import pytest
import torch

from telescope.errors import ConfigError, DivergenceError
from telescope.models import MLP
from telescope.train import RecordAt, batches, fit, log_steps


def test_log_steps_start_at_zero_end_at_total_and_are_sorted():
    steps = log_steps(5000, 40)
    assert steps[0] == 0 and steps[-1] == 5000 and steps == sorted(set(steps))
    assert log_steps(1, 10) == [0, 1]


def test_record_at_averages_the_losses_since_the_last_record():
    seen = []
    rec = RecordAt([0, 2, 5], lambda step, loss: seen.append((step, loss)))
    rec.start()
    for step, loss in enumerate([1.0, 3.0, 5.0, 7.0, 9.0], start=1):
        rec(step, loss)
    assert seen == [(0, None), (2, 2.0), (5, 7.0)]


def test_batches_cover_an_epoch_without_repeats():
    gen = torch.Generator().manual_seed(0)
    stream = batches(10, 3, gen)
    epoch = torch.cat([next(stream) for _ in range(3)])
    assert len(set(epoch.tolist())) == 9
    assert torch.equal(next(batches(4, 10, gen)), torch.arange(4))


def test_fit_stops_with_a_clear_error_on_a_non_finite_loss():
    model = MLP(3, 4, 2)
    x, y = torch.randn(8, 3), torch.full((8,), math.inf)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(DivergenceError, match="step 1"):
        fit(model, opt, lambda f, t: ((f - t) ** 2).mean(), x, y, steps=3, batch_size=4,
            generator=torch.Generator().manual_seed(0))


def test_batches_without_drop_last_keep_the_short_batch_and_always_shuffle():
    gen = torch.Generator().manual_seed(0)
    stream = batches(10, 4, gen, drop_last=False)
    epoch = [next(stream) for _ in range(3)]
    assert [len(b) for b in epoch] == [4, 4, 2]
    assert sorted(torch.cat(epoch).tolist()) == list(range(10))
    full = next(batches(4, 10, torch.Generator().manual_seed(1), drop_last=False))
    assert sorted(full.tolist()) == [0, 1, 2, 3] and not torch.equal(full, torch.arange(4))


def _problem():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    x, y = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 1, dtype=torch.float64)
    return model, x, y


def _mse(f, t):
    return ((f - t) ** 2).mean()


def test_fit_is_the_hand_written_loop_exactly():
    model, x, y = _problem()
    ref = torch.nn.Linear(3, 1).double()
    ref.load_state_dict(model.state_dict())
    opt, opt_ref = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    fit(model, opt, _mse, x, y, steps=7, batch_size=5, generator=torch.Generator().manual_seed(3))
    stream = batches(12, 5, torch.Generator().manual_seed(3))
    for _ in range(7):
        idx = next(stream)
        opt_ref.zero_grad()
        _mse(ref(x[idx]), y[idx]).backward()
        opt_ref.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_a_stream_continues_across_calls_and_hooks_see_the_batch_before_the_update():
    model, x, y = _problem()
    twin = torch.nn.Linear(3, 1).double()
    twin.load_state_dict(model.state_dict())
    opt, opt_twin = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin))
    fit(twin, opt_twin, _mse, x, y, steps=5, batch_size=5, generator=torch.Generator().manual_seed(4))

    stream = batches(12, 5, torch.Generator().manual_seed(4))
    seen, after = [], {}
    snapshot = lambda: model.weight.detach().clone()  # noqa: E731

    def before(step, idx):
        seen.append((step, idx.clone()))
        assert torch.equal(snapshot(), after[step - 1]) if step > 1 else True   # θ_{t−1}

    def callback(step, loss):
        after[step] = snapshot()

    last = fit(model, opt, _mse, x, y, steps=3, stream=stream, before_step=[before], callbacks=[callback])
    last = fit(model, opt, _mse, x, y, steps=2, stream=stream, before_step=[before], callbacks=[callback],
               start_step=last)
    assert last == 5 and [s for s, _ in seen] == [1, 2, 3, 4, 5]
    again = batches(12, 5, torch.Generator().manual_seed(4))
    assert all(torch.equal(idx, next(again)) for _, idx in seen)
    assert torch.equal(model.weight, twin.weight) and torch.equal(model.bias, twin.bias)


def test_prepare_maps_each_batch_before_the_forward():
    model, x, y = _problem()
    twin = torch.nn.Linear(3, 1).double()
    twin.load_state_dict(model.state_dict())
    opt, opt_twin = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin))
    calls = []

    def prepare(xb, yb):
        calls.append(len(xb))
        return 2.0 * xb, yb

    fit(model, opt, _mse, x, y, steps=4, batch_size=6, generator=torch.Generator().manual_seed(5), prepare=prepare)
    fit(twin, opt_twin, _mse, 2.0 * x, y, steps=4, batch_size=6, generator=torch.Generator().manual_seed(5))
    assert calls == [6, 6, 6, 6]
    assert torch.equal(model.weight, twin.weight)


def test_fit_needs_a_stream_or_a_batch_size_and_generator():
    model, x, y = _problem()
    with pytest.raises(ConfigError, match="batch_size and generator"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), _mse, x, y, steps=1, batch_size=4)


# NOTE [training without host syncs]: the sync-free path, exercised on the CPU by sync_free=True.

def _diverging(after: int):
    """A loss that is finite for ``after`` calls and NaN from then on."""
    calls = {"n": 0}

    def loss(f, t):
        calls["n"] += 1
        base = ((f - t) ** 2).mean()
        return base if calls["n"] <= after else base * float("nan")
    return loss


def _reads(run) -> int:
    """Host reads of a tensor (aten::_local_scalar_dense: .item(), float(t), bool(t)) made by ``run``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")


def test_sync_free_fit_reads_the_loss_only_at_record_and_check_steps_and_logs_the_same_means():
    logged = {}
    for sync_free in (False, True):
        model, x, y = _problem()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        seen = []
        rec = RecordAt([0, 7, 20], lambda s, m: seen.append((s, m)))
        rec.start()
        reads = _reads(lambda: fit(model, opt, _mse, x, y, steps=20, batch_size=4, sync_free=sync_free,
                                   check_every=10, generator=torch.Generator().manual_seed(0), callbacks=[rec]))
        logged[sync_free] = (seen, reads)
    assert logged[True][0] == logged[False][0]            # the same means, bit for bit
    assert logged[False][1] >= 20                          # one read per step before
    # sync-free: the record reads at steps 7 and 20, the checks at 7 (due), 10, 20
    assert logged[True][1] == 5


def test_sync_free_fit_still_stops_on_divergence_before_a_record_is_made_from_diverged_weights():
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    seen = []
    rec = RecordAt([3, 6, 9], lambda s, m: seen.append(s))
    with pytest.raises(DivergenceError, match="between steps 4 and 6"):
        fit(model, opt, _diverging(after=4), x, y, steps=12, batch_size=4, sync_free=True, check_every=100,
            generator=torch.Generator().manual_seed(0), callbacks=[rec])
    assert seen == [3]                                     # step 6's record was never made


def test_sync_free_fit_reads_every_step_when_a_plain_callback_wants_floats():
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    got = []
    fit(model, opt, _mse, x, y, steps=5, batch_size=4, sync_free=True, generator=torch.Generator().manual_seed(0),
        callbacks=[lambda s, loss: got.append(type(loss))])
    assert got == [float] * 5
    with pytest.raises(ConfigError, match="check_every"):
        fit(model, opt, _mse, x, y, steps=1, batch_size=4, check_every=0, generator=torch.Generator())


def test_fit_record_at_is_recordat_started_before_training():
    seen = {}
    for how in ("record_at", "callback"):
        model, x, y = _problem()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        got = seen.setdefault(how, [])
        kw = dict(steps=6, batch_size=4, generator=torch.Generator().manual_seed(0))
        if how == "record_at":
            fit(model, opt, _mse, x, y, record_at=([0, 2, 6], lambda s, m: got.append((s, m))), **kw)
        else:
            rec = RecordAt([0, 2, 6], lambda s, m: got.append((s, m)))
            rec.start()
            fit(model, opt, _mse, x, y, callbacks=[rec], **kw)
    assert seen["record_at"] == seen["callback"] and [s for s, _ in seen["record_at"]] == [0, 2, 6]
    assert seen["record_at"][0][1] is None
