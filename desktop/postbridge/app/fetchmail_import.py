"""The "Import from fetchmail…" button: pick a fetchmailrc, see what comes over, accept it.

The report lists everything, in three groups: what the user must still fill
in, what was imported differently, and what was not imported at all (with the
line and the reason). Only when the user accepts it are the pages filled; the
passwords go into the password fields and from there into the keyring when the
settings are saved, so cancelling the wizard leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from postbridge.engine.errors import PostbridgeError
from postbridge.engine.importers.draft import ImportDraft
from postbridge.engine.importers.fetchmail import load


class ImportReport(QDialog):
    """What an import would bring over; Accept fills the pages."""

    def __init__(self, path: Path, draft: ImportDraft, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import from fetchmail")
        layout = QVBoxLayout(self)
        intro = QLabel(
            f"Read {path}. Check the list below; choose “Use these settings” to fill in the "
            "pages (nothing is saved until you finish), or Cancel."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.text = QPlainTextEdit(draft.summary())
        self.text.setReadOnly(True)
        self.text.setAccessibleName("Import report")
        layout.addWidget(self.text, 1)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.use_button = self.buttons.addButton(
            "&Use these settings", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.use_button.setEnabled(bool(draft.mailboxes or draft.signal or draft.delivery))
        self.use_button.setDefault(True)
        layout.addWidget(self.buttons)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.resize(720, 480)


def default_rcfile() -> Path:
    return Path.home() / ".fetchmailrc"


def read_draft(parent: QWidget, path: Path) -> ImportDraft | None:
    """Load ``path`` and show the report; the draft if the user accepts it."""
    try:
        draft = load(path)
    except PostbridgeError as error:
        QMessageBox.warning(parent, "Import from fetchmail", str(error))
        return None
    report = ImportReport(path, draft, parent)
    return draft if report.exec() == QDialog.DialogCode.Accepted else None


def choose_and_read(parent: QWidget) -> ImportDraft | None:
    start = default_rcfile()
    path, _ = QFileDialog.getOpenFileName(
        parent,
        "Import from fetchmail",
        str(start if start.exists() else Path.home()),
        "fetchmail settings (.fetchmailrc *.rc fetchmailrc);;All files (*)",
    )
    return read_draft(parent, Path(path)) if path else None
