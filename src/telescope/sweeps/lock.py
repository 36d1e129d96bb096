"""One driver per sweep directory: an advisory lock on ``<sweep dir>/sweep.lock``.

# NOTE [sweep lock]
# Two drivers on one sweep directory would run the same runs at once and miscount what
# finished. The driver holds ``fcntl.flock(LOCK_EX)`` on ``sweep.lock`` while it runs and
# writes its pid, host and start time into it; a second driver fails at once with
# :class:`~telescope.errors.BusyError` naming them. The kernel drops the lock when the holder
# dies (even by SIGKILL), so a stale lock file never blocks a rerun; its workers die with it
# (NOTE [workers die with their driver] in telescope.sweeps.backends). flock is advisory and
# per host: drivers on two machines sharing the directory over NFS are not kept apart. On
# platforms without fcntl the lock is skipped with a log message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from telescope.errors import BusyError

log = logging.getLogger(__name__)

LOCK = "sweep.lock"


@contextlib.contextmanager
def sweep_lock(sweep_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``sweep_dir`` (created if missing) for the ``with`` block."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        log.info("sweep_lock: no fcntl on this platform; %s is not locked", sweep_dir)
        yield Path(sweep_dir) / LOCK
        return
    path = Path(sweep_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"telescope sweep: {sweep_dir} is being run by {_holder(path)}; wait for it to "
                            "finish or stop that process (two drivers would run the same runs twice)") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process (it is starting)"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('started', '?')}"
