"""What an experiment is: a frozen config dataclass with presets, and a run function.

An experiment module defines

* ``Config``: a frozen dataclass whose fields are the study's knobs, every field with a
  default (the ``quick`` values), a ``seed`` field, and a ``PRESETS`` class attribute
  ``{"tiny": {...}, "quick": {...}, "paper": {...}}`` of overrides;
* ``run(config, sink, ctx) -> dict``: trains, logs long-format metrics through
  ``sink`` (see :mod:`telescope.store`) and returns the summary (JSON scalars);
* optionally ``figures(metrics, config, out_dir) -> list[(filename, caption)]`` in
  :mod:`telescope.plots`, reading stored metrics only.

:func:`resolve_config` turns a preset, a seed and ``key=value`` strings into a config,
with readable errors for unknown keys and values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from telescope.errors import ConfigError

PRESETS = ("tiny", "quick", "paper")


@dataclass(frozen=True)
class RunContext:
    """What a run needs besides its config; not part of the run's identity."""

    device: str = "cpu"
    data_dir: Path | None = None


def config_to_dict(config: Any) -> dict[str, Any]:
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _coerce(name: str, text: str, annotation: Any, experiment: str) -> Any:
    """Parse ``text`` as a value of the field's type (int, float, bool, str or tuples)."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        (inner, *rest) = typing.get_args(annotation) or (str,)
        items = [t for t in text.split(",") if t.strip()]
        return tuple(_coerce(name, t.strip(), inner, experiment) for t in items)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        return _coerce(name, text, args[0], experiment)
    try:
        if annotation is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if annotation is int:
            return int(float(text)) if float(text).is_integer() else int(text)
        if annotation is float:
            return float(text)
    except ValueError:
        raise ConfigError(
            f"--set {name}={text}: {experiment} expects {getattr(annotation, '__name__', annotation)} "
            f"for '{name}'") from None
    return text


def resolve_config(experiment: str, config_cls: type, preset: str = "quick", *,
                   seed: int | None = None, overrides: Mapping[str, str] | None = None) -> Any:
    """The config for ``preset`` with ``seed`` and ``key=value`` overrides applied."""
    presets: Mapping[str, Mapping[str, Any]] = getattr(config_cls, "PRESETS", {})
    if preset not in presets:
        raise ConfigError(
            f"unknown preset '{preset}' for {experiment}; choose one of: {', '.join(presets) or 'none'}")
    values = dict(presets[preset])
    hints = typing.get_type_hints(config_cls)
    valid = [f.name for f in fields(config_cls)]
    for key, text in (overrides or {}).items():
        if key not in valid:
            raise ConfigError(
                f"unknown key '{key}' for {experiment}; valid keys: {', '.join(sorted(valid))}")
        values[key] = _coerce(key, str(text), hints[key], experiment) if isinstance(text, str) else text
    if seed is not None:
        values["seed"] = int(seed)
    try:
        config = config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{experiment}: {exc}") from None
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def replace(config: Any, **changes: Any) -> Any:
    return dataclasses.replace(config, **changes)
