"""The three stages of Ghosh, Mei & Yu: detection on curves and the theory's boundaries.

# NOTE [stage detection]
Each time t on the grid gets a label from two relative gaps, both measured against the
empirical test error R_test(t):

    memorisation gap  G(t) = (R_test − (R_train − σ²)) / R_test   (σ² = label-noise variance)
    oracle gap        O(t) = (R_test − R_oracle) / R_test

    stage 1  G < θ and O < θ   all three curves together
    stage 2  G ≥ θ and O < θ   training error has fallen away; test ≈ oracle (deep bootstrap)
    stage 3  G ≥ θ and O ≥ θ   the oracle has moved on; the empirical test error is left behind
    0        G < θ and O ≥ θ   none of the three (e.g. an oracle that learns before any fit)

with θ = ``threshold`` (default ½: "a curve has pulled away once it is below half of the
test error"). Subtracting σ² from the training error compares like with like in stage 1,
where the training error still contains the label noise while the test error is measured
against clean targets. A stage's window is [first, last] time with its label; the stages
are *in order* when every stage occurs, labels never decrease along the grid, and no time
is labelled 0. Relative gaps make the rule scale-free. With θ = ½ a curve e^{−2t/τ} crosses
at t = τ ln2 / 2 ≈ 0.35 τ, so the detected boundaries sit about 0.3× before the theory's time
scales n/κ_{>l} and 1/λ_{d,l+1}; the summary reports both.
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
    """``labels`` (T,) in {0, 1, 2, 3}; ``windows`` for the stages that occur; ``in_order``."""

    labels: np.ndarray
    windows: tuple[StageWindow, ...]
    in_order: bool

    def window(self, stage: int) -> StageWindow | None:
        return next((w for w in self.windows if w.stage == stage), None)


def detect_stages(times, train, test, oracle, *, noise_var: float = 0.0,
                  threshold: float = 0.5) -> StageReport:
    """Label each time with its stage (see NOTE [stage detection]). All curves shape ``(T,)``."""
    t = np.asarray(times, dtype=np.float64)
    arrays = [np.asarray(a, dtype=np.float64) for a in (train, test, oracle)]
    if t.ndim != 1 or any(a.shape != t.shape for a in arrays):
        raise ShapeError("detect_stages: times, train, test and oracle must be 1-d of one length; got "
                         f"{t.shape}, {[a.shape for a in arrays]}")
    if not 0 < threshold < 1:
        raise ConfigError(f"detect_stages(threshold={threshold}): use a value in (0, 1), e.g. 0.5")
    train, test, oracle = arrays
    scale = np.where(test > 0, test, np.finfo(float).tiny)
    g = (test - (train - noise_var)) / scale
    o = (test - oracle) / scale
    labels = np.where(g < threshold, np.where(o < threshold, 1, 0), np.where(o < threshold, 2, 3))
    windows = []
    for s in (1, 2, 3):
        idx = np.flatnonzero(labels == s)
        if idx.size:
            windows.append(StageWindow(s, float(t[idx[0]]), float(t[idx[-1]])))
    in_order = (len(windows) == 3 and not np.any(labels == 0)
                and bool(np.all(np.diff(labels) >= 0)))
    return StageReport(labels=labels.astype(np.int64), windows=tuple(windows), in_order=in_order)


def predicted_boundaries(eigenvalues: np.ndarray, energies: np.ndarray, d: int, n: int,
                         h_at_one: float) -> dict[str, float]:
    """The theory's time scales for n samples in dimension d (digest b.4–b.5).

    With l = ⌊log_d n⌋ (the degrees the empirical world can learn):
    ``learn_deg{k}`` = 1/λ_{d,k} for each degree 1 ≤ k ≤ l with target energy (stage-1 steps),
    ``interpolate`` = n / κ_{>l} with κ_{>l} = h(1) − Σ_{k≤l} λ_{d,k} B(d,k) (end of stage 1),
    ``oracle_next`` = 1/λ_{d,k*} for the lowest degree k* > l with target energy (start of
    stage 3; inf when λ_{d,k*} = 0 or no such degree), plus ``l``, ``kappa_gt_l``, ``k_next``
    and the bare scales ``d^k`` for k = 1..l+1 (1/λ_{d,k} ≈ d^k · k!/h^{(k)}(0)).
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
                             "interpolate": float(n / kappa) if kappa > 0 else math.inf}
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
