"""What an experiment is: a frozen config dataclass with presets, and a run function.

An experiment module defines

* ``Config``: a frozen dataclass whose fields are the study's knobs, every field with a
  default (the ``quick`` values), a ``seed`` field, and a ``PRESETS`` class attribute
  ``{"tiny": {...}, "quick": {...}, "paper": {...}}`` of overrides. A field's type is its
  annotation; its bounds, when it has any, are declared with :func:`bounded` in the same
  line (NOTE [typed configs]); ``validate()`` checks only what spans several fields;
* ``run(config, sink, ctx) -> dict``: trains, logs long-format metrics through
  ``sink`` (see :mod:`telescope.store`) and returns the summary (JSON scalars);
* optionally ``figures(metrics, config, summary, out_dir) -> list[Figure]`` in
  :mod:`telescope.plots`, reading stored metrics only.

:func:`resolve_config` turns a preset, a seed and ``key=value`` strings into a config,
with readable errors for unknown keys, values of the wrong type and values out of range.

# NOTE [typed configs]
# A config field is declared once: ``width: int = bounded(200, ge=1)``. The annotation is
# the type (int, float, bool, str, tuple[T, ...], or T | None) and :func:`bounded` adds
# bounds (ge, gt, le, lt; for a tuple, on every item), a set of ``choices`` and
# ``nonempty`` for tuples. The declaration serves three readers: ``--set`` parsing
# (:func:`resolve_config`), validation (:func:`check_fields`, run by resolve_config before
# the study's own ``validate()``) and ``telescope run STUDY --help`` (:func:`describe`).
# ``bounded`` only attaches metadata to a dataclass field: the defaults, config.json and the
# config hash of a run are the same as with a plain default.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from telescope.errors import ConfigError

PRESETS = ("tiny", "quick", "paper")
_BOUNDS = "telescope.bounds"


@dataclass(frozen=True)
class RunContext:
    """What a run needs besides its config; not part of the run's identity.

    ``workers``: processes that run the study's units at once (NOTE [units in parallel] in
    :mod:`telescope.experiments.units`); None: the device's default, 1 on the CPU. The results
    are the same whatever the number.
    """

    device: str = "cpu"
    data_dir: Path | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise ConfigError(f"RunContext(workers={self.workers!r}): give a whole number of worker processes "
                              "≥ 1 (--workers K), or None for the device's default")


@dataclass(frozen=True)
class Bounds:
    """What a config field accepts besides its type (NOTE [typed configs])."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    nonempty: bool = False

    def describe(self) -> str:
        parts = ["positive" if (op, v) == (">", 0) else f"{op} {v:g}"
                 for op, v in (("≥", self.ge), (">", self.gt), ("≤", self.le), ("<", self.lt)) if v is not None]
        if self.choices is not None:
            parts.append("one of " + "|".join(str(c) for c in self.choices))
        if self.nonempty:
            parts.append("at least one item")
        return ", ".join(parts)

    def violated(self, value: Any) -> bool:
        if self.choices is not None and value not in self.choices:
            return True
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            v = float(value)
            if math.isnan(v):
                return any(b is not None for b in (self.ge, self.gt, self.le, self.lt))
            return ((self.ge is not None and not v >= self.ge) or (self.gt is not None and not v > self.gt)
                    or (self.le is not None and not v <= self.le) or (self.lt is not None and not v < self.lt))
        return False


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, choices: Iterable[Any] | None = None, nonempty: bool = False) -> Any:
    """A config field's default with its bounds (NOTE [typed configs]).

    ``width: int = bounded(200, ge=1)``; ``lrs: tuple[float, ...] = bounded((0.01,), gt=0, nonempty=True)``
    (bounds and choices of a tuple apply to every item); ``dtype: str = bounded("float32",
    choices=("float32", "float64"))``.
    """
    spec = Bounds(ge, gt, le, lt, tuple(choices) if choices is not None else None, nonempty)
    return dataclasses.field(default=default, metadata={_BOUNDS: spec})


def bounds_of(f: dataclasses.Field) -> Bounds:
    return f.metadata.get(_BOUNDS, Bounds())


def config_to_dict(config: Any) -> dict[str, Any]:
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


# ----------------------------------------------------------------------------- types


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``(inner type, accepts None)`` of ``T | None`` / ``Optional[T]``; ``(annotation, False)`` otherwise."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if args else Any), len(args) < len(typing.get_args(annotation))
    return annotation, False


def type_name(annotation: Any) -> str:
    """``int``, ``float``, ``str``, ``bool``, ``ints`` (a comma-separated tuple), ... ; ``?`` marks None."""
    inner, optional = _optional(annotation)
    if typing.get_origin(inner) is tuple:
        (item, *_) = typing.get_args(inner) or (str,)
        text = f"{getattr(item, '__name__', item)}s"
    else:
        text = getattr(inner, "__name__", str(inner))
    return text + ("?" if optional else "")


def _is(value: Any, annotation: Any) -> bool:
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True


def _coerce(name: str, text: str, annotation: Any, experiment: str) -> Any:
    """Parse ``text`` as a value of the field's type (int, float, bool, str or tuples)."""
    inner, optional = _optional(annotation)
    if optional and text.lower() in ("none", "null", ""):
        return None
    if typing.get_origin(inner) is tuple:
        (item, *_) = typing.get_args(inner) or (str,)
        items = [t for t in text.split(",") if t.strip()]
        return tuple(_coerce(name, t.strip(), item, experiment) for t in items)
    try:
        if inner is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if inner is int:
            return int(float(text)) if float(text).is_integer() else int(text)
        if inner is float:
            return float(text)
    except (ValueError, OverflowError):
        raise ConfigError(
            f"--set {name}={text}: {experiment} expects {type_name(inner)} for '{name}'") from None
    return text


def check_fields(config: Any, experiment: str) -> None:
    """Every field of ``config`` against its declared type and bounds (NOTE [typed configs]).

    Raises :class:`ConfigError` naming the experiment, the key, the value received and
    what it accepts.
    """
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        inner, optional = _optional(hints[f.name])
        if value is None and optional:
            continue
        spec = bounds_of(f)
        if typing.get_origin(inner) is tuple:
            (item, *_) = typing.get_args(inner) or (str,)
            items = value if isinstance(value, (tuple, list)) else None
            ok = items is not None and all(_is(v, item) for v in items) and not any(spec.violated(v) for v in items)
            ok = ok and not (spec.nonempty and not items)
        else:
            ok = _is(value, inner) and not spec.violated(value)
        if not ok:
            shown = ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else value
            rule = ", ".join(p for p in (type_name(hints[f.name]), spec.describe()) if p)
            raise ConfigError(f"{experiment}: {f.name}={shown} is not accepted; {f.name} takes {rule} "
                              f"(--set {f.name}=...)")


def describe(config_cls: type) -> list[dict[str, Any]]:
    """One row per field: ``key, type, bounds, default, presets`` (a preset's value where it sets one)."""
    hints = typing.get_type_hints(config_cls)
    presets: Mapping[str, Mapping[str, Any]] = getattr(config_cls, "PRESETS", {})
    rows = []
    for f in fields(config_cls):
        rows.append({"key": f.name, "type": type_name(hints[f.name]), "bounds": bounds_of(f).describe(),
                     "default": f.default,
                     "presets": {p: values[f.name] for p, values in presets.items() if f.name in values}})
    return rows


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``["width=3", "lr=0.1"]`` -> ``{"width": "3", "lr": "0.1"}`` (the ``--set`` option)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def resolve_config(experiment: str, config_cls: type, preset: str = "quick", *,
                   seed: int | None = None, overrides: Mapping[str, str] | None = None) -> Any:
    """The config for ``preset`` with ``seed`` and ``key=value`` overrides applied, checked.

    Checks: the declared type and bounds of every field (:func:`check_fields`), then the
    study's own ``validate()``.
    """
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
    check_fields(config, experiment)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def replace(config: Any, **changes: Any) -> Any:
    return dataclasses.replace(config, **changes)
