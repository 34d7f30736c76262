"""Delivery into Maildir folders: the embedded default target.

One folder per local recipient under a root (``<root>/<address>/{tmp,new,cur}``),
readable by any Maildir client or by Dovecot. Why Maildir and how it is written:

* Maildir needs no locking: a message is written in ``tmp/``, flushed and
  fsynced, then renamed into ``new/`` (cr.yp.to/proto/maildir.html). We use
  ``os.replace`` and explicit ``fsync`` rather than the classic ``link()`` +
  ``unlink()`` dance and ``SIGALRM`` (getmail6 does that) because Postbridge
  runs on Windows first.
* The file name is deterministic, derived from the job key:
  ``<key>.<hostname>,S=<size>``. If Postbridge is killed after the rename but
  before the ledger records the delivery, the retry finds a file starting with
  ``<key>.`` in ``new/`` (or in ``cur/``, where mail clients move it and append
  ``:2,<flags>``) and reports "accepted" without writing a second copy.
* On Linux a batch's copies are made durable by one ``syncfs`` rather than an
  ``fsync`` each where that gives the same guarantee (groupsync.py says
  when): written in ``tmp/``, synced, renamed, synced again.
* Messages are stored with LF line endings (the Maildir convention; Dovecot
  and mutt expect it). The spool holds CRLF, so the copy converts on the fly in
  1 MiB chunks: a 100 MB message never sits in memory.

The blocking work (writes, fsync, directory listings) runs in a worker thread
so that the event loop keeps serving the POP3 downloads running beside it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from postbridge.engine.delivery.base import (
    DeliveryJob,
    DeliveryTarget,
    RecipientResult,
    unique,
)
from postbridge.engine.delivery.groupsync import FileSystemSync
from postbridge.engine.errors import StorageError

CHUNK_SIZE = 1 << 20

# The "already delivered?" index of a folder is re-read from disk after this many
# of our own additions, so that it tracks what is really there (mail clients move
# and delete files) and cannot grow without bound in a long-running process.
_INDEX_REFRESH = 2000

# Copies of a batch held open between their write and their fsync (file handles).
_OPEN_COPIES = 64
# Threads that fsync the copies of a batch side by side.
_FSYNC_THREADS = 8

# Characters Windows does not allow in a file name; refused everywhere so that a
# configuration behaves the same on every platform.
_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def crlf_to_lf(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Convert CRLF to LF across a stream of chunks; a lone CR or LF is kept.

    A CR that ends a chunk is held back until the next chunk shows whether an
    LF follows it, so a CRLF split across chunks still becomes one LF.
    """
    pending_cr = False
    for chunk in chunks:
        if not chunk:
            continue
        if pending_cr:
            chunk = b"\r" + chunk
        pending_cr = chunk.endswith(b"\r")
        if pending_cr:
            chunk = chunk[:-1]
        if chunk:
            yield chunk.replace(b"\r\n", b"\n")
    if pending_cr:
        yield b"\r"


def folder_name(address: str) -> str:
    """The folder name for ``address`` (lower-cased); ValueError says why not.

    The name must stay one path component inside the root whatever the address
    says: no separators, no ``..``, nothing Windows would reinterpret.
    """
    name = address.strip().lower()
    if not name:
        raise ValueError("the address is empty")
    if _FORBIDDEN.search(name):
        raise ValueError("the address contains characters a folder name cannot have")
    if ".." in name or name.startswith("."):
        # A leading dot would also collide with Maildir++ subfolders (".Sent").
        raise ValueError("the address contains '..' or starts with a dot")
    if name.endswith((".", " ")):
        raise ValueError("the address ends with a dot or a space")
    if name.split(".", 1)[0].upper() in _RESERVED:
        raise ValueError("the address is a reserved device name on Windows")
    if len(name.encode("utf-8")) > 200:
        raise ValueError("the address is too long for a folder name")
    return name


def _safe_hostname() -> str:
    # Maildir names end in the host name; keep it to characters every file
    # system accepts and that cannot be mistaken for the ",S=" or ":2," parts.
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()).strip(".")
    return host[:64] or "localhost"


def _os_error_words(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "the disk is full"
    if error.errno == getattr(errno, "EDQUOT", -1):
        return "the disk quota is used up"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if error.errno == errno.EROFS:
        return "the disk is read-only"
    return error.strerror or str(error)


def _fsync_dir(path: Path) -> None:
    """Make a rename into ``path`` durable (POSIX); Windows cannot open directories."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        # Some file systems (certain network mounts) do not fsync directories.
        if error.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _message_chunks(prepend: bytes, source: BinaryIO) -> Iterator[bytes]:
    if prepend:
        yield prepend
    yield from iter(partial(source.read, CHUNK_SIZE), b"")


class _DeliveredIndex:
    """Sorted file names of ``new/`` and ``cur/``: "is ``<key>.*`` there?" in O(log n).

    Listing a big ``cur/`` for every message would cost more than the fsync.
    Staleness is harmless here: files carrying our keys are only ever created
    by us, so the index can only answer "delivered" for a key that truly was.
    """

    def __init__(self, folder: Path) -> None:
        names: list[str] = []
        for sub in ("new", "cur"):
            with contextlib.suppress(FileNotFoundError):
                names.extend(os.listdir(folder / sub))
        names.sort()
        self._names = names
        self.additions = 0

    def holds(self, key: str) -> bool:
        prefix = key + "."
        i = bisect.bisect_left(self._names, prefix)
        return i < len(self._names) and self._names[i].startswith(prefix)

    def add(self, name: str) -> None:
        bisect.insort(self._names, name)
        self.additions += 1


# os.open flags for a copy in tmp/: binary on Windows, not inherited by child processes.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0) | os.O_CLOEXEC


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _close_copy(copy: _Copy, *, fsync: bool) -> OSError | None:
    """Complete a copy in ``tmp/`` (fsynced if asked); the error instead of raising it.

    A copy of a message held in memory is written here too, in one ``os.write``:
    each call that waits on the disk lets go of the interpreter lock and must win
    it back from the event loop's thread, so a copy costs as few calls as can be
    (open, write, fsync, close), and eight copies wait for it side by side.
    """
    try:
        if copy.data is not None:
            fd = os.open(copy.tmp, _CREATE, 0o666)
            try:
                _write_all(fd, copy.data)
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            return None
        assert copy.out is not None
        try:
            if fsync:
                os.fsync(copy.out.fileno())
        finally:
            copy.out.close()
    except OSError as error:
        return error
    return None


@dataclass
class _Copy:
    """One recipient's copy of a job: written in ``tmp/`` and still open (``out``),
    or still to be written there from memory (``data``, already in LF form)."""

    index: int
    recipient: str
    folder: Path
    tmp: str
    name: str
    out: BinaryIO | None = None
    data: bytes | None = None


class MaildirTarget(DeliveryTarget):
    """Deliver to ``<root>/<recipient>/new/``, one copy per recipient."""

    # A copy is named by its job's key: a delivery repeated after a crash is
    # recognised, so the poll cycle may record a whole batch's results at once.
    idempotent = True

    def __init__(self, *, root: Path) -> None:
        self.root = Path(root)
        self.description = f"Maildir folders in {self.root}"
        self._host = _safe_hostname()
        self._lock = threading.Lock()
        self._indexes: dict[Path, _DeliveredIndex] = {}
        self._ready: set[Path] = set()
        self._folders: dict[str, Path] = {}  # recipient -> its folder (a valid name)
        self._pool: ThreadPoolExecutor | None = None

    async def deliver(self, job: DeliveryJob) -> dict[str, RecipientResult]:
        return (await self.deliver_many([job]))[0]

    async def deliver_many(self, jobs: Sequence[DeliveryJob]) -> list[dict[str, RecipientResult]]:
        return await asyncio.to_thread(self._deliver_batch, list(jobs))

    async def check(self) -> str:
        return await asyncio.to_thread(self._check)

    async def aclose(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    # -- worker thread -------------------------------------------------------

    def _deliver_batch(self, jobs: list[DeliveryJob]) -> list[dict[str, RecipientResult]]:
        """Write every copy in ``tmp/``, then fsync them, rename them, fsync ``new/`` once each.

        The steps are those of a single delivery (nothing is in ``new/``
        before it is fsynced), only grouped: a batch of 32 messages to one
        folder costs one directory fsync instead of 32, and each file's fsync
        follows the writes of the others rather than stalling them.
        """
        results: list[dict[str, RecipientResult]] = [{} for _ in jobs]
        open_copies: list[_Copy] = []
        # Opened before anything is written: its sync reports the write-back errors since.
        with FileSystemSync.open(self.root) or contextlib.nullcontext() as sync:
            for index, job in enumerate(jobs):
                for recipient in unique(job.recipients):
                    outcome = self._write_copy(index, job, recipient)
                    if isinstance(outcome, RecipientResult):
                        results[index][recipient] = outcome
                        continue
                    open_copies.append(outcome)
                    if len(open_copies) >= _OPEN_COPIES:
                        self._complete(open_copies, results, sync)
                        open_copies = []
            self._complete(open_copies, results, sync)
        return [
            {r: res[r] for r in unique(job.recipients)}
            for job, res in zip(jobs, results, strict=True)
        ]

    def _write_copy(self, index: int, job: DeliveryJob, recipient: str) -> _Copy | RecipientResult:
        """Write one copy into ``tmp/`` (flushed, not yet fsynced), or say why not.

        A copy of a message held in memory is only prepared here (converted to
        LF); :func:`_close_copy` writes it, in :meth:`_complete`.
        """
        folder = self._folders.get(recipient)
        if folder is None:
            if len(self._folders) >= _INDEX_REFRESH:  # bounded in a long-running process
                self._folders.clear()
            try:
                folder = self._folders[recipient] = self.root / folder_name(recipient)
            except ValueError as why:
                return RecipientResult(
                    recipient,
                    "permanent",
                    f"The address {recipient!r} cannot be used as a Maildir folder name: {why}.",
                )
        try:
            with self._lock:
                if self._index(folder).holds(job.key):
                    return RecipientResult(
                        recipient,
                        "accepted",
                        f"Already saved in the Maildir folder {folder} (delivered before).",
                    )
            self._ensure_folder(folder)
        except OSError as error:
            return self._storage_failure(recipient, folder, error)
        # A deterministic tmp name: a leftover of a crashed attempt is simply
        # overwritten by the retry instead of piling up.
        # Paths as strings: pathlib's "/" costs microseconds a copy, holding the lock
        # the event loop's thread waits for.
        tmp = f"{folder}{os.sep}tmp{os.sep}{job.key}.{self._host}"
        if job.data is not None:  # small: converted here, written in _complete
            data = b"".join((job.prepend, memoryview(job.data)[job.skip :]))
            # The same as replace(b"\r\n", b"\n"), in 60% of its time for mail's short lines.
            data = b"\n".join(data.split(b"\r\n"))
            name = f"{job.key}.{self._host},S={len(data)}"
            return _Copy(index, recipient, folder, tmp, name, data=data)
        try:
            source = job.open()
        except OSError as error:
            return RecipientResult(
                recipient,
                "temporary",
                f"Could not read the spooled message {job.where}: {_os_error_words(error)}. "
                "It will be tried again.",
            )
        try:
            with source:
                source.seek(job.skip)
                out = open(tmp, "wb")  # noqa: SIM115 - closed in _complete
                try:
                    size = 0
                    for piece in crlf_to_lf(_message_chunks(job.prepend, source)):
                        out.write(piece)
                        size += len(piece)
                    out.flush()
                except BaseException:
                    out.close()
                    raise
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            with self._lock:
                self._ready.discard(folder)
            return self._storage_failure(recipient, folder, error)
        return _Copy(index, recipient, folder, tmp, f"{job.key}.{self._host},S={size}", out=out)

    def _complete(
        self,
        copies: list[_Copy],
        results: list[dict[str, RecipientResult]],
        sync: FileSystemSync | None,
    ) -> None:
        """Make each copy durable and rename it into ``new/``, then make the renames durable.

        With ``sync`` (all folders on its file system): one ``syncfs`` for the
        copies, one for the renames. Without: an fsync per copy, then per ``new/``.
        """
        folders = {copy.folder for copy in copies}
        if sync is not None and not all(sync.holds(f / s) for f in folders for s in ("tmp", "new")):
            sync = None  # a folder links to another file system
        if sync is not None:
            done = self._finish_grouped(copies, sync)
        elif len(copies) > 1:
            # A slice of the batch per pool thread, not a task per copy: every hand-over
            # between threads also waits for the interpreter lock.
            n = min(_FSYNC_THREADS, len(copies))
            slices = [copies[i::n] for i in range(n)]
            done = [pair for part in self._fsync_pool().map(self._finish, slices) for pair in part]
        else:
            done = self._finish(copies)
        renamed: dict[Path, list[_Copy]] = {}
        for copy, error in done:
            if error is not None:
                results[copy.index][copy.recipient] = self._storage_failure(
                    copy.recipient, copy.folder, error
                )
            else:
                renamed.setdefault(copy.folder, []).append(copy)
        # The renames made durable: one syncfs for all folders, or an fsync of each new/.
        grouped_error: OSError | None = None
        if sync is not None and renamed:
            try:
                sync.sync()
            except OSError as error:
                grouped_error = error
        for folder, moved in renamed.items():
            problem = grouped_error
            if sync is None:
                try:
                    _fsync_dir(folder / "new")
                except OSError as failed:
                    problem = failed
            for copy in moved:
                results[copy.index][copy.recipient] = (
                    RecipientResult(
                        copy.recipient, "accepted", f"Saved in the Maildir folder {folder}."
                    )
                    if problem is None
                    else self._storage_failure(copy.recipient, folder, problem)
                )

    def _finish(self, copies: list[_Copy]) -> list[tuple[_Copy, OSError | None]]:
        """Each copy fsynced in ``tmp/``, then renamed into ``new/`` (pool threads)."""
        return [(copy, self._renamed(copy, _close_copy(copy, fsync=True))) for copy in copies]

    def _finish_grouped(
        self, copies: list[_Copy], sync: FileSystemSync
    ) -> list[tuple[_Copy, OSError | None]]:
        """Every copy completed in ``tmp/``, all made durable by one sync, then renamed."""
        done: list[tuple[_Copy, OSError | None]] = []
        written: list[_Copy] = []
        for copy in copies:
            error = _close_copy(copy, fsync=False)
            if error is None:
                written.append(copy)
            else:
                done.append((copy, self._renamed(copy, error)))
        synced: OSError | None = None
        if written:
            try:
                sync.sync()
            except OSError as error:
                synced = error
        done += [(copy, self._renamed(copy, synced)) for copy in written]
        return done

    def _renamed(self, copy: _Copy, error: OSError | None) -> OSError | None:
        """Rename a durable copy into ``new/`` unless ``error``; a failed copy is removed."""
        if error is None:
            try:
                os.replace(copy.tmp, f"{copy.folder}{os.sep}new{os.sep}{copy.name}")
            except OSError as failed:
                error = failed
        if error is None:
            with self._lock:
                # Recorded before the directory is synced: should that fail, the retry
                # must find the file rather than write a second one.
                self._index(copy.folder).add(copy.name)
        else:
            with contextlib.suppress(OSError):
                os.unlink(copy.tmp)
            with self._lock:
                self._ready.discard(copy.folder)
        return error

    def _fsync_pool(self) -> ThreadPoolExecutor:
        # fsyncs issued together share the file system's journal commits: on a
        # busy disk 32 files take a few commits instead of 32 in a row.
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="maildir-fsync")
            return self._pool

    def _index(self, folder: Path) -> _DeliveredIndex:
        index = self._indexes.get(folder)
        if index is None or index.additions >= _INDEX_REFRESH:
            index = self._indexes[folder] = _DeliveredIndex(folder)
        return index

    def _ensure_folder(self, folder: Path) -> None:
        with self._lock:
            if folder in self._ready:
                return
        created = False
        if not folder.is_dir():
            if not self.root.is_dir():
                self.root.mkdir(parents=True, exist_ok=True)
                _fsync_dir(self.root.parent)
            folder.mkdir(mode=0o700, exist_ok=True)
            created = True
        for sub in ("tmp", "new", "cur"):
            if not (folder / sub).is_dir():
                (folder / sub).mkdir(mode=0o700, exist_ok=True)
                created = True
        if created:
            # The new directory entries must survive a crash too, or the message
            # renamed into them would vanish with them.
            _fsync_dir(folder)
            _fsync_dir(self.root)
        with self._lock:
            self._ready.add(folder)

    def _storage_failure(self, recipient: str, folder: Path, error: OSError) -> RecipientResult:
        reason = StorageError(
            f"Could not save the message for {recipient} in {folder}: "
            f"{_os_error_words(error)}. It stays spooled and will be tried again.",
            detail=str(error),
        )
        return RecipientResult(recipient, "temporary", reason.describe())

    def _check(self) -> str:
        probe = self.root / f".postbridge-check-{os.getpid()}-{threading.get_ident()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as out:
                out.write(b"postbridge\n")
                out.flush()
                os.fsync(out.fileno())
            probe.unlink()
            free = shutil.disk_usage(self.root).free
        except OSError as error:
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)
            raise StorageError(
                f"Postbridge cannot write to the Maildir folders in {self.root}: "
                f"{_os_error_words(error)}.",
                detail=str(error),
            ) from error
        return f"The Maildir folders in {self.root} are writable ({free / 1e9:.1f} GB free)."
