"""One collector at a time per data directory.

The tray app, ``postbridge poll --once`` from a terminal and a scheduled
``postbridge run`` may all point at the same ledger. Two cycles collecting the
same mailbox at once would race to deliver the same message, so each cycle
holds an exclusive OS-level lock on ``<data_dir>/postbridge.lock``. The OS
releases it when the process dies, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType

from postbridge.engine.errors import PostbridgeError


class AlreadyRunning(PostbridgeError):
    transient = True


class DataLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise AlreadyRunning(
                "Another Postbridge is collecting mail with the same data folder right now; "
                "this poll was skipped.",
                detail=str(self.path),
            ) from exc
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> DataLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
