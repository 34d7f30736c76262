"""How notifications reach the user, behind one small interface.

:mod:`postbridge.app.status` decides *what* to say; a :class:`Notifier` only
shows it. The default shows Qt's tray balloon (``QSystemTrayIcon.showMessage``
works wherever a tray does, with no D-Bus or Start-menu shortcut needed). A
native notifier (Windows toasts with an AppUserModelID, desktop-notifier) can
replace it later without touching the rules. Without a tray, the message goes
to the small fallback window's message line instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from PySide6.QtWidgets import QSystemTrayIcon

from postbridge.app.status import Notification

log = logging.getLogger("postbridge.app.notify")

BALLOON_MS = 10_000


class Notifier(Protocol):
    def notify(self, note: Notification) -> None: ...


class TrayNotifier:
    """Tray balloons; falls back to ``fallback`` while the icon is not shown."""

    def __init__(
        self, tray: QSystemTrayIcon, *, fallback: Callable[[Notification], None] | None = None
    ) -> None:
        self._tray = tray
        self._fallback = fallback

    def notify(self, note: Notification) -> None:
        log.info("notification: %s: %s", note.title, note.text)
        if self._tray.isVisible() and QSystemTrayIcon.supportsMessages():
            icon = (
                QSystemTrayIcon.MessageIcon.Warning
                if note.is_error
                else QSystemTrayIcon.MessageIcon.Information
            )
            self._tray.showMessage(note.title, note.text, icon, BALLOON_MS)
        elif self._fallback is not None:
            self._fallback(note)


class CallbackNotifier:
    """Hands each notification to a function (the no-tray window's message line)."""

    def __init__(self, show: Callable[[Notification], None]) -> None:
        self._show = show

    def notify(self, note: Notification) -> None:
        log.info("notification: %s: %s", note.title, note.text)
        self._show(note)
