"""weight_norm: the L2 norm of all parameters together, in float64."""

import math

import pytest
import torch

from telescope.measures import weight_norm
from telescope.models import MLP, scale_init


def test_weight_norm_by_hand_and_of_nothing():
    assert weight_norm([torch.tensor([3.0, 4.0]), torch.tensor([[12.0]])]) == 13.0
    assert weight_norm([]) == 0.0


def test_weight_norm_scales_with_alpha_and_sums_float32_in_float64():
    torch.manual_seed(0)
    model = MLP(20, 16, 5, 10)
    norm0 = math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()))
    scale_init(model, 8.0)
    assert weight_norm(model.parameters()) == pytest.approx(8.0 * norm0, rel=1e-6)
    last = model.linear_layers()[-1]
    expected = math.sqrt(float((last.weight.detach().double() ** 2).sum() + (last.bias.detach().double() ** 2).sum()))
    assert weight_norm(last.parameters()) == pytest.approx(expected, rel=1e-12)
