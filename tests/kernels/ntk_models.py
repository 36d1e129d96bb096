"""Small float64 models covering every branch of the kernel implementations."""

from __future__ import annotations

import torch
from torch import nn


class TwoHeads(nn.Module):
    """A custom forward: shared trunk, two heads concatenated (k = 2 + 3)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(4, 6)
        self.head_a = nn.Linear(6, 2)
        self.head_b = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        h = torch.tanh(self.trunk(x))
        return torch.cat([self.head_a(h), self.head_b(h) ** 2], dim=1)


class Reused(nn.Module):
    """One Linear applied twice (weight sharing by reuse) plus a tied pair of Linears."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 5)
        self.mid = nn.Linear(5, 5)
        self.out = nn.Linear(5, 5)
        self.out.weight = self.mid.weight  # tied parameter, two modules

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = torch.tanh(self.mid(h))
        h = torch.tanh(self.mid(h))  # called twice
        return self.out(h)[:, :2]


class Tokens(nn.Module):
    """Embedding on token sequences (T = 3) with a padding index, then a Linear."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 3, padding_idx=0)
        self.fc = nn.Linear(9, 2)

    def forward(self, idx):
        return self.fc(torch.relu(self.emb(idx)).flatten(1))


class SequenceLinear(nn.Module):
    """A Linear applied at T = 4 positions of each example, LayerNorm (fallback), mean pool."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 5)
        self.norm = nn.LayerNorm(5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.norm(torch.tanh(self.proj(x))).mean(dim=1))


def build(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, x1, x2) in float64, deterministic."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    dense = lambda n: torch.randn(n, 4, generator=g, dtype=torch.float64)  # noqa: E731
    if name == "mlp_tanh_bias":
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
        x1, x2 = dense(5), dense(3)
    elif name == "mlp_relu_nobias":
        model = nn.Sequential(
            nn.Linear(4, 6, bias=False), nn.ReLU(inplace=True), nn.Linear(6, 6, bias=False),
            nn.ReLU(), nn.Linear(6, 3, bias=False),
        )
        x1, x2 = dense(5), dense(3)
    elif name == "one_output":
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1), nn.Flatten(0))
        x1, x2 = dense(4), dense(3)
    elif name == "two_heads":
        model = TwoHeads()
        x1, x2 = dense(4), dense(3)
    elif name == "cnn":
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2, bias=False),
            nn.Tanh(), nn.Flatten(), nn.Linear(3 * 3 * 3, 4),
        )
        x1 = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
        x2 = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    elif name == "reused":
        model = Reused()
        x1, x2 = dense(4), dense(3)
    elif name == "tokens":
        model = Tokens()
        x1 = torch.randint(0, 7, (5, 3), generator=g)
        x2 = torch.randint(0, 7, (3, 3), generator=g)
        x1[0, 0] = 0  # hits the padding row
    elif name == "sequence":
        model = SequenceLinear()
        x1 = torch.randn(3, 4, 3, generator=g, dtype=torch.float64)
        x2 = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    elif name == "batchnorm_eval":
        model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2))
        model.eval()
        x1, x2 = dense(4), dense(3)
    else:  # pragma: no cover
        raise KeyError(name)
    return model.double(), x1, x2


MODELS = [
    "mlp_tanh_bias", "mlp_relu_nobias", "one_output", "two_heads", "cnn", "reused", "tokens",
    "sequence", "batchnorm_eval",
]
