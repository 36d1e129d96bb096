"""interpolation_barrier by hand (the rest of measures.averaging is tested in tests/test_lmc.py)."""

import numpy as np

from telescope.measures import interpolation_barrier


def test_barriers_of_a_bump_and_of_a_straight_line():
    alphas = np.linspace(0.0, 1.0, 5)                     # 0, ¼, ½, ¾, 1
    bump = np.array([1.0, 2.0, 4.0, 3.0, 2.0])           # line from 1 to 2: 1, 1.25, 1.5, 1.75, 2
    assert interpolation_barrier(alphas, bump) == (4.0 - 1.5, 2.5)
    line = 3.0 + 2.0 * alphas
    half, top = interpolation_barrier(alphas, line)
    assert half == 0.0 and abs(top) < 1e-15
    half, top = interpolation_barrier(np.array([0.0, 0.4, 1.0]), np.array([0.0, -1.0, 0.0]))
    assert half == -1.0 and top == 0.0                    # a valley: the ends are the highest points
