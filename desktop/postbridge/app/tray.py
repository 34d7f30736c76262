"""The tray icon, its menu, and the small window that stands in when there is no tray.

The menu is built once and never cleared: the actions stay, only their text,
check state and enabled state change (clearing or rebuilding a menu while it is
open hides it on i3 and Mint, and an unparented QAction can be collected by
Python and leave a dead DBusMenu entry, so every action is parented to the
menu). The same QAction objects drive the no-tray window's buttons, so both
offer exactly the same commands.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent, QIcon
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QLabel,
    QMenu,
    QSizePolicy,
    QSystemTrayIcon,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from postbridge.app.status import APP_TITLE, Notification

NO_TRAY_REASON = (
    "Your desktop shows no notification area (system tray), so Postbridge runs in this "
    "window instead. On GNOME, the “AppIndicator and KStatusNotifierItem Support” "
    "extension adds one."
)


class TrayMenu:
    """Every command of the app, as QActions owned by one QMenu."""

    def __init__(self) -> None:
        self.menu = QMenu()
        self.menu.setTitle(APP_TITLE)
        self.status = self._add("Not polled yet")
        self.status.setEnabled(False)
        self.menu.addSeparator()
        self.poll_now = self._add("Poll now")
        self.pause = self._add("Pause polling")
        self.menu.addSeparator()
        self.activity = self._add("Activity…")
        self.settings = self._add("Settings…")
        self.open_mail = self._add("Open mail folder")
        self.menu.addSeparator()
        self.autostart = self._add("Start at login")
        self.autostart.setCheckable(True)
        self.about = self._add("About Postbridge")
        self.menu.addSeparator()
        self.quit = self._add("Quit Postbridge")

    def _add(self, text: str) -> QAction:
        action = QAction(text, self.menu)
        self.menu.addAction(action)
        return action

    def commands(self) -> list[QAction]:
        """The actions a user can trigger, in menu order (the status line is not one)."""
        return [
            self.poll_now,
            self.pause,
            self.activity,
            self.settings,
            self.open_mail,
            self.autostart,
            self.about,
            self.quit,
        ]

    def set_paused(self, paused: bool) -> None:
        self.pause.setText("Resume polling" if paused else "Pause polling")


def make_tray_icon(menu: TrayMenu, icon: QIcon, parent: QWidget | None = None) -> QSystemTrayIcon:
    """A tray icon with its context menu set *before* it is shown (XFCE shows none otherwise)."""
    tray = QSystemTrayIcon(icon, parent)
    tray.setContextMenu(menu.menu)
    tray.setToolTip(APP_TITLE)
    return tray


class NoTrayWindow(QWidget):
    """The tray's commands in a small window, with a line saying why there is no tray icon.

    Closing it minimises it while no tray icon exists: it is the only way back to
    Postbridge, and hiding it would leave a program running that nobody can reach.
    """

    def __init__(self, menu: TrayMenu, icon: QIcon) -> None:
        super().__init__()
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(icon)
        self.tray_present = False
        layout = QVBoxLayout(self)
        self.reason = QLabel(NO_TRAY_REASON)
        self.reason.setWordWrap(True)
        layout.addWidget(self.reason)
        self.status = QLabel("Not polled yet")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setAccessibleName("Status")
        layout.addWidget(self.status)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setAccessibleName("Last message")
        self.message.hide()
        layout.addWidget(self.message)
        grid = QGridLayout()
        self.buttons: dict[str, QToolButton] = {}
        commands = [a for a in menu.commands() if a is not menu.autostart]
        for index, action in enumerate(commands):
            button = QToolButton(self)
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            grid.addWidget(button, index // 2, index % 2)
            self.buttons[action.text()] = button
        layout.addLayout(grid)
        # A checkbox reads better than a toggled button for an on/off setting.
        self.autostart = QCheckBox(menu.autostart.text(), self)
        self.autostart.setChecked(menu.autostart.isChecked())
        self.autostart.clicked.connect(lambda _checked: menu.autostart.trigger())
        menu.autostart.toggled.connect(self._sync_autostart)
        layout.addWidget(self.autostart)
        self.setMinimumWidth(440)

    def _sync_autostart(self, checked: bool) -> None:
        if self.autostart.isChecked() != checked:
            self.autostart.setChecked(checked)

    def show_message(self, note: Notification) -> None:
        self.message.setText(note.text)
        colour = "#b3261e" if note.is_error else "palette(text)"
        self.message.setStyleSheet(f"color: {colour};")
        self.message.show()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.tray_present:
            event.accept()
            return
        event.ignore()
        self.showMinimized()
