"""binary_metrics / binary_error: the contract's mse and error of scalar outputs, by hand."""

import torch

from telescope.measures import binary_error, binary_metrics


def test_binary_metrics_by_hand():
    f = torch.tensor([0.2, 0.7, 0.5, 1.5], dtype=torch.float32)
    y = torch.tensor([0, 0, 1, 1])
    # classes: f > 0.5 → [0, 1, 0, 1]; wrong at 1 and 2
    assert binary_error(f, y) == 0.5
    out = binary_metrics(f, y)
    assert out["error"] == 0.5
    expected = sum((float(a) - float(b)) ** 2 for a, b in zip(f, y)) / 4   # float32 inputs, float64 arithmetic
    assert abs(out["mse"] - expected) < 1e-15
    assert binary_metrics(torch.zeros(3, dtype=torch.float64), torch.zeros(3)) == {"mse": 0.0, "error": 0.0}
