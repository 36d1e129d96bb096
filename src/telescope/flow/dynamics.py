"""Gradient flow on kernel least squares in closed form: the oracle and the empirical world.

# NOTE [flow convention]
Objective and time are fixed once for the whole package:
empirical risk R̂_n(f) = (1/2n) Σ_i (y_i − f(x_i))², population risk R(f) = ½ E(y − f(x))²,
gradient flow in the RKHS of H from f_0 = 0 (equivalently gradient flow on θ for the linear
model f = ⟨θ, φ(x)⟩ from θ_0 = 0, or the linearisation of a network whose initial output is
zero). With this convention gradient descent with step η on the same objective follows the
flow at time t = η · steps as long as η μ_max / n ≪ 1.

Oracle world (population flow):   f_t = Σ_k (1 − e^{−λ_{d,k} t}) P_k f,
                                  R^OR(t) = Σ_k e^{−2 λ_{d,k} t} ‖P_k f‖².
Empirical world (n samples), 𝐇 = V diag(μ) Vᵀ:
    train predictions  F_t = V diag(1 − e^{−t μ/n}) Vᵀ y,
    predictor          f̂_t(x) = H(x, X) V diag((1 − e^{−t μ/n}) / μ) Vᵀ y.
"""

from __future__ import annotations

import numpy as np

from telescope.errors import ConfigError, ShapeError


def log_time_grid(t_max: float, points_per_decade: int = 8, t_min: float = 1.0) -> np.ndarray:
    """Integer times on a log grid from ``t_min`` to ``t_max`` (duplicates after rounding dropped).

    Integer times let the grid double as the ``step`` column of long-format metrics and still
    plot on a log axis. Shape ``(T,)``, int64, strictly increasing.
    """
    if not (t_max >= t_min >= 1) or points_per_decade < 1:
        raise ConfigError(f"log_time_grid(t_max={t_max}, points_per_decade={points_per_decade}, "
                          f"t_min={t_min}): need t_max >= t_min >= 1 and points_per_decade >= 1")
    decades = np.log10(t_max / t_min)
    count = int(np.ceil(decades * points_per_decade)) + 1
    grid = np.unique(np.rint(t_min * np.logspace(0.0, decades, count)).astype(np.int64))
    return grid


def _times(times) -> np.ndarray:
    t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if t.ndim != 1 or np.any(t < 0) or not np.all(np.isfinite(t)):
        raise ConfigError(f"flow: times must be a 1-d array of finite values >= 0, got {times!r}")
    return t


def oracle_mse(eigenvalues: np.ndarray, energies: np.ndarray, times, noise_var: float = 0.0) -> np.ndarray:
    """Oracle-world test error R^OR(t) = Σ_k e^{−2 λ_k t} ‖P_k f‖² (+ ``noise_var``): shape ``(T,)``.

    ``eigenvalues[k]`` = λ_{d,k}, ``energies[k]`` = ‖P_k f‖²; degrees beyond the shorter array
    are taken to carry no target energy. Cost O(T · K).
    """
    lam, e = _spectrum(eigenvalues, energies)
    t = _times(times)
    return np.exp(-2.0 * np.outer(t, lam)) @ e + noise_var


def oracle_learned_fraction(eigenvalues: np.ndarray, times) -> np.ndarray:
    """1 − e^{−λ_k t}: the fraction of P_k f the oracle predictor holds at time t; ``(T, K)``."""
    return -np.expm1(-np.outer(_times(times), np.asarray(eigenvalues, dtype=np.float64)))


def _spectrum(eigenvalues, energies) -> tuple[np.ndarray, np.ndarray]:
    lam = np.asarray(eigenvalues, dtype=np.float64)
    e = np.asarray(energies, dtype=np.float64)
    if lam.ndim != 1 or e.ndim != 1:
        raise ShapeError(f"oracle_mse: eigenvalues and energies must be 1-d, got {lam.shape} and {e.shape}")
    k = min(len(lam), len(e))
    if np.any(e[k:] != 0):
        raise ConfigError(f"oracle_mse: the target has energy at degree {k} or above but only "
                          f"{len(lam)} eigenvalues were given; compute eigenvalues up to degree {len(e) - 1}")
    return lam[:k], e[:k]


def _rate(mu: np.ndarray, n: int, lr: float | None) -> np.ndarray:
    """Per-unit-time log-decay r(μ) with decay = e^{−t r}: μ/n for the flow, −log(1 − lr μ/n)/lr for GD."""
    if lr is None:
        return mu / n
    x = lr * mu / n
    small = np.abs(x) < 1e-8
    return np.where(small, mu / n * (1 + x / 2), -np.log1p(-np.where(small, 0.0, x)) / lr)


def _phi(t: np.ndarray, mu: np.ndarray, n: int, lr: float | None = None) -> np.ndarray:
    """(1 − e^{−t r(μ)}) / μ, stable at μ → 0 (limit t/n): shape ``(T, n_eig)``."""
    rate = _rate(mu, n, lr)
    z = np.outer(t, rate)
    big = np.abs(z) > 1e-12
    ratio = np.where(big, -np.expm1(-z) / np.where(big, z, 1.0), 1.0 - z / 2)
    # z/μ = t·r(μ)/μ → t/n as μ → 0
    small_mu = np.abs(mu) < 1e-300
    r_over_mu = np.where(small_mu, 1.0 / n, rate / np.where(small_mu, 1.0, mu))
    return ratio * np.outer(t, r_over_mu)


class EmpiricalFlow:
    """Gradient flow on (1/2n) Σ (y_i − f(x_i))² in the RKHS of one Gram matrix, in closed form.

    ``EmpiricalFlow(gram, y)`` eigendecomposes ``gram`` (n, n) once: O(n³) time, O(n²) memory.
    Afterwards every time costs O(n) for the training error and the predictor on m new points
    costs O(m n) once (``cross @ V``) plus O(m n T) for T times.

    ``nugget`` c adds c·I to the training Gram only (the kernel H + c·1{x = x'}): the
    eigenvectors are shared, so :meth:`with_nugget` is free.

    ``lr`` switches from the flow to gradient descent with that step, exactly: times are then
    t = lr·steps and e^{−tμ/n} becomes (1 − lr μ/n)^{steps}. Needs lr·μ_max/n < 1 (the
    monotone regime; plain GD is stable up to 2).
    """

    def __init__(self, gram: np.ndarray, y: np.ndarray, *, nugget: float = 0.0, lr: float | None = None,
                 _eig: tuple[np.ndarray, np.ndarray] | None = None):
        gram = np.asarray(gram, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or y.shape != (gram.shape[0],):
            raise ShapeError(f"EmpiricalFlow: gram must be (n, n) and y (n,), got {gram.shape} and {y.shape}")
        if gram.shape[0] == 0:
            raise ShapeError("EmpiricalFlow: got an empty training set (n = 0); pass at least one sample")
        if nugget < 0:
            raise ConfigError(f"EmpiricalFlow(nugget={nugget}): the nugget must be >= 0")
        self.n = gram.shape[0]
        self.gram = gram
        self.y = y
        self.nugget = float(nugget)
        if _eig is None:
            base, vecs = np.linalg.eigh(gram)
            _eig = (base, vecs)
        self._base_mu, self.vecs = _eig
        self.mu = self._base_mu + self.nugget
        self.vy = self.vecs.T @ y
        self.lr = lr
        if lr is not None and not (lr > 0 and lr * self.mu.max() / self.n < 1):
            raise ConfigError(f"EmpiricalFlow(lr={lr}): need 0 < lr·μ_max/n < 1, got lr·μ_max/n = "
                              f"{lr * self.mu.max() / self.n:.3g}; lower lr or use the flow (lr=None)")

    def with_nugget(self, nugget: float) -> "EmpiricalFlow":
        """The same data under the kernel H + nugget·1{x = x'} (no new eigendecomposition)."""
        return EmpiricalFlow(self.gram, self.y, nugget=nugget, lr=self.lr, _eig=(self._base_mu, self.vecs))

    def _decay(self, t: np.ndarray) -> np.ndarray:
        return np.exp(-np.outer(t, _rate(self.mu, self.n, self.lr)))

    def train_predictions(self, times) -> np.ndarray:
        """F_t = (I − e^{−t𝐇/n}) y at each time: ``(T, n)``."""
        t = _times(times)
        g = -np.expm1(-np.outer(t, _rate(self.mu, self.n, self.lr)))
        return (g * self.vy) @ self.vecs.T

    def train_mse(self, times) -> np.ndarray:
        """(1/n) ‖y − F_t‖² = (1/n) Σ_i e^{−2tμ_i/n} (v_iᵀ y)²: ``(T,)``."""
        decay = self._decay(_times(times)) ** 2
        return decay @ (self.vy ** 2) / self.n

    def coefficients(self, times) -> np.ndarray:
        """α_t with f̂_t(x) = H(x, X) α_t: ``(T, n)``."""
        return (_phi(_times(times), self.mu, self.n, self.lr) * self.vy) @ self.vecs.T

    def predict(self, cross: np.ndarray, times) -> np.ndarray:
        """f̂_t on new points from ``cross`` = H(x_new, X) of shape (m, n): ``(T, m)``.

        With a nugget, ``cross`` stays H_A(x_new, X): new points never coincide with training ones.
        """
        cross = np.asarray(cross, dtype=np.float64)
        if cross.ndim != 2 or cross.shape[1] != self.n:
            raise ShapeError(f"EmpiricalFlow.predict: cross must be (m, {self.n}), got {cross.shape}")
        cv = cross @ self.vecs
        return (_phi(_times(times), self.mu, self.n, self.lr) * self.vy) @ cv.T

    def test_mse(self, cross: np.ndarray, target: np.ndarray, times) -> np.ndarray:
        """mean_x (target(x) − f̂_t(x))² over the m new points: ``(T,)``."""
        target = np.asarray(target, dtype=np.float64)
        pred = self.predict(cross, times)
        if target.shape != (pred.shape[1],):
            raise ShapeError(f"EmpiricalFlow.test_mse: target must be ({pred.shape[1]},), got {target.shape}")
        return np.mean((pred - target) ** 2, axis=1)


def gd_reference(gram: np.ndarray, cross: np.ndarray, y: np.ndarray, lr: float, steps: int,
                 record: list[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Discrete gradient descent in function space, the slow reference for :class:`EmpiricalFlow`.

    f ← f + (lr/n) H(·, X)(y − f(X)) from f = 0; returns the train predictions ``(R, n)`` and
    the predictions on the cross points ``(R, m)`` after each step count in ``record``.
    Follows the flow at time t = lr·steps up to O(lr) when lr·μ_max/n ≪ 1. Cost O(steps · n (n + m)).
    """
    n = gram.shape[0]
    f_train = np.zeros(n)
    f_cross = np.zeros(cross.shape[0])
    wanted = set(int(s) for s in record)
    out_train, out_cross = {}, {}
    for s in range(steps + 1):
        if s in wanted:
            out_train[s], out_cross[s] = f_train.copy(), f_cross.copy()
        if s == steps:
            break
        r = (lr / n) * (y - f_train)
        f_train = f_train + gram @ r
        f_cross = f_cross + cross @ r
    order = [int(s) for s in record]
    return np.stack([out_train[s] for s in order]), np.stack([out_cross[s] for s in order])
