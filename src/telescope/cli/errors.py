"""How every command fails: one line on stderr and a non-zero exit.

# NOTE [one-line failures]
# ``telescope.errors.TelescopeError`` (bad input, missing data, a divergence) is printed as its
# first line. An ``OSError`` naming a file (a read-only or full --out, a missing folder) is
# printed as the system's reason and the file, with the fix. Anything else is unexpected: its
# traceback goes to ``telescope-error-<time>.log`` in the folder the command works in (the run
# or sweep directory, the --out folder, the report's folder) or, when that folder cannot be
# written, in the temporary directory, and the one line names that file. Ctrl-C exits 130
# and says how to resume.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import click

from telescope.errors import TelescopeError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
_LOG_DIRS: list[Path] = []  # where the running command would put an error log, innermost last


def fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"telescope: error: {message}", err=True)
    sys.exit(code)


def log_errors_in(directory: str | os.PathLike) -> None:
    """Tell :func:`friendly` where the running command's unexpected errors are logged."""
    _LOG_DIRS.append(Path(directory))


def _write_log(text: str) -> Path | None:
    name = f"telescope-error-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    for directory in [*reversed(_LOG_DIRS), Path(tempfile.gettempdir())]:
        with contextlib.suppress(OSError):
            path = directory / name
            path.write_text(text, encoding="utf-8")
            return path
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _os_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "?"
    reason = exc.strerror or _first_line(exc)
    fix = ""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "; choose a folder you can write to (--out) or fix its permissions"
    elif exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        fix = "; free some space or choose another --out"
    return f"{reason}: {where}{fix}"


def friendly(fn):
    """Run a command; turn every error into one line and a non-zero exit (NOTE [one-line failures])."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _LOG_DIRS.clear()
        try:
            return fn(*args, **kwargs)
        except TelescopeError as exc:
            fail(_first_line(exc))
        except KeyboardInterrupt:
            fail("interrupted; finished parts are kept, rerun the same command to resume", EXIT_INTERRUPTED)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # whoever read stdout went away (`telescope list | head`): nothing to report
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:
            if exc.filename is None:
                _unexpected(exc)
            fail(_os_message(exc))
        except Exception as exc:  # noqa: BLE001 - NOTE [one-line failures]
            _unexpected(exc)

    return wrapper


def _unexpected(exc: BaseException) -> None:
    log = _write_log(traceback.format_exc())
    where = f"the traceback is in {log}" if log else "no folder could take the traceback"
    fail(f"unexpected {type(exc).__name__}: {_first_line(exc)} ({where})", 1)
