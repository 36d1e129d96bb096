"""Where data lives, and the container the studies pass around."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit``, else ``$TELESCOPE_DATA``, else ``~/.cache/telescope``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("TELESCOPE_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "telescope"


@dataclass(frozen=True)
class Split:
    """Training and test tensors of one task: x (n, ...) float, y (n,) or (n, k)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device=None, dtype=None) -> "Split":
        def move(t):
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return Split(move(self.x_train), move(self.y_train), move(self.x_test), move(self.y_test))
