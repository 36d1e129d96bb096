"""A one-layer transformer on modular arithmetic (Nanda, Chan, Lieberum, Smith & Steinhardt 2023).

Input: the token sequence ``[a, b, =]`` (n, 3) with a, b ∈ {0..p−1} and ``=`` the token p;
output: logits (n, p) read at the last position. Token and position embeddings, one block of
multi-head self-attention (separate nn.Linear Q, K, V, O projections, no biases, as in the
paper), a ReLU MLP (biases), optional pre-LayerNorms (the paper has none) and a linear unembedding.
Every trained parameter lives in an nn.Linear, nn.Embedding or nn.LayerNorm, so the lens's
closed-form Jacobian products cover all of it (NOTE [structured products], lens/products.py);
the attention scores and softmax are differentiated through them, as ordinary ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from telescope.errors import ConfigError, ShapeError


class ModularTransformer(nn.Module):
    """(n, 3) int64 tokens → (n, p) logits at the ``=`` position.

    Parameters: ``p`` (answers 0..p−1, vocabulary p+1), ``d_model``, ``heads`` (dividing d_model),
    ``d_mlp`` (default 4·d_model), ``layer_norm`` (pre-LayerNorm before attention, MLP and
    unembedding), ``generator``/``dtype`` for the initial weights (N(0, 1/d_model) embeddings,
    PyTorch's default for the linear layers). ``alpha`` and ``centred``: Kumar et al.'s laziness knob
    (their Fig. 6b on Nanda's transformer), logits α·(g(θ, x) − g(θ₀, x)) with ``centred`` and α·g(θ, x)
    without; the initial logits of all p² pairs are kept in a (p², p) buffer, so the centred model is
    zero at initialisation and has the same trainable parameters (and Jacobian, times α).
    """

    def __init__(self, p: int, d_model: int = 128, heads: int = 4, d_mlp: int | None = None, *,
                 layer_norm: bool = False, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, alpha: float = 1.0, centred: bool = False):
        super().__init__()
        if p < 2 or d_model < 1 or heads < 1 or d_model % heads:
            raise ConfigError(f"ModularTransformer(p={p}, d_model={d_model}, heads={heads}): need p ≥ 2 and "
                              "heads dividing d_model")
        d_mlp = 4 * d_model if d_mlp is None else int(d_mlp)
        self.p, self.d_model, self.heads, self.seq = int(p), int(d_model), int(heads), 3
        self.embed = nn.Embedding(p + 1, d_model, dtype=dtype)
        self.pos = nn.Embedding(self.seq, d_model, dtype=dtype)
        self.q = nn.Linear(d_model, d_model, bias=False, dtype=dtype)
        self.k = nn.Linear(d_model, d_model, bias=False, dtype=dtype)
        self.v = nn.Linear(d_model, d_model, bias=False, dtype=dtype)
        self.o = nn.Linear(d_model, d_model, bias=False, dtype=dtype)
        self.mlp_in = nn.Linear(d_model, d_mlp, dtype=dtype)
        self.mlp_out = nn.Linear(d_mlp, d_model, dtype=dtype)
        self.unembed = nn.Linear(d_model, p, bias=False, dtype=dtype)
        norms = 3 if layer_norm else 0
        self.norms = nn.ModuleList([nn.LayerNorm(d_model, dtype=dtype) for _ in range(norms)])
        self.register_buffer("positions", torch.arange(self.seq), persistent=False)
        self.register_buffer("causal", torch.ones(self.seq, self.seq, dtype=torch.bool).tril(), persistent=False)
        with torch.no_grad():
            for m in (self.embed, self.pos):
                m.weight.normal_(0.0, 1.0 / math.sqrt(d_model), generator=generator)
            for m in (self.q, self.k, self.v, self.o, self.mlp_in, self.mlp_out, self.unembed):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)
        if not alpha > 0:
            raise ConfigError(f"ModularTransformer(alpha={alpha}): the output scale must be positive")
        self.alpha, self.centred = float(alpha), bool(centred)
        self.register_buffer("logits0", None, persistent=False)
        if self.centred:
            with torch.no_grad():
                self.logits0 = self._logits(all_pairs(p)[0])      # (p², p), row a·p + b

    def _norm(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.norms[i](h) if len(self.norms) else h

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self._logits(tokens)
        if self.centred:
            out = out - self.logits0[tokens[:, 0] * self.p + tokens[:, 1]]
        return out if self.alpha == 1.0 else self.alpha * out

    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != self.seq or tokens.is_floating_point():
            raise ShapeError(f"ModularTransformer: tokens have shape {tuple(tokens.shape)} and dtype {tokens.dtype}; "
                             f"expected integer tokens (n, {self.seq}) = [a, b, {self.p}]")
        n, T, d, H = tokens.shape[0], self.seq, self.d_model, self.heads
        h = self.embed(tokens) + self.pos(self.positions.expand(n, T))            # (n, T, d)
        a = self._norm(0, h)
        q, k, v = (m(a).view(n, T, H, d // H).transpose(1, 2) for m in (self.q, self.k, self.v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // H)                     # (n, H, T, T)
        scores = scores.masked_fill(~self.causal, float("-inf"))
        z = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(n, T, d)
        h = h + self.o(z)
        h = h + self.mlp_out(F.relu(self.mlp_in(self._norm(1, h))))
        return self.unembed(self._norm(2, h)[:, -1])                              # (n, p)


def all_pairs(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair as token rows [a, b, p], row a·p + b, (p², 3) int64, with answers (a + b) mod p (p²,)."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], dim=1), (a + b) % p


def modular_tokens(p: int, train_fraction: float, *, generator: torch.Generator):
    """All p² pairs as token rows [a, b, p] with answers (a + b) mod p, randomly split.

    Returns (x_train (n, 3) int64, c_train (n,) int64, x_test, c_test), n = ⌊train_fraction·p²⌋.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"modular_tokens(train_fraction={train_fraction}): choose a value in (0, 1)")
    x, c = all_pairs(p)
    order = torch.randperm(p * p, generator=generator)
    n = int(train_fraction * p * p)
    return x[order[:n]], c[order[:n]], x[order[n:]], c[order[n:]]
