"""The sphere of radius √d, its spherical harmonics, and targets built from them.

Inputs live on S^{d−1}(√d) = {x ∈ R^d : ‖x‖ = √d} with the uniform probability measure
ν, so that E x_j² = 1. An inner-product kernel H(x, x') = h(⟨x, x'⟩/d) is diagonal in the
spherical harmonics (Mercer/Funk–Hecke):

    H(x, x') = Σ_k λ_{d,k} Σ_{j ≤ B(d,k)} Y_kj(x) Y_kj(x'),

with B(d, k) harmonics of degree k, orthonormal in L²(ν), and

    λ_{d,k} = E_t[h(t) P_{k,d}(t)],   P_{k,d}(t) = C_k^{(d−2)/2}(t) / C_k^{(d−2)/2}(1),

where t = ⟨x, x'⟩/d for x' fixed and x ~ ν has density ∝ (1 − t²)^{(d−3)/2} on [−1, 1].
As d → ∞, λ_{d,k} B(d,k) → h^{(k)}(0)/k!, i.e. λ_{d,k} ≈ h^{(k)}(0) d^{−k}.

Targets are sums of products of distinct coordinates, c · x_{i1}···x_{ik}: each such
monomial is harmonic and homogeneous of degree k, hence a degree-k spherical harmonic,
and two different square-free monomials are orthogonal under ν (flip the sign of a
coordinate that appears in one only). So the harmonic energies ‖P_k f‖² are exact:
Σ_{|S| = k} c_S² · Π_{j<k} d/(d + 2j).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import eval_gegenbauer, roots_jacobi

from telescope.errors import ConfigError, ShapeError


def sample_sphere(m: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` points drawn uniformly from the sphere of radius √d in R^d: shape ``(m, d)``, float64."""
    if d < 1 or m < 0:
        raise ConfigError(f"sample_sphere(m={m}, d={d}): need m >= 0 and d >= 1")
    z = rng.standard_normal((m, d))
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(norms > 0, norms, 1.0) * math.sqrt(d)


def harmonic_dim(d: int, k: int) -> int:
    """B(d, k): the dimension of the degree-k spherical harmonics on S^{d−1}.

    B(d, 0) = 1, B(d, 1) = d, B(d, k) = C(d+k−1, k) − C(d+k−3, k−2); e.g. B(30, 2) = 464.
    """
    if d < 2 or k < 0:
        raise ConfigError(f"harmonic_dim(d={d}, k={k}): need d >= 2 and k >= 0")
    if k == 0:
        return 1
    if k == 1:
        return d
    return math.comb(d + k - 1, k) - math.comb(d + k - 3, k - 2)


def funk_hecke_eigenvalues(h: Callable[[np.ndarray], np.ndarray], d: int, kmax: int, *,
                           nodes: int = 200) -> np.ndarray:
    """λ_{d,k} for k = 0..kmax of the kernel h(⟨x,x'⟩/d) on S^{d−1}(√d): shape ``(kmax+1,)``.

    Eigenvalues are with respect to the uniform *probability* measure, so that
    Σ_k λ_{d,k} B(d,k) = h(1). Computed by Gauss–Jacobi quadrature with the weight
    (1 − t²)^{(d−3)/2} built in (``nodes`` points; exact for polynomial h of degree
    < 2·nodes − kmax, spectrally accurate for analytic h; the ReLU kernels are
    non-analytic only at t = ±1, where the weight vanishes to order (d−3)/2).
    Cost: O(nodes · kmax), independent of d. Requires d >= 3.
    """
    if d < 3:
        raise ConfigError(f"funk_hecke_eigenvalues(d={d}): the Gegenbauer index (d−2)/2 must be "
                          "positive; use d >= 3")
    if kmax < 0:
        raise ConfigError(f"funk_hecke_eigenvalues(kmax={kmax}): need kmax >= 0")
    a = (d - 3) / 2.0
    t, w = roots_jacobi(nodes, a, a)
    w = w / w.sum()
    ht = np.asarray(h(t), dtype=np.float64)
    g = (d - 2) / 2.0
    out = np.empty(kmax + 1)
    for k in range(kmax + 1):
        p = eval_gegenbauer(k, g, t) / eval_gegenbauer(k, g, 1.0)
        out[k] = float(np.sum(w * ht * p))
    return out


def harmonic_energy_factor(d: int, k: int) -> float:
    """E_ν[(x_{i1}···x_{ik})²] = Π_{j<k} d/(d + 2j) for k distinct coordinates."""
    return float(np.prod([d / (d + 2.0 * j) for j in range(k)])) if k > 0 else 1.0


_TERM = re.compile(r"^\s*(?:([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*\*?\s*)?((?:x\d+\s*\*?\s*)+)$")


@dataclass(frozen=True)
class ProductTarget:
    """f(x) = Σ_m c_m Π_{i ∈ S_m} x_i with each S_m a set of distinct coordinates (1-based in text).

    Build it from text with :meth:`parse`, e.g. ``"x1 + x2*x3"`` or ``"x1 + 0.5*x2*x3*x4"``.
    ``terms`` holds ``(coefficient, (i1, ..., ik))`` with 0-based indices.
    """

    terms: tuple[tuple[float, tuple[int, ...]], ...]

    @classmethod
    def parse(cls, text: str) -> "ProductTarget":
        terms = []
        seen = set()
        for raw in text.split("+"):
            m = _TERM.match(raw)
            if not raw.strip() or m is None:
                raise ConfigError(
                    f"ProductTarget.parse({text!r}): cannot read term {raw.strip()!r}; write terms like "
                    "'x1', 'x2*x3' or '0.5*x4*x5' joined by '+'")
            coef = float(m.group(1)) if m.group(1) else 1.0
            idx = tuple(int(s) - 1 for s in re.findall(r"x(\d+)", m.group(2)))
            if len(set(idx)) != len(idx) or min(idx) < 0:
                raise ConfigError(
                    f"ProductTarget.parse({text!r}): term {raw.strip()!r} repeats a coordinate or uses x0; "
                    "each term must multiply distinct coordinates x1, x2, ...")
            key = tuple(sorted(idx))
            if key in seen:
                raise ConfigError(f"ProductTarget.parse({text!r}): term {raw.strip()!r} appears twice; "
                                  "merge its coefficients")
            seen.add(key)
            terms.append((coef, key))
        return cls(tuple(terms))

    @property
    def max_degree(self) -> int:
        return max(len(s) for _, s in self.terms)

    @property
    def min_dim(self) -> int:
        """The smallest d the target fits in (its largest coordinate index + 1)."""
        return max(max(s) for _, s in self.terms) + 1

    def check_dim(self, d: int) -> None:
        if d < self.min_dim:
            raise ConfigError(f"ProductTarget: the target uses x{self.min_dim} but d = {d}; "
                              f"raise d to at least {self.min_dim}")

    def degree_part(self, x: np.ndarray, k: int) -> np.ndarray:
        """P_k f at the rows of ``x`` (shape ``(m, d)`` → ``(m,)``)."""
        if x.ndim != 2:
            raise ShapeError(f"ProductTarget.degree_part: x must be (m, d), got shape {x.shape}")
        self.check_dim(x.shape[1])
        out = np.zeros(x.shape[0])
        for c, s in self.terms:
            if len(s) == k:
                out += c * np.prod(x[:, list(s)], axis=1)
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """f at the rows of ``x``: ``(m, d)`` → ``(m,)``."""
        return sum((self.degree_part(x, k) for k in self.degrees()), np.zeros(x.shape[0]))

    def degrees(self) -> list[int]:
        return sorted({len(s) for _, s in self.terms})

    def energies(self, d: int, kmax: int | None = None) -> np.ndarray:
        """‖P_k f‖²_{L²(ν)} for k = 0..kmax (default: the top degree): shape ``(kmax+1,)``, exact."""
        self.check_dim(d)
        kmax = self.max_degree if kmax is None else kmax
        out = np.zeros(kmax + 1)
        for c, s in self.terms:
            if len(s) <= kmax:
                out[len(s)] += c * c * harmonic_energy_factor(d, len(s))
        return out
