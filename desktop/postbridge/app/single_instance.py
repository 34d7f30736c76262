"""One Postbridge per user: a lock file, and a local socket to wake the running one.

Two copies collecting the same ISP mailboxes would fight over every message
(the engine's data lock makes the second skip its polls, but two tray icons
and two schedules confuse everyone). So the app takes a ``QLockFile`` in the
user's data folder before it does anything else. Qt writes its PID into the
file and treats a lock whose process is gone as stale, so a crash never blocks
the next start. The winner listens on a ``QLocalServer`` (user-only access);
a second launch finds the lock taken, sends ``show`` (or ``hidden`` for an
autostart launch) down the socket, waits for ``ok`` and exits 0, and the first
one shows its Activity window.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from postbridge.engine.paths import default_data_dir

log = logging.getLogger("postbridge.app.instance")

SHOW = "show"
HIDDEN = "hidden"
_MAX_MESSAGE = 64


def default_lock_path() -> Path:
    return default_data_dir() / "postbridge-app.lock"


def server_name_for(lock_path: Path) -> str:
    """A socket name unique to this user's lock file (on Unix, it becomes a file in /tmp)."""
    digest = hashlib.sha256(str(lock_path.resolve()).encode()).hexdigest()[:16]
    return f"postbridge-{digest}"


class SingleInstance(QObject):
    """Holds the per-user lock and answers second launches (emits ``messageReceived``)."""

    messageReceived = Signal(str)

    def __init__(self, lock_path: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.lock_path = lock_path or default_lock_path()
        self.server_name = server_name_for(self.lock_path)
        self._lock = QLockFile(str(self.lock_path))
        self._lock.setStaleLockTime(0)  # stale only when its PID is gone, never by age
        self._server: QLocalServer | None = None
        self._buffers: dict[QLocalSocket, bytes] = {}

    def acquire(self) -> bool:
        """True when this is the first instance (and now listening); False if one runs."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        if not self._lock.tryLock(0):
            return False
        self._listen()
        return True

    def _listen(self) -> None:
        # We hold the lock, so a socket under our name is a crashed instance's leftover; still,
        # remove it only once a connection to it has failed (DESKTOP.md).
        probe = QLocalSocket()
        probe.connectToServer(self.server_name)
        if probe.waitForConnected(200):
            probe.disconnectFromServer()
            log.warning("a Postbridge socket answers although this instance holds the lock")
        else:
            QLocalServer.removeServer(self.server_name)
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.server_name):
            log.warning("cannot listen for second launches: %s", server.errorString())
            return
        server.newConnection.connect(self._accept)
        self._server = server

    def _accept(self) -> None:
        assert self._server is not None
        while self._server.hasPendingConnections():
            socket = self._server.nextPendingConnection()
            self._buffers[socket] = b""
            socket.readyRead.connect(lambda s=socket: self._read(s))
            socket.disconnected.connect(lambda s=socket: self._drop(s))

    def _read(self, socket: QLocalSocket) -> None:
        data = self._buffers.get(socket, b"") + bytes(socket.readAll().data())
        if b"\n" not in data and len(data) < _MAX_MESSAGE:
            self._buffers[socket] = data
            return
        message = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
        self._buffers[socket] = b""
        socket.write(b"ok\n")
        socket.flush()
        socket.disconnectFromServer()
        self.messageReceived.emit(message)

    def _drop(self, socket: QLocalSocket) -> None:
        self._buffers.pop(socket, None)
        socket.deleteLater()

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._lock.unlock()


def notify_running(server_name: str, message: str, *, timeout: float = 5.0) -> bool:
    """Tell the running instance ``message``; True once it answered. Blocking, no event loop.

    The first instance may still be starting (lock taken, not yet listening), so
    connecting is retried until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        socket = QLocalSocket()
        socket.connectToServer(server_name)
        if socket.waitForConnected(500):
            socket.write(message.encode("ascii") + b"\n")
            socket.waitForBytesWritten(1000)
            answered = socket.waitForReadyRead(int(max(0.5, deadline - time.monotonic()) * 1000))
            reply = bytes(socket.readAll().data()) if answered else b""
            socket.disconnectFromServer()
            return reply.startswith(b"ok")
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
