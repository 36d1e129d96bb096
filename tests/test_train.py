import math

import pytest
import torch

from telescope.errors import DivergenceError
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
