"""Each statistic against a value computed by hand on a tiny kernel."""

from __future__ import annotations

import math

import pytest
import torch

from telescope.errors import ConfigError, ShapeError
from telescope.kernels import (
    centered_kernel_alignment,
    effective_rank,
    kernel_distance,
    kernel_target_alignment,
    kernel_weight_norms,
    relative_change,
    spectrum_effective_rank,
    top_eigenvalues,
)

T = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731

# K and y used below; by hand:
#   column means of K: (4/3, 4/3, 2/3); y is already centred.
#   K_c = K − colmeans = [[5, −1, −2], [−1, 2, 1], [−4, −1, 1]] / 3, ‖K_c‖² = 54/9 = 6
#   HKH = [[13, −5, −8], [−5, 4, 1], [−8, 1, 7]] / 9,             ‖HKH‖² = 414/81
#   yᵀKy = K00 − K02 − K20 + K22 = 4 = ⟨HKH, yyᵀ⟩,  ‖yyᵀ‖ = ‖y‖² = 2,  ‖K‖² = 18
K = T([[3, 1, 0], [1, 2, 1], [0, 1, 1]])
y = T([1, 0, -1])


def close(value, expected):
    assert value.dtype == torch.float64
    assert abs(value.item() - expected) <= 1e-12 * max(1.0, abs(expected)), (value.item(), expected)


def test_kernel_target_alignment_three_centrings():
    close(kernel_target_alignment(K, y), 4 / (2 * math.sqrt(414) / 9))
    close(kernel_target_alignment(K, y, centering="one_sided"), 4 / (2 * math.sqrt(6)))
    close(kernel_target_alignment(K, y, centering="none"), 4 / (2 * math.sqrt(18)))


def test_kernel_target_alignment_matches_kumar_code_on_random_kernel():
    # the digest's kalignment, transcribed: yc = y − ȳ; Kc = K − K.mean(axis=0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(6, 3, generator=g, dtype=torch.float64)
    Kr = X @ X.T
    yr = torch.randn(6, generator=g, dtype=torch.float64)
    yc = yr - yr.mean()
    Kc = Kr - Kr.mean(dim=0)
    expected = (yc @ Kc @ yc) / (torch.linalg.norm(Kc) * (yc @ yc))
    close(kernel_target_alignment(Kr, yr, centering="one_sided"), expected.item())
    # one-hot (n, k) targets reduce to the vector case for k = 1
    close(kernel_target_alignment(Kr, yr[:, None]), kernel_target_alignment(Kr, yr).item())


def test_centered_kernel_alignment():
    close(centered_kernel_alignment(K, torch.outer(y, y)), 4 / (2 * math.sqrt(414) / 9))
    # ⟨HKH, H⟩ = tr(HKH) = 24/9, ‖H‖ = √2
    close(centered_kernel_alignment(K, torch.eye(3, dtype=torch.float64)), (24 / 9) / (math.sqrt(414) / 9 * math.sqrt(2)))
    # invariant to scaling and to adding a constant
    close(centered_kernel_alignment(K, 2 * K + 5), 1.0)


def test_kernel_distance_and_relative_change():
    eye, ones = T([[1, 0], [0, 1]]), T([[1, 1], [1, 1]])
    close(kernel_distance(eye, ones), 1 - 2 / (math.sqrt(2) * 2))
    close(kernel_distance(ones, 3 * ones), 0.0)
    close(relative_change(ones, eye), 1.0)  # ‖[[0,1],[1,0]]‖ / ‖I‖ = √2/√2
    close(relative_change(2 * eye, eye), 1.0)


def test_spectrum_and_effective_rank():
    close(top_eigenvalues(T([[2, 1], [1, 2]]))[0], 3.0)
    assert torch.allclose(top_eigenvalues(T([[2, 1], [1, 2]])), T([3, 1]), rtol=0, atol=1e-12)
    assert top_eigenvalues(K, 2).shape == (2,)
    close(effective_rank(torch.diag(T([1, 1, 0]))), 2.0)
    close(effective_rank(torch.diag(T([1, 1, 0])), method="participation"), 2.0)
    close(effective_rank(torch.diag(T([3, 1]))), math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    close(effective_rank(torch.diag(T([3, 1])), method="participation"), 16 / 10)


def test_kernel_weight_norms():
    assert torch.equal(kernel_weight_norms(T([[3, 4], [0, 1]])), T([5, 1]))
    full = torch.zeros(2, 3, 2, 2, dtype=torch.float64)
    full[0, 1, 0, 0], full[0, 2, 1, 1] = 3, 4
    assert torch.equal(kernel_weight_norms(full), T([5, 0]))


def test_statistics_refuse_bad_input():
    with pytest.raises(ShapeError, match=r"square \(n, n\) Gram.*output='trace'"):
        kernel_target_alignment(torch.zeros(2, 2, 3, 3, dtype=torch.float64), y[:2])
    with pytest.raises(ShapeError, match=r"y must have shape \(3,\)"):
        kernel_target_alignment(K, T([1, 2]))
    with pytest.raises(ConfigError, match="centering='both'"):
        kernel_target_alignment(K, y, centering="both")
    with pytest.raises(ShapeError, match="differ in shape"):
        centered_kernel_alignment(K, torch.eye(2, dtype=torch.float64))
    with pytest.raises(ShapeError, match="floating point"):
        kernel_distance(torch.eye(2, dtype=torch.long), torch.eye(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="method='svd'"):
        effective_rank(K, method="svd")
    with pytest.raises(ConfigError, match="count must be"):
        top_eigenvalues(K, 0)


def test_alignment_against_the_projector_formula_for_vector_and_matrix_targets():
    # HKH and H y yᵀ H with the explicit H = I − 11ᵀ/n (the formula lazy-rich and deep-grokking log)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(9, 4, generator=g, dtype=torch.float64)
    k = a @ a.T
    h = torch.eye(9, dtype=torch.float64) - 1 / 9
    for yy in (torch.randn(9, generator=g, dtype=torch.float64), torch.randn(9, 3, generator=g, dtype=torch.float64)):
        ym = yy.reshape(9, -1)
        kc, tc = h @ k @ h, h @ ym @ ym.T @ h
        close(kernel_target_alignment(k, yy), float((kc * tc).sum() / (kc.norm() * tc.norm())))
        kcol = h @ k
        yc = h @ ym
        code = torch.trace(yc.T @ kcol @ yc) / (kcol.norm() * tc.norm())
        close(kernel_target_alignment(k, yy, centering="one_sided"), float(code))
        close(kernel_target_alignment(5.0 * k + 2.0, yy + 3.0), float((kc * tc).sum() / (kc.norm() * tc.norm())))


def test_alignment_of_one_hot_labels_accepts_integer_targets():
    g = torch.Generator().manual_seed(4)
    labels = torch.nn.functional.one_hot(torch.randint(0, 10, (200,), generator=g), 10)   # int64
    yd = labels.double()
    close(kernel_target_alignment(yd @ yd.T, labels), 1.0)
    close(kernel_target_alignment(5.0 * yd @ yd.T + 3.0, labels), 1.0)                  # scale, shift
    z = torch.randn(200, 50, generator=g, dtype=torch.float64)
    assert abs(kernel_target_alignment(z @ z.T, labels).item()) < 0.1
    assert math.isnan(kernel_target_alignment(torch.ones(200, 200, dtype=torch.float64), labels).item())


def test_spectrum_effective_rank_by_hand_and_of_a_zero_spectrum():
    close(spectrum_effective_rank(T([2, 2, 0])), 2.0)
    close(spectrum_effective_rank(T([3, 1]), method="participation"), 16 / 10)
    close(spectrum_effective_rank(T([0, 0])), 0.0)
    close(effective_rank(torch.zeros(3, 3, dtype=torch.float64)), 0.0)
    with pytest.raises(ShapeError, match="1-d"):
        spectrum_effective_rank(torch.eye(2, dtype=torch.float64))
    with pytest.raises(ConfigError, match="method"):
        spectrum_effective_rank(T([1, 2]), method="svd")
