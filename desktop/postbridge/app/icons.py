"""The tray's state icons, loaded from the committed PNG sets.

Every state has PNGs at 16, 20, 24, 32, 40 and 48 px (see
``resources/make_icons.py``); one QIcon holds them all, so the tray host picks
the size it draws at (16 px at 100 %, 24 at 150 %, 32 at 200 % ...) instead of
scaling one bitmap and blurring its 1 px lines.
"""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtGui import QIcon

from postbridge.app.resources import resource
from postbridge.app.status import AppState

SIZES = (16, 20, 24, 32, 40, 48)


class Icons:
    """One QIcon per state, built once (needs a QGuiApplication)."""

    def __init__(self) -> None:
        self._icons: dict[AppState, QIcon] = {}
        for state in AppState:
            icon = QIcon()
            for size in SIZES:
                path = resource("icons", f"{state.value}-{size}.png")
                if not path.is_file():
                    raise FileNotFoundError(f"Postbridge's icon {path} is missing.")
                icon.addFile(str(path), QSize(size, size))
            self._icons[state] = icon

    def for_state(self, state: AppState) -> QIcon:
        return self._icons[state]

    @property
    def app(self) -> QIcon:
        """The window icon: the idle envelope."""
        return self._icons[AppState.IDLE]
