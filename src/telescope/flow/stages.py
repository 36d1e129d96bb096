"""The three stages of Ghosh, Mei & Yu: detection on curves and the theory's boundaries.

# NOTE [stage detection]
Each time t on the grid gets a label from two relative gaps:

    memorisation gap  G(t) = (R_test + σ² − R_train) / (R_test + σ²)   (σ² = label-noise variance)
    oracle gap        O(t) = (R_test − R_oracle) / R_test

Both are steps from 0 to ~1: G goes from 0 (the training error, which holds the label noise,
equals the test error against clean targets plus σ²) to 1 (training error 0); O goes from
0 (test = oracle) to 1 (the oracle has reached 0 while the test error is frozen). A curve is
*on a plateau* when it is within ``tol`` of the step's end, the 10 %–90 % convention for the
edges of a step (``tol`` = 0.1 by default, which is also the digest's tolerance
"|test − oracle| ≲ 0.1" for stages 1–2, b.7):

    stage 1  |G| < tol and |O| < tol          all three curves together
    stage 2  G ≥ 1 − tol and |O| < tol        training error gone; test ≈ oracle (deep bootstrap)
    stage 3  G ≥ 1 − tol and O ≥ 1 − tol      the oracle has learned what the test error cannot
    0        anything else                    a transition, or a stage that is not clean

A stage's window is [first, last] time with its label; the stages are *in order* when each
occurs and the non-zero labels never decrease. ``bootstrap_gap`` is O at the first time
with G ≥ 1 − tol (the moment the training set is fitted): the theory says it → 0 as d → ∞;
at a finite size it is the sum of the finite-n variance (∝ (σ² + ‖P_{>l}f‖²)·Σ_{k≤l}B(d,k)/n)
and of what the oracle has learned of degree l+1 by then (∝ n/(κ_{>l} d^{l+1})), so a clean
stage 2 needs both small. Pass the oracle evaluated on the *test points* (the oracle
predictor's error there) rather than its exact population value when the test set is finite:
the two then share the test set's sampling noise in ‖f‖² (≈ 5 % at 2,000 points), which
otherwise adds to O. The previous rule (a single θ = ½ for both gaps) called gaps up to 50 %
"together"; it is gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from telescope.errors import ConfigError, ShapeError
from telescope.flow.sphere import harmonic_dim


@dataclass(frozen=True)
class StageWindow:
    stage: int
    start: float
    end: float


@dataclass(frozen=True)
class StageReport:
    """``labels`` (T,) in {0, 1, 2, 3}; ``windows`` for the stages that occur; ``in_order``;
    ``memorisation_gap`` and ``oracle_gap`` (T,); ``bootstrap_gap`` (O when the training set is
    fitted, NaN if it never is); ``tol``. NOTE [stage detection]."""

    labels: np.ndarray
    windows: tuple[StageWindow, ...]
    in_order: bool
    memorisation_gap: np.ndarray
    oracle_gap: np.ndarray
    bootstrap_gap: float
    tol: float

    def window(self, stage: int) -> StageWindow | None:
        return next((w for w in self.windows if w.stage == stage), None)


def detect_stages(times, train, test, oracle, *, noise_var: float = 0.0, tol: float = 0.1) -> StageReport:
    """Label each time with its stage (NOTE [stage detection]). All curves shape ``(T,)``.

    ``oracle`` is best the oracle predictor's error on the same test points as ``test``.
    """
    t = np.asarray(times, dtype=np.float64)
    arrays = [np.asarray(a, dtype=np.float64) for a in (train, test, oracle)]
    if t.ndim != 1 or any(a.shape != t.shape for a in arrays):
        raise ShapeError("detect_stages: times, train, test and oracle must be 1-d of one length; got "
                         f"{t.shape}, {[a.shape for a in arrays]}")
    if not 0 < tol < 0.5:
        raise ConfigError(f"detect_stages(tol={tol}): use a value in (0, 0.5), e.g. 0.1 (the 10 %–90 % "
                          "edges of a step)")
    if noise_var < 0:
        raise ConfigError(f"detect_stages(noise_var={noise_var}): a variance is >= 0")
    train, test, oracle = arrays
    tiny = np.finfo(float).tiny
    g = (test + noise_var - train) / np.maximum(test + noise_var, tiny)
    o = (test - oracle) / np.maximum(test, tiny)
    fitted, together = g >= 1 - tol, np.abs(o) < tol
    labels = np.zeros(t.shape, dtype=np.int64)
    labels[(np.abs(g) < tol) & together] = 1
    labels[fitted & together] = 2
    labels[fitted & (o >= 1 - tol)] = 3
    windows = []
    for s in (1, 2, 3):
        idx = np.flatnonzero(labels == s)
        if idx.size:
            windows.append(StageWindow(s, float(t[idx[0]]), float(t[idx[-1]])))
    named = labels[labels > 0]
    in_order = len(windows) == 3 and bool(np.all(np.diff(named) >= 0))
    hit = np.flatnonzero(fitted)
    return StageReport(labels=labels, windows=tuple(windows), in_order=in_order, memorisation_gap=g,
                       oracle_gap=o, bootstrap_gap=float(o[hit[0]]) if hit.size else math.nan, tol=float(tol))


def predicted_boundaries(eigenvalues: np.ndarray, energies: np.ndarray, d: int, n: int,
                         h_at_one: float) -> dict[str, float]:
    """The theory's time scales for n samples in dimension d (digest b.4–b.5).

    With l = ⌊log_d n⌋ (the degrees the empirical world can learn):
    ``learn_deg{k}`` = 1/λ_{d,k} for each degree 1 ≤ k ≤ l with target energy (stage-1 steps),
    ``interpolate`` = n / κ_{>l} with κ_{>l} = h(1) − Σ_{k≤l} λ_{d,k} B(d,k) (end of stage 1),
    ``oracle_next`` = 1/λ_{d,k*} for the lowest degree k* > l with target energy (start of
    stage 3; inf when λ_{d,k*} = 0 or no such degree), plus ``l``, ``kappa_gt_l``, ``k_next``,
    the bare scales ``d^k`` for k = 1..l+1 (1/λ_{d,k} ≈ d^k · k!/h^{(k)}(0)) and ``plateau`` =
    ‖P_{>l} f‖² = Σ_{k>l} ``energies[k]``, the empirical test error of stages 2–3 as d → ∞.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    e = np.asarray(energies, dtype=np.float64)
    if d < 2 or n < 1:
        raise ConfigError(f"predicted_boundaries(d={d}, n={n}): need d >= 2 and n >= 1")
    level = int(math.floor(math.log(n) / math.log(d) + 1e-12))
    if level + 1 > len(lam) - 1:
        raise ConfigError(f"predicted_boundaries: need eigenvalues up to degree {level + 1}, got {len(lam) - 1}")
    kappa = h_at_one - sum(lam[k] * harmonic_dim(d, k) for k in range(level + 1))
    out: dict[str, float] = {"l": float(level), "kappa_gt_l": float(kappa),
                             "interpolate": float(n / kappa) if kappa > 0 else math.inf,
                             "plateau": float(e[level + 1:].sum())}
    for k in range(1, level + 2):
        out[f"d^{k}"] = float(d) ** k
    for k in range(1, min(level, len(e) - 1) + 1):
        if e[k] > 0:
            out[f"learn_deg{k}"] = float(1.0 / lam[k]) if lam[k] > 0 else math.inf
    higher = [k for k in range(level + 1, len(e)) if e[k] > 0]
    if higher:
        k_next = higher[0]
        if k_next >= len(lam):
            raise ConfigError(f"predicted_boundaries: need eigenvalues up to degree {k_next}")
        out["k_next"] = float(k_next)
        out["oracle_next"] = float(1.0 / lam[k_next]) if lam[k_next] > 1e-300 else math.inf
    else:
        out["k_next"] = math.nan
        out["oracle_next"] = math.inf
    return out
