"""The on-disk spool: where a message waits when it cannot be delivered at once.

A message is streamed into ``<spool>/tmp/<id>.part`` and renamed to
``<spool>/<id>.eml``; when it must be kept (its delivery was deferred or
refused, or it goes to quarantine) it is fsynced and the directory too
(where the OS allows) before the ledger says ``spooled``, and only after
delivery does the ISP copy get deleted. A crash leaves at worst a ``.part``
file or an ``.eml`` of a row still ``listed``: the next cycle removes the
first and overwrites the second when it downloads the message again.

The writer keeps the first bytes of the message (the header block, up to
:data:`HEAD_LIMIT`) so routing and the Activity window never re-read the file.
A message is held in memory only up to :data:`BUFFER_LIMIT`: a small one is
handed to the delivery target straight from memory and reaches the spool only
if it has to stay (:meth:`Spool.save`); a bigger one streams to its file from
there on and is never held whole. The SHA-256 is computed on the way through
for a big message and at the end, in the poll cycle's worker thread, for a
small one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from postbridge.engine.errors import StorageError

HEAD_LIMIT = 256 * 1024
BUFFER_LIMIT = 256 * 1024


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX); a no-op where directories can't be opened."""
    if sys.platform == "win32":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path, *, offset: int = 0) -> str:
    """SHA-256 of a file from ``offset`` on, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(offset)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"Postbridge could not {action} in its data folder {path.parent} "
        "(is the disk full or the folder read-only?). The message stays at the ISP.",
        detail=f"{type(exc).__name__}: {exc}",
    )


@dataclass(frozen=True)
class SpooledFile:
    path: Path
    size: int
    sha256: str
    head: bytes


class SpoolWriter:
    """A write-only file for one message; ``commit()`` makes it durable.

    ``commit()`` and ``abort()`` may run in another thread than ``write()``,
    once writing is over.
    """

    def __init__(self, final: Path | Callable[[], Path], temp: Path | Callable[[], Path]) -> None:
        # The paths may come as functions: a small message that never reaches the
        # disk then never pays for building them (pathlib is slow for what it is).
        self._final = final
        self._temp = temp
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self._buffer = bytearray()
        self._fh: BinaryIO | None = None
        self.size = 0
        self._closed = False

    @property
    def final(self) -> Path:
        if not isinstance(self._final, Path):
            self._final = self._final()
        return self._final

    @property
    def temp(self) -> Path:
        if not isinstance(self._temp, Path):
            self._temp = self._temp()
        return self._temp

    def _open(self) -> BinaryIO:
        try:
            fh = open(self.temp, "wb")  # noqa: SIM115 - closed in commit/abort
            if self._buffer:
                fh.write(self._buffer)
        except OSError as exc:
            self.abort()
            raise _storage_error("create a file", self.temp, exc) from exc
        # What was held in memory is hashed now; what follows as it is written.
        self._hash.update(self._buffer)
        self._buffer = bytearray()
        self._fh = fh
        return fh

    def write(self, data: bytes) -> int:
        if len(self._head) < HEAD_LIMIT:
            self._head += data[: HEAD_LIMIT - len(self._head)]
        self.size += len(data)
        if self._fh is None and self.size <= BUFFER_LIMIT:
            self._buffer += data
            return len(data)
        fh = self._fh or self._open()
        self._hash.update(data)
        try:
            return fh.write(data)
        except OSError as exc:
            self.abort()
            raise _storage_error("write a message", self.temp, exc) from exc

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    @property
    def sha256(self) -> str:
        """The SHA-256 of what was written (of a message in memory: computed now)."""
        if self.in_memory:
            return hashlib.sha256(self._buffer).hexdigest()
        return self._hash.hexdigest()

    @property
    def in_memory(self) -> bool:
        """True while the whole message is still in memory (no file was opened)."""
        return self._fh is None and not self._closed

    def content(self) -> bytes:
        """The whole message, while :attr:`in_memory`."""
        if not self.in_memory:
            raise RuntimeError("the message is no longer held in memory")
        return bytes(self._buffer)

    def commit(self) -> SpooledFile:
        """Write what is buffered, fsync, rename into place: the message is durable."""
        return self.finish(durable=True)

    def finish(self, *, durable: bool) -> SpooledFile:
        """Close and rename into place; fsynced only when ``durable``.

        A file finished without ``durable`` is not safe from a power cut:
        :meth:`Spool.make_durable` it before the ledger may say it is spooled.
        """
        fh = self._fh or self._open()
        try:
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
            fh.close()
            self._closed = True
            os.replace(self.temp, self.final)
            if durable:
                fsync_dir(self.final.parent)
        except OSError as exc:
            self.abort()
            raise _storage_error("save a message", self.final, exc) from exc
        return SpooledFile(self.final, self.size, self._hash.hexdigest(), bytes(self._head))

    def abort(self) -> None:
        self._buffer = bytearray()
        if not self._closed:
            if self._fh is not None:
                with contextlib.suppress(OSError):
                    self._fh.close()
            self._closed = True
        if isinstance(self._temp, Path):  # a file may exist only once its path was made
            with contextlib.suppress(OSError):
                self._temp.unlink()


class Spool:
    """The spool directory of one data dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error("create the spool folder", root / "x", exc) from exc

    def path_for(self, ledger_id: int) -> Path:
        return self.root / f"{ledger_id}.eml"

    def writer(self, ledger_id: int) -> SpoolWriter:
        return SpoolWriter(
            lambda: self.path_for(ledger_id),
            lambda: self.tmp / f"{ledger_id}.{os.getpid()}.part",
        )

    def save(self, ledger_id: int, data: bytes) -> Path:
        """Make a message held in memory durable at its ledger id's place."""
        writer = self.writer(ledger_id)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        return writer.commit().path

    def make_durable(self, path: Path) -> None:
        """fsync a file that :meth:`SpoolWriter.finish` left without, and its directory."""
        try:
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            fsync_dir(path.parent)
        except OSError as exc:
            raise _storage_error("save a message", path, exc) from exc

    def anonymous_writer(self, name: str) -> SpoolWriter:
        """A writer for a message whose ledger row does not exist yet (no UIDL)."""
        return SpoolWriter(
            self.tmp / f"{name}.{os.getpid()}.eml", self.tmp / f"{name}.{os.getpid()}.part"
        )

    def adopt(self, path: Path, ledger_id: int) -> Path:
        """Move a committed anonymous file to its ledger id's place."""
        final = self.path_for(ledger_id)
        try:
            os.replace(path, final)
            fsync_dir(self.root)
        except OSError as exc:
            raise _storage_error("save a message", final, exc) from exc
        return final

    def clean_anonymous(self) -> None:
        for leftover in self.tmp.glob("*.eml"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def exists(self, ledger_id: int) -> bool:
        return self.path_for(ledger_id).exists()

    def read_head(self, ledger_id: int, limit: int = HEAD_LIMIT) -> bytes:
        with open(self.path_for(ledger_id), "rb") as fh:
            return fh.read(limit)

    def body_sha256(self, ledger_id: int, *, offset: int) -> str:
        """SHA-256 of the message from ``offset`` on (its body), read in chunks."""
        return file_sha256(self.path_for(ledger_id), offset=offset)

    def remove(self, ledger_id: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_for(ledger_id).unlink()

    def clean_partial(self) -> int:
        """Remove ``.part`` files left by a crash; their messages are still at the ISP."""
        removed = 0
        self.clean_anonymous()
        for part in self.tmp.glob("*.part"):
            with contextlib.suppress(OSError):
                part.unlink()
                removed += 1
        return removed

    def ids(self) -> set[int]:
        found: set[int] = set()
        for entry in self.root.glob("*.eml"):
            with contextlib.suppress(ValueError):
                found.add(int(entry.stem))
        return found
