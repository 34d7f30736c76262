"""The window shown while Postbridge has no configuration file yet.

The first-run wizard (a later issue) will take this place. Until then the one
thing a user needs is *where* the file goes, with a way to open that folder
and a way to say "I have written it now" without restarting the app.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from postbridge.app.status import APP_TITLE


class NoConfigWindow(QWidget):
    openFolderRequested = Signal()
    checkRequested = Signal()

    def __init__(self, config_path: Path, icon: QIcon | None = None) -> None:
        super().__init__()
        self.setWindowTitle(f"{APP_TITLE} — not set up yet")
        if icon is not None:
            self.setWindowIcon(icon)
        layout = QVBoxLayout(self)
        heading = QLabel("<b>Postbridge is not set up yet.</b>")
        layout.addWidget(heading)
        intro = QLabel(
            "It reads its mailboxes and delivery settings from one configuration file, "
            "which does not exist yet. Create it at this place (the README shows an example), "
            "then choose “Check again”:"
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.path_label = QLabel(str(config_path))
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.path_label.setAccessibleName("Configuration file")
        self.path_label.setStyleSheet("font-family: monospace; padding: 6px;")
        self.path_label.setWordWrap(True)
        layout.addWidget(self.path_label)
        passwords = QLabel(
            "Passwords do not go in the file: store each with "
            "<code>postbridge secret set NAME</code>."
        )
        passwords.setWordWrap(True)
        layout.addWidget(passwords)
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #b3261e;")
        self.problem.hide()
        layout.addWidget(self.problem)
        buttons = QHBoxLayout()
        self.open_button = QPushButton("&Open folder")
        self.check_button = QPushButton("&Check again")
        self.close_button = QPushButton("Close")
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.check_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        layout.addLayout(buttons)
        self.open_button.clicked.connect(self.openFolderRequested)
        self.check_button.clicked.connect(self.checkRequested)
        self.close_button.clicked.connect(self.close)
        self.setMinimumWidth(520)

    def show_problem(self, text: str | None) -> None:
        self.problem.setText(text or "")
        self.problem.setVisible(bool(text))
