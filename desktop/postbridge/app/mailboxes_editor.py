"""All ISP mailboxes: a list to add to and remove from, and one mailbox's full editor.

Each list entry remembers the mailbox as edited so far, the name it had in
the keyring when the dialog opened (a rename moves the password along) and a
password typed but not saved yet. Switching entries keeps what was typed;
saving validates every entry and, if one is wrong, selects it so its inline
errors are visible where they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from postbridge.app.forms import Form
from postbridge.app.pop3_editor import Pop3Editor, blank_mailbox
from postbridge.app.routing_editor import RoutingEditor
from postbridge.engine import fields
from postbridge.engine.config import MailboxConfig

StoredLookup = Callable[[str], str | None]


@dataclass
class MailboxEntry:
    box: MailboxConfig
    original: str | None = None  # keyring account when the dialog opened; None: new
    password: str = ""  # typed, not saved yet
    stored: bool = False  # the keyring holds a password under ``original``


def suggest_name(username: str, taken: Sequence[str]) -> str:
    """A mailbox name from the ISP user name: "office@isp.example" -> "office"."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", username.split("@")[0]).strip("-._")[:60]
    base = base or "mailbox"
    if base in ("delivery", "signal"):
        base += "-isp"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


class MailboxEditor(QWidget):
    """Name, on/off, the ISP side (:class:`Pop3Editor`) and routing (:class:`RoutingEditor`)."""

    changed = Signal()

    def __init__(
        self, *, stored: StoredLookup, show_keep: bool = True, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.form = Form()
        self.name = QLineEdit()
        self.form.add(
            "&Name:",
            self.name,
            help_text="A short name for this mailbox in Postbridge (history, notifications).",
        )
        self.enabled = QCheckBox("&Collect mail from this mailbox")
        self.form.add("", self.enabled)
        self.enabled.setAccessibleName("Collect mail from this mailbox")
        layout.addWidget(self.form)
        server_box = QGroupBox("At the ISP")
        server_layout = QVBoxLayout(server_box)
        self.pop3 = Pop3Editor(stored=stored, show_keep=show_keep)
        self.pop3.name_for_test = lambda: self.name.text().strip()
        server_layout.addWidget(self.pop3)
        layout.addWidget(server_box)
        routing_box = QGroupBox("Who gets the mail")
        routing_layout = QVBoxLayout(routing_box)
        self.routing = RoutingEditor(source=self.pop3.mailbox_and_password)
        routing_layout.addWidget(self.routing)
        layout.addWidget(routing_box)
        layout.addStretch(1)
        self.name.textChanged.connect(self.changed)
        self.name.textEdited.connect(self._name_typed)
        self.enabled.toggled.connect(self.changed)
        self.pop3.changed.connect(self.changed)
        self.routing.changed.connect(self.changed)
        self.pop3.username.textChanged.connect(self._username_changed)
        self.taken: Callable[[], Sequence[str]] = list
        self.auto_name = False  # a new mailbox is named after its user name until renamed

    def _name_typed(self) -> None:
        self.auto_name = False

    def _username_changed(self, username: str) -> None:
        if self.auto_name and username.strip():
            self.name.setText(suggest_name(username.strip(), self.taken()))

    def load(self, entry: MailboxEntry) -> None:
        self.auto_name = False
        self.name.setText(entry.box.name)
        self.enabled.setChecked(entry.box.enabled)
        self.pop3.load(entry.box, stored_password=entry.stored, account=entry.original or "")
        self.pop3.password.setText(entry.password)
        self.routing.load(entry.box)
        self.form.show_error(self.name, None)
        self.auto_name = entry.original is None and not entry.box.username

    def commit(self, entry: MailboxEntry) -> None:
        """Copy what is typed into ``entry`` (no checks)."""
        box = replace(entry.box, name=self.name.text().strip(), enabled=self.enabled.isChecked())
        entry.box = self.routing.apply(self.pop3.apply(box))
        entry.password = self.pop3.typed_password()

    def validate(self, *, taken: Sequence[str]) -> list[str]:
        problems = []
        name_problem = fields.check_mailbox_name(self.name.text(), taken=taken)
        if self.form.show_error(self.name, name_problem):
            problems.append(name_problem or "")
        return problems + self.pop3.validate() + self.routing.validate()


class MailboxList(QWidget):
    """The settings tab: mailboxes on the left, the selected one's editor on the right."""

    changed = Signal()

    def __init__(self, *, stored: StoredLookup, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.stored = stored
        self.entries: list[MailboxEntry] = []
        self.removed: list[MailboxEntry] = []
        row = QHBoxLayout(self)
        left = QVBoxLayout()
        caption = QLabel("ISP &mailboxes:")
        self.list = QListWidget()
        self.list.setMaximumWidth(220)
        caption.setBuddy(self.list)
        self.list.setAccessibleName("ISP mailboxes")
        self.add_button = QPushButton("A&dd mailbox")
        self.remove_button = QPushButton("Remo&ve mailbox")
        left.addWidget(caption)
        left.addWidget(self.list, 1)
        left.addWidget(self.add_button)
        left.addWidget(self.remove_button)
        row.addLayout(left)
        self.editor = MailboxEditor(stored=stored)
        self.editor.taken = self._other_names
        self.scroller = QScrollArea()
        self.scroller.setWidget(self.editor)
        self.scroller.setWidgetResizable(True)
        self.scroller.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.empty = QLabel("No mailbox yet. Choose “Add mailbox” to set one up.")
        self.empty.setWordWrap(True)
        row.addWidget(self.scroller, 1)
        row.addWidget(self.empty, 1)
        self.current = -1
        self.list.currentRowChanged.connect(self._select)
        self.add_button.clicked.connect(self.add_new)
        self.remove_button.clicked.connect(self.remove_current)
        self.editor.changed.connect(self._edited)
        self._refresh_empty()

    def load(self, boxes: Sequence[MailboxConfig]) -> None:
        self.entries = [
            MailboxEntry(box=b, original=b.name, stored=self.stored(b.name) is not None)
            for b in boxes
        ]
        self.removed = []
        self.current = -1
        self.list.clear()
        for entry in self.entries:
            self.list.addItem(QListWidgetItem(self._label(entry)))
        if self.entries:
            self.list.setCurrentRow(0)
        self._refresh_empty()

    def add_entry(self, entry: MailboxEntry) -> None:
        self.commit()
        self.entries.append(entry)
        self.list.addItem(QListWidgetItem(self._label(entry)))
        self.list.setCurrentRow(len(self.entries) - 1)
        self._refresh_empty()
        self.changed.emit()

    def add_new(self) -> None:
        name = suggest_name("mailbox", [e.box.name for e in self.entries])
        self.add_entry(MailboxEntry(box=blank_mailbox(name)))
        self.editor.pop3.host.setFocus()

    def remove_current(self) -> None:
        row = self.list.currentRow()
        if row < 0:
            return
        entry = self.entries.pop(row)
        if entry.original is not None:
            self.removed.append(entry)
        self.current = -1
        self.list.takeItem(row)
        self._refresh_empty()
        self.changed.emit()

    def commit(self) -> None:
        if 0 <= self.current < len(self.entries):
            self.editor.commit(self.entries[self.current])
            item = self.list.item(self.current)
            if item is not None:
                item.setText(self._label(self.entries[self.current]))

    def validate(self) -> list[str]:
        """Check every mailbox; the first one with a problem is selected to show it."""
        self.commit()
        selected = self.list.currentRow()
        for row, entry in enumerate(self.entries):
            self.list.setCurrentRow(row)
            taken = [e.box.name for i, e in enumerate(self.entries) if i != row]
            problems = self.editor.validate(taken=taken)
            if problems:
                return [f"Mailbox “{entry.box.name or row + 1}”: {p}" for p in problems]
        self.list.setCurrentRow(selected)
        return []

    def _other_names(self) -> list[str]:
        return [e.box.name for i, e in enumerate(self.entries) if i != self.current]

    def _select(self, row: int) -> None:
        self.commit()
        self.current = row
        if 0 <= row < len(self.entries):
            self.editor.load(self.entries[row])
        self._refresh_empty()

    def _edited(self) -> None:
        if 0 <= self.current < len(self.entries):
            item = self.list.item(self.current)
            if item is not None:
                item.setText(self.editor.name.text().strip() or "(no name)")
        self.changed.emit()

    def _refresh_empty(self) -> None:
        has = bool(self.entries)
        self.scroller.setVisible(has)
        self.empty.setVisible(not has)
        self.remove_button.setEnabled(has)

    @staticmethod
    def _label(entry: MailboxEntry) -> str:
        return entry.box.name or "(no name)"


class MailboxDialog(QDialog):
    """The wizard's "Add another mailbox": one whole mailbox in a dialog of its own."""

    def __init__(
        self,
        *,
        stored: StoredLookup,
        taken: Sequence[str],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add an ISP mailbox")
        self.taken = list(taken)
        self.entry = MailboxEntry(box=blank_mailbox(suggest_name("mailbox", self.taken)))
        layout = QVBoxLayout(self)
        # The wizard's last page sets "leave a copy" for every mailbox at once.
        self.editor = MailboxEditor(stored=stored, show_keep=False)
        self.editor.taken = lambda: self.taken
        self.editor.load(self.entry)
        scroll = QScrollArea()
        scroll.setWidget(self.editor)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout.addWidget(scroll, 1)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        layout.addWidget(self.buttons)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.resize(640, 720)

    def accept(self) -> None:
        self.editor.commit(self.entry)
        if not self.editor.validate(taken=self.taken):
            super().accept()
