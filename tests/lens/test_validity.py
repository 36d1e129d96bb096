"""The smoother's validity signal (NOTE [smoother validity]): the rule at its boundaries, valid at every
step on models linear in their parameters (the self-check holds exactly), invalid from the step a fault
is injected or when the declared loss scale does not match the real one, last_valid_step following the
flags, and Lens.effective_parameters() warning exactly once."""

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from telescope.errors import ConfigError, ShapeError
from telescope.lens import Lens, SmootherSpec, last_valid_step, self_check_valid, smoother_metrics, smoother_of
from telescope.lens.smoother import label_range
from telescope.train import squared_loss

F64 = torch.float64


class RandomFeatures(nn.Module):
    """f(x) = w·tanh(A x) + b: linear in its trainable parameters (A is a frozen buffer)."""

    def __init__(self, d_in, n_features):
        super().__init__()
        self.register_buffer("A", torch.randn(n_features, d_in, dtype=F64))
        self.head = nn.Linear(n_features, 1, dtype=F64)

    def forward(self, x):
        return self.head(torch.tanh(x @ self.A.T)).squeeze(-1)


def setup(opt_name="sgd", loss="mse", seed=0):
    torch.manual_seed(seed)
    x, x_test = torch.randn(40, 5, dtype=F64), torch.randn(30, 5, dtype=F64)
    y = (torch.rand(40, dtype=F64) > 0.5).to(F64)              # labels {0, 1}: label range 1
    model = RandomFeatures(5, 20)
    lens = Lens(model, {"test": x_test}, smoother=SmootherSpec(x, y, loss=loss))
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    return model, lens, opt, x, y


def step(model, lens, opt, x, y, gen):
    idx = torch.randint(0, x.shape[0], (8,), generator=gen)
    opt.zero_grad()
    squared_loss("mse")(model(x[idx]), y[idx]).backward()
    lens.step(opt, batch=idx)


# ---------------------------------------------------------------------------- the rule
def test_rule_boundaries():
    # residual ≤ 3·|f − f̃| is valid, just above is not (above the floor 0.02)
    assert self_check_valid(0.3, 0.1) and not self_check_valid(0.3 + 1e-12, 0.1)
    # the floor: 0.02 of the label range, whatever the telescoping error
    assert self_check_valid(0.02, 0.0) and not self_check_valid(0.0201, 0.0)
    assert self_check_valid(0.2, 0.0, label_range=10.0) and not self_check_valid(0.2001, 0.0, label_range=10.0)
    # non-finite numbers are never valid
    for r, e in ((math.nan, 1.0), (math.inf, 1.0), (0.0, math.nan), (0.0, math.inf)):
        assert not self_check_valid(r, e)
    flags = self_check_valid(np.array([0.0, 0.05, 0.5]), np.array([0.0, 0.02, 0.1]))
    assert flags.tolist() == [True, True, False]
    with pytest.raises(ShapeError, match="self_check_valid"):
        self_check_valid(np.zeros(3), np.zeros(2))
    with pytest.raises(ConfigError, match="label_range"):
        self_check_valid(0.0, 0.0, label_range=-1.0)


def test_last_valid_step_follows_the_flags():
    steps = [0, 10, 100, 1000, 5000]
    assert last_valid_step(steps, [1, 1, 1, 1, 1]) == 5000
    assert last_valid_step(steps, [1, 1, 0, 1, 1]) == 10          # the first failure ends it, a later pass does not restore
    assert last_valid_step(steps, [1.0, 1.0, 1.0, np.nan, 1.0]) == 100      # NaN flag: invalid
    assert math.isnan(last_valid_step(steps, [0, 1, 1, 1, 1]))
    assert math.isnan(last_valid_step([], []))
    with pytest.raises(ShapeError, match="last_valid_step"):
        last_valid_step([0, 1], [1])


def test_label_range():
    assert label_range(torch.tensor([0.0, 1.0, 1.0])) == 1.0
    assert label_range(torch.tensor([-2.0, 3.0])) == 5.0
    assert label_range(torch.tensor([4.0, 4.0])) == 1.0                   # constant targets: no scale, use 1


# ---------------------------------------------------------------------------- on a training run
@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_valid_at_every_step_on_a_model_linear_in_its_parameters(opt_name, caplog):
    model, lens, opt, x, y = setup(opt_name)
    gen = torch.Generator().manual_seed(1)
    flags, steps = [], []
    with caplog.at_level(logging.WARNING, logger="telescope.lens"):
        for t in range(1, 31):
            step(model, lens, opt, x, y, gen)
            m = smoother_metrics(lens)
            assert m["train"]["smoother/residual"] < 1e-10 and m["test"]["smoother/residual"] < 1e-10
            flags.append(min(m["train"]["smoother/valid"], m["test"]["smoother/valid"]))
            steps.append(t)
            lens.effective_parameters()
    assert flags == [1.0] * 30
    assert last_valid_step(steps, flags) == 30
    err = smoother_of(lens).telescope_errors()
    assert err["train"] < 1e-10 and err["test"] < 1e-10                  # f̃ = f exactly
    assert not [r for r in caplog.records if "self-check" in r.getMessage()]


def test_invalid_from_the_step_a_fault_is_injected_and_warned_once(caplog):
    """Corrupt the smoother's constant column c by 0.5 before step 6: s·y + c no longer reproduces f̃
    (|f − f̃| stays 0 on this model), every later flag is 0 and last_valid_step is 5."""
    model, lens, opt, x, y = setup("sgd")
    tracker = smoother_of(lens)
    gen = torch.Generator().manual_seed(1)
    flags = []
    with caplog.at_level(logging.WARNING, logger="telescope.lens"):
        for t in range(1, 11):
            if t == 6:
                assert not [r for r in caplog.records if "self-check" in r.getMessage()]
                tracker.R[:, -1] += 0.5
            step(model, lens, opt, x, y, gen)
            m = smoother_metrics(lens)
            flags.append({s: m[s]["smoother/valid"] for s in ("train", "test")})
            p = lens.effective_parameters()
            assert set(p) == {"train", "test"} and all(math.isfinite(v) for v in p.values())
    assert [f["train"] for f in flags] == [1.0] * 5 + [0.0] * 5
    assert [f["test"] for f in flags] == [1.0] * 5 + [0.0] * 5
    assert tracker.validity() == {"train": False, "test": False}
    assert last_valid_step(range(1, 11), [min(f.values()) for f in flags]) == 5
    warned = [r for r in caplog.records if "self-check" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert "step 6" in warned[0].getMessage() and "train, test" in warned[0].getMessage()


def test_mismatched_loss_scale_is_flagged():
    """The smoother told loss='sum' (a = 2) while the network trains on the batch mean (a = 2/|B|):
    its recursion takes |B| = 8 times the real step, s·y + c leaves f̃ and the flag drops to 0, while the
    matched smoother on the same training stays valid."""
    runs = {}
    for loss in ("mse", "sum"):
        model, lens, opt, x, y = setup("sgd", loss=loss)
        gen = torch.Generator().manual_seed(1)
        flags = []
        for _ in range(10):
            step(model, lens, opt, x, y, gen)
            m = smoother_metrics(lens)
            flags.append(min(m["train"]["smoother/valid"], m["test"]["smoother/valid"]))
        runs[loss] = (flags, smoother_metrics(lens))
    assert runs["mse"][0] == [1.0] * 10
    flags, m = runs["sum"]
    assert flags == [0.0] * 10 and m["train"]["smoother/residual"] > 0.02
    assert math.isnan(last_valid_step(range(1, 11), flags))              # invalid from the first step
