"""Reading logged curves (telescope.measures.curves), checked against direct definitions."""

import math

import numpy as np
import pytest

from telescope.measures import first_step, stays_from, value_at

STEPS = np.array([0, 10, 100, 1000, 5000, 10000], dtype=float)


def test_first_step_is_the_first_logged_step_where_the_condition_holds():
    err = np.array([0.9, 0.5, 0.0, 0.1, 0.0, 0.0])
    assert first_step(STEPS, err == 0) == 100.0
    assert math.isnan(first_step(STEPS, err < -1))


def test_stays_from_ignores_an_early_dip_that_does_not_last():
    ratio = np.array([1.0, 0.8, 1.1, 0.85, 0.8, 0.7])      # below 0.9 at 10, back above at 100, below from 1000
    assert stays_from(STEPS, ratio < 0.9) == 1000.0
    assert math.isnan(stays_from(STEPS, np.array([1, 1, 1, 1, 1, 0], dtype=bool)))
    for k in range(len(STEPS)):                             # the definition, by brute force
        mask = np.zeros(len(STEPS), dtype=bool)
        mask[k:] = True
        assert stays_from(STEPS, mask) == STEPS[k]


def test_value_at_reads_a_logged_step_and_passes_a_missing_step_through_as_nan():
    vals = np.arange(6.0) * 2
    assert value_at(STEPS, vals, 1000.0) == 6.0
    assert math.isnan(value_at(STEPS, vals, float("nan")))
    with pytest.raises(ValueError, match="not a logged step"):
        value_at(STEPS, vals, 7.0)
