"""The committee machine with a polynomial activation (Kumar, Bordelon, Gershman, Pehlevan §5).

    f(W, x) = (α/N) Σ_{i=1}^N φ(w_i·x),   φ(h) = h + (ε/2) h²,   readout fixed to 1.

Only the first-layer weights ``W`` (N, D) train. With ``centred=True`` the module returns
the centred predictor f(W, x) − f(W₀, x) (Chizat et al.'s trick used by Kumar et al. for
large α), where W₀ is a frozen buffer copy of the initial weights: at initialisation the
output is exactly zero, and the tangent kernel is unchanged (W₀ carries no gradient).
The same model is the polynomial grokking model of the telescoping paper (their
f(x) = (1/n_h) Σ φ(θ_jᵀx) is α = 1).

Sufficient statistics: w̄ = (1/N) Σ w_i, M = (1/N) Σ w_i w_iᵀ, so that
f(x) = α w̄·x + (αε/2) xᵀ M x. For Gaussian inputs x ~ N(0, I/D) and the target
y = ½ (β·x)², the population squared loss splits exactly into three terms
(Kumar et al. eq. 6; see :meth:`CommitteeMachine.loss_decomposition`).

# NOTE [closed-form tangent kernel of the committee machine]
# ∂f/∂w_i = (α/N) φ'(w_i·x) x with φ'(h) = 1 + εh, so
#     K(x, x') = Σ_i ∂f/∂w_i(x) · ∂f/∂w_i(x') = (α²/N²) [(1 + εH)(1 + εH')ᵀ] ∘ (x·x'),
# H = X Wᵀ (n, N). Cost O(n₁ n₂ (N + D)) time and O(n₁ n₂) memory, against
# O(n (N·D)) memory for a Jacobian: for N·D = 5·10⁴ parameters that is the difference
# between a 1000×1000 matrix and a 1000×50000 one. The tests check it against torch.func.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from telescope.errors import ConfigError, ShapeError


class CommitteeMachine(nn.Module):
    """f(W, x) = (α/N) Σ_i φ(w_i·x), φ(h) = h + (ε/2)h², readout fixed to 1.

    Parameters
    ----------
    d_in, width : D and N.
    epsilon : ε, the weight of the quadratic part of φ (the initial kernel–task alignment).
    alpha : α, the output scale (laziness: α → ∞ is the linearized model).
    centred : return f(W, x) − f(W₀, x) (zero at initialisation).
    init_scale : σ; the initial weights are σ · N(0, 1) entries.
    generator, dtype : for the initial weights (float64 by default: this model is used for
        exactness checks and long full-batch runs).

    Shapes: ``forward`` maps (n, D) → (n,).
    """

    def __init__(self, d_in: int, width: int, *, epsilon: float, alpha: float = 1.0,
                 centred: bool = True, init_scale: float = 1.0,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64):
        super().__init__()
        if d_in < 1 or width < 1:
            raise ConfigError(f"CommitteeMachine(d_in={d_in}, width={width}): both must be at least 1")
        if not alpha > 0:
            raise ConfigError(f"CommitteeMachine(alpha={alpha}): the output scale must be positive")
        self.d_in, self.width = int(d_in), int(width)
        self.epsilon, self.alpha, self.centred = float(epsilon), float(alpha), bool(centred)
        w = torch.randn(width, d_in, generator=generator, dtype=dtype) * float(init_scale)
        self.weight = nn.Parameter(w)
        self.register_buffer("weight0", w.clone())

    # ------------------------------------------------------------------ forward
    def _check(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ShapeError(f"CommitteeMachine: {name} has shape {tuple(x.shape)}; expected (n, {self.d_in})")
        return x

    def phi(self, h: torch.Tensor) -> torch.Tensor:
        return h + 0.5 * self.epsilon * h * h

    def raw(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The uncentred f(W, x), (n,), with W = ``weight`` or the current weights."""
        w = self.weight if weight is None else weight
        return self.alpha * self.phi(x @ w.T).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        out = self.raw(x)
        if self.centred:
            out = out - self.raw(x, self.weight0)
        return out

    # ------------------------------------------------------------------ kernel and gradient
    def tangent_kernel(self, x1: torch.Tensor, x2: torch.Tensor | None = None, *,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
        """Empirical tangent kernel w.r.t. ``weight``, (n1, n2)
        (NOTE [closed-form tangent kernel of the committee machine]).

        ``weight`` defaults to the current weights; pass ``model.weight0`` for K₀.
        """
        self._check(x1, "x1")
        w = (self.weight if weight is None else weight).detach()
        g1 = 1.0 + self.epsilon * (x1 @ w.T)
        if x2 is None:
            x2, g2 = x1, g1
        else:
            self._check(x2, "x2")
            g2 = 1.0 + self.epsilon * (x2 @ w.T)
        scale = (self.alpha / self.width) ** 2
        return scale * (g1 @ g2.T) * (x1 @ x2.T)

    def directional_derivative(self, x: torch.Tensor, direction: torch.Tensor, *,
                               weight: torch.Tensor | None = None) -> torch.Tensor:
        """∇_W f(W, x) · ΔW for ΔW = ``direction`` (N, D), at W = ``weight`` (default: current); (n,).

        = (α/N) Σ_i φ'(w_i·x) (Δw_i·x). Cost: two (n, D, N) matrix products.
        """
        w = (self.weight if weight is None else weight).detach()
        return (self.alpha / self.width) * ((1.0 + self.epsilon * (x @ w.T)) * (x @ direction.T)).sum(dim=1)

    def mse_gradient(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """∂/∂W of mean_μ r_μ² where r = f(x) − y is ``residual`` (n,); returns (N, D).

        ∂L/∂w_i = (2/n)(α/N) Σ_μ r_μ φ'(w_i·x_μ) x_μ. Cost: two (n, N, D) matrix products.
        """
        h = x @ self.weight.detach().T
        coef = (2.0 / x.shape[0]) * (self.alpha / self.width)
        return coef * ((residual[:, None] * (1.0 + self.epsilon * h)).T @ x)

    # ------------------------------------------------------------------ statistics
    def sufficient_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(w̄ (D,), M (D, D)) of the predictor: relative to W₀ when centred.

        Centred: f̃(x) = α (w̄ − w̄₀)·x + (αε/2) xᵀ(M − M₀)x, so the pair returned is
        (w̄ − w̄₀, M − M₀); uncentred: (w̄, M).
        """
        w = self.weight.detach()
        wbar, m = w.mean(dim=0), w.T @ w / self.width
        if self.centred:
            w0 = self.weight0
            wbar, m = wbar - w0.mean(dim=0), m - w0.T @ w0 / self.width
        return wbar, m

    def loss_decomposition(self, beta: torch.Tensor) -> dict[str, float]:
        """Exact population MSE for x ~ N(0, I/D), y = ½(β·x)² (Kumar et al. eq. 6).

        With A = αεM − ββᵀ and (w̄, M) from :meth:`sufficient_statistics`:
          variance      = ¼ (Tr A / D)²           = ¼((1/D)|β|² − (αε/D) Tr M)²
          misalignment  = ‖A‖_F² / (2D²)
          linear        = (α²/D) |w̄|²             (power in linear modes)
        and E[(f̃(x) − y)²] = variance + misalignment + linear (Isserlis' theorem).
        """
        beta = beta.to(self.weight.dtype)
        if beta.shape != (self.d_in,):
            raise ShapeError(f"CommitteeMachine.loss_decomposition: beta has shape {tuple(beta.shape)}; "
                             f"expected ({self.d_in},)")
        wbar, m = self.sufficient_statistics()
        d = self.d_in
        a = self.alpha * self.epsilon * m - torch.outer(beta, beta)
        out = {
            "variance": float(0.25 * (torch.trace(a) / d) ** 2),
            "misalignment": float((a * a).sum() / (2 * d * d)),
            "linear": float(self.alpha ** 2 / d * (wbar @ wbar)),
        }
        out["total"] = out["variance"] + out["misalignment"] + out["linear"]
        return out

    def feature_alignment(self, beta: torch.Tensor) -> float:
        """D · β̂ᵀ M β̂ / Tr M with the raw (uncentred) M: 1 at isotropic init, D when M ∝ ββᵀ."""
        w = self.weight.detach()
        m = w.T @ w / self.width
        b = beta.to(m.dtype) / beta.norm()
        return float(self.d_in * (b @ m @ b) / torch.trace(m))

    def relative_change(self) -> float:
        """‖W − W₀‖_F / ‖W₀‖_F."""
        return float((self.weight.detach() - self.weight0).norm() / self.weight0.norm())


def gaussian_quadratic_task(d: int, n_train: int, n_test: int, *, generator: torch.Generator,
                            dtype: torch.dtype = torch.float64):
    """x ~ N(0, I/D), β ~ N(0, I), y = ½ (β·x)² (Kumar et al. Fig. 1; telescoping Fig. 4).

    Returns (x_train (n, D), y_train (n,), x_test (m, D), y_test (m,), beta (D,)).
    """
    x = torch.randn(n_train, d, generator=generator, dtype=dtype) / d ** 0.5
    xt = torch.randn(n_test, d, generator=generator, dtype=dtype) / d ** 0.5
    beta = torch.randn(d, generator=generator, dtype=dtype)
    return x, 0.5 * (x @ beta) ** 2, xt, 0.5 * (xt @ beta) ** 2, beta
