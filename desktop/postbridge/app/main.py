"""``postbridge`` with no subcommand: the tray application's entry point.

Order matters here. The single-instance lock comes before anything with a side
effect (a second tray icon, a second schedule); a second launch only wakes the
first and exits 0. Then the app, and the three ways it can be told to end, all
of which stop the worker the same way (after the current message):

* the Quit action, and SIGTERM / SIGINT / SIGHUP: :meth:`TrayApp.request_quit`.
  Python runs its signal handlers only between bytecodes, and Qt's event loop
  is C++, so a signal would wait for the next Python slot; ``set_wakeup_fd``
  writes it into a socket pair whose read end a QSocketNotifier watches, which
  wakes the loop at once.
* the end of the desktop session (``commitDataRequest``): a blocking stop,
  because the session manager may end the process soon after.
* ``aboutToQuit``: the blocking stop, a no-op when the gentle one already ran.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from PySide6.QtCore import QSocketNotifier
from PySide6.QtGui import QGuiApplication, QSessionManager
from PySide6.QtWidgets import QApplication

from postbridge.app.appusermodel import set_app_user_model_id
from postbridge.app.autostart import APP_ID
from postbridge.app.controller import TrayApp
from postbridge.app.gcguard import collect_on_gui_thread
from postbridge.app.icons import Icons
from postbridge.app.single_instance import HIDDEN, SHOW, SingleInstance, notify_running
from postbridge.app.status import APP_TITLE

log = logging.getLogger("postbridge.app")

_QUIT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def quit_on_signals(handler: Callable[[], None]) -> Iterator[None]:
    """Call ``handler`` on the GUI thread when SIGTERM/SIGINT/SIGHUP arrives."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, lambda _n, _f: None) for sig in _QUIT_SIGNALS}
    notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read)

    def readable() -> None:
        with contextlib.suppress(OSError):
            reader.recv(64)
        log.info("quit requested by a signal")
        handler()

    notifier.activated.connect(readable)
    try:
        yield
    finally:
        notifier.setEnabled(False)
        signal.set_wakeup_fd(previous_fd)
        for sig, old in previous.items():
            signal.signal(sig, old)
        reader.close()
        writer.close()


def make_application(argv: list[str] | None = None) -> QApplication:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(argv or sys.argv[:1])
    app.setApplicationName(APP_TITLE)
    app.setApplicationDisplayName(APP_TITLE)
    app.setDesktopFileName(APP_ID)
    app.setQuitOnLastWindowClosed(False)  # a tray app lives on with every window closed
    collect_on_gui_thread(app)  # cycles holding Qt objects must not be freed on the worker
    return app


def main(*, config_path: Path | None = None, hidden: bool = False) -> int:
    """Run the tray app until Quit; 0 also when another instance was asked to show itself."""
    set_app_user_model_id()  # Windows: before any window, so notifications match the shortcut
    app = make_application()
    instance = SingleInstance()
    if not instance.acquire():
        if not notify_running(instance.server_name, HIDDEN if hidden else SHOW):
            print(
                "Postbridge is already running, but did not answer; try again in a moment.",
                file=sys.stderr,
            )
        return 0
    try:
        app.setWindowIcon(Icons().app)
        shell = TrayApp(config_path=config_path, hidden=hidden)
        instance.messageReceived.connect(shell.on_second_launch)
        app.aboutToQuit.connect(shell.shutdown)

        def session_ending(_manager: QSessionManager) -> None:
            shell.shutdown()
            QGuiApplication.quit()

        app.commitDataRequest.connect(session_ending)
        with quit_on_signals(shell.request_quit):
            shell.start()
            code = app.exec()
        shell.shutdown()
        return code
    finally:
        instance.release()
