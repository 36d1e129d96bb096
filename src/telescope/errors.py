"""Errors that carry a message meant for people.

Every error raised on bad user input derives from :class:`TelescopeError`. The CLI
prints ``str(error)`` as one line and exits non-zero; library users can catch the
base class. Messages start with the call that failed, say what was received and
how to fix it (house habit 5).
"""

from __future__ import annotations


class TelescopeError(Exception):
    """Base class of every error meant to be read by a person."""


class ConfigError(TelescopeError, ValueError):
    """An unknown experiment, preset or config key, or a value of the wrong kind."""


class DataError(TelescopeError, FileNotFoundError):
    """Data files are missing or do not match their checksums."""


class ShapeError(TelescopeError, ValueError):
    """Tensors of the wrong shape, dtype or device reached a public entry point."""


class UnsupportedModelError(TelescopeError, ValueError):
    """The model has a part the requested computation cannot treat exactly."""


class DivergenceError(TelescopeError, FloatingPointError):
    """Training produced a non-finite loss; metrics up to that point are kept."""


class MissingExtraError(TelescopeError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""


def require(module: str, extra: str, purpose: str):
    """Import an optional module or raise :class:`MissingExtraError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"{purpose} needs the optional package '{module}': "
            f"pip install 'telescope[{extra}]'"
        ) from exc


class BusyError(TelescopeError, RuntimeError):
    """Another process holds what this one needs (a sweep directory being run); the message names it."""
