"""What a sweep is: an experiment, a preset, fixed overrides, a grid and seeds.

``SweepSpec.tasks()`` expands the grid's product × seeds into :class:`Task` objects, each
one run directory named by the hash of its resolved config. Every task's config is
resolved in the driver first, so a bad key or value fails before anything runs.

# NOTE [grid syntax]
# ``--grid key=v1,v2,v3`` gives three values. A field that is itself a tuple (e.g.
# ``settings`` or ``sgd_lrs``) takes comma-separated items, so for such values separate
# the grid's values with ';' instead: ``--grid "settings=sgd,adamw;sgd"`` is two values,
# ``sgd,adamw`` and ``sgd``. A spec containing ';' is always split on ';'.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from telescope.errors import ConfigError


def parse_grid(specs: Iterable[str]) -> dict[str, list[str]]:
    """``["width=16,32", "lr=0.1"]`` -> ``{"width": ["16", "32"], "lr": ["0.1"]}`` (NOTE [grid syntax])."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--grid {spec!r}: expected key=v1,v2,... (e.g. --grid width=16,32)")
        key, text = (s.strip() for s in spec.split("=", 1))
        sep = ";" if ";" in text else ","
        values = [v.strip() for v in text.split(sep) if v.strip()]
        if not key or not values:
            raise ConfigError(f"--grid {spec!r}: needs a key and at least one value")
        if key in grid:
            raise ConfigError(f"--grid {key}=...: given twice; put all values in one --grid")
        if key == "seed":
            raise ConfigError("--grid seed=...: seeds are set with --seeds N (and --seed-start)")
        if len(set(values)) != len(values):
            raise ConfigError(f"--grid {spec!r}: repeated values")
        grid[key] = values
    return grid


@dataclass(frozen=True)
class Task:
    """One run of a sweep: a grid point and a seed; ``name`` is its run directory's name."""

    name: str
    point: dict[str, str]
    seed: int
    sets: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "point": dict(self.point), "seed": self.seed}


@dataclass(frozen=True)
class SweepSpec:
    experiment: str
    preset: str = "tiny"
    grid: Mapping[str, list[str]] = field(default_factory=dict)
    seeds: int = 1
    seed_start: int = 0
    sets: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.seeds) < 1:
            raise ConfigError(f"telescope sweep --seeds {self.seeds}: need at least 1 seed")
        clash = sorted(set(self.grid) & set(self.sets))
        if clash:
            raise ConfigError(f"telescope sweep: {', '.join(clash)} given both in --grid and --set; keep one")
        if "seed" in self.sets:
            raise ConfigError("telescope sweep --set seed=...: seeds are set with --seeds N (and --seed-start)")

    @property
    def seed_list(self) -> list[int]:
        return list(range(int(self.seed_start), int(self.seed_start) + int(self.seeds)))

    def manifest(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "preset": self.preset,
                "grid": {k: list(v) for k, v in self.grid.items()}, "seeds": self.seed_list,
                "sets": dict(self.sets)}

    @property
    def digest(self) -> str:
        blob = json.dumps(self.manifest(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def default_dir(self, out: str | Path) -> Path:
        return Path(out) / f"sweep-{self.experiment}-{self.digest}"

    def points(self) -> list[dict[str, str]]:
        keys = list(self.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]

    def tasks(self) -> list[Task]:
        """Every (grid point, seed), configs resolved and validated; run names are config hashes."""
        from telescope.experiments.base import config_to_dict
        from telescope.store import config_hash
        from telescope.sweeps.runner import resolve

        tasks, seen = [], {}
        for point in self.points():
            for seed in self.seed_list:
                sets = {**self.sets, **point}
                _, config = resolve(self.experiment, self.preset, seed, sets)
                name = f"{self.experiment}-{config_hash(self.experiment, config_to_dict(config))}"
                if name in seen:
                    raise ConfigError(
                        f"telescope sweep: grid points {seen[name]} and {point} (seed {seed}) resolve to the "
                        "same config; remove the duplicate value")
                seen[name] = point
                tasks.append(Task(name, dict(point), seed, sets))
        return tasks
