"""One ``syncfs(2)`` for a batch of new files instead of an ``fsync`` for each (Linux).

Why: every ``fsync`` of a freshly written file ends with a cache flush of the
whole disk, and each costs the kernel about as much CPU as the write itself (on
a virtual disk much more). A Maildir batch of 64 copies took 64 of them plus one
for the folder. ``syncfs`` writes back everything dirty on the file system and
flushes once: the same guarantee for every file of the batch, for one flush.
Measured on the benchmark machine: 1,000 copies of 20 KB in 0.06 s and 0.03 s
of CPU, against 0.12 s and 0.13 s with eight threads fsyncing side by side.

It is used only where its guarantee is that of ``fsync``, and its cost bounded:

* Linux 5.8 or later: older kernels return success from ``syncfs`` even when
  the write-back failed. Since 5.8 it reports any write-back error on the file
  system since the descriptor was opened, so the descriptor is opened before
  the batch is written (an error of another program's file is reported too:
  the batch is then retried, which is safe).
* a local file system whose ``syncfs`` is a real write-back and flush (ext2/3/4,
  XFS, Btrfs, F2FS; tmpfs keeps nothing anyway): not a network mount, and not
  across a symbolic link to another file system (callers compare ``st_dev``);
* little else waits to be written (``Dirty`` + ``Writeback`` in /proc/meminfo
  under :data:`DIRTY_LIMIT`): ``syncfs`` also writes what other programs left
  dirty, and a big file copy in progress would make Postbridge wait for it.

Anywhere else :meth:`FileSystemSync.open` returns None and the caller fsyncs
each file as before. Python has no ``os.syncfs``; libc's is called through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import sys
from functools import cache

# Bytes other programs may have waiting to be written before a batch; above it a
# syncfs could wait seconds on their data, and each file is fsynced instead.
DIRTY_LIMIT = 64 << 20

# statfs f_type values of file systems whose syncfs writes back and flushes.
LOCAL_FILE_SYSTEMS = frozenset(
    {
        0xEF53,  # ext2, ext3, ext4
        0x58465342,  # XFS
        0x9123683E,  # Btrfs
        0xF2F52010,  # F2FS
        0x01021994,  # tmpfs (nothing to flush, nothing kept)
    }
)

_MEMINFO = "/proc/meminfo"
_DIRTY = re.compile(rb"^(?:Dirty|Writeback):\s+(\d+) kB", re.MULTILINE)


def kernel_reports_errors(release: str) -> bool:
    """True for a Linux release (``os.uname().release``) of 5.8 or later."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return match is not None and (int(match[1]), int(match[2])) >= (5, 8)


@cache
def _libc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or not kernel_reports_errors(os.uname().release):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
        libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return libc


def file_system_type(fd: int) -> int | None:
    """The statfs ``f_type`` of the file system holding ``fd`` (Linux), or None."""
    libc = _libc()
    if libc is None:
        return None
    # struct statfs starts with f_type (a C long); 512 bytes cover the whole struct.
    buffer = ctypes.create_string_buffer(512)
    if libc.fstatfs(fd, buffer) != 0:
        return None
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF


def dirty_bytes(meminfo: str = _MEMINFO) -> int | None:
    """What the whole system has waiting to be written to disk, or None if unknown."""
    try:
        with open(meminfo, "rb") as source:
            text = source.read()
    except OSError:
        return None
    found = _DIRTY.findall(text)
    return sum(int(kb) for kb in found) * 1024 if len(found) == 2 else None


class FileSystemSync:
    """A descriptor on a directory; :meth:`sync` makes all its file system durable."""

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self._fd = fd
        self._libc = libc
        self.device = os.fstat(fd).st_dev

    @classmethod
    def open(cls, directory: os.PathLike[str] | str) -> FileSystemSync | None:
        """Ready for a batch under ``directory``, or None: fsync each file instead.

        Open it before writing the batch: :meth:`sync` then reports a write-back
        error of any of the batch's files.
        """
        libc = _libc()
        if libc is None:
            return None
        dirty = dirty_bytes()
        if dirty is None or dirty > DIRTY_LIMIT:
            return None
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        if file_system_type(fd) not in LOCAL_FILE_SYSTEMS:
            os.close(fd)
            return None
        return cls(fd, libc)

    def holds(self, path: os.PathLike[str] | str) -> bool:
        """True when ``path`` is on this file system (not behind a link to another)."""
        try:
            return os.stat(path).st_dev == self.device
        except OSError:
            return False

    def sync(self) -> None:
        """Write back and flush the file system; OSError if any write-back failed."""
        if self._libc.syncfs(self._fd) != 0:
            code = ctypes.get_errno() or errno.EIO
            raise OSError(code, os.strerror(code))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileSystemSync:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
