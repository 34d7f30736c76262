"""The settings dialog: the wizard's pages as tabs, opened from the tray.

OK and Apply check every tab (the first tab with a problem comes to the front,
the problem shown next to its field), then save as the wizard does: the whole
file round-tripped through the loader, passwords into the keyring (renamed
mailboxes take theirs along, removed ones lose theirs), the file written
atomically. ``configSaved(Config)`` then tells the tray to hand the new
config to the worker, which picks it up without a restart.

Passwords are never shown: a field left empty keeps the stored one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from postbridge.app.autostart import Autostart, for_platform
from postbridge.app.delivery_editor import DeliveryEditor
from postbridge.app.fetchmail_import import choose_and_read
from postbridge.app.forms import ERROR_STYLE, note_label
from postbridge.app.mailboxes_editor import MailboxEntry, MailboxList, suggest_name
from postbridge.app.schedule_editor import ScheduleEditor
from postbridge.app.signal_editor import SignalEditor
from postbridge.engine import config as configmod
from postbridge.engine.config import Config
from postbridge.engine.configure import PasswordChanges, save_settings
from postbridge.engine.errors import PostbridgeError, SecretError
from postbridge.engine.importers.draft import ImportDraft
from postbridge.engine.secrets import SecretStore, backend_info

TITLE = "Postbridge settings"


class SettingsDialog(QDialog):
    """Mailboxes, Delivery, Online signal and Schedule tabs; OK / Apply / Cancel."""

    configSaved = Signal(object)

    def __init__(
        self,
        config: Config,
        *,
        secrets: SecretStore | None = None,
        autostart: Autostart | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(TITLE)
        self.secrets = secrets or SecretStore()
        self.config = config
        self.saved_config: Config | None = None
        layout = QVBoxLayout(self)
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs, 1)
        self.mailboxes = MailboxList(stored=self.stored)
        self.delivery = DeliveryEditor(stored=self.stored)
        self.signal = SignalEditor(stored=self.stored)
        self.schedule = ScheduleEditor(autostart=autostart or for_platform(), with_keep=False)
        self.tabs.addTab(self.mailboxes, "Mailboxes")
        self.tabs.addTab(self._padded(self.delivery), "Delivery")
        self.tabs.addTab(self._padded(self.signal), "Online signal")
        self.tabs.addTab(self._padded(self.schedule), "Schedule")
        self.keyring_note = note_label(backend_info().describe())
        layout.addWidget(self.keyring_note)
        self.problem = note_label(style=ERROR_STYLE)
        self.problem.setAccessibleName("Problem")
        self.problem.hide()
        layout.addWidget(self.problem)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Apply
            | QDialogButtonBox.StandardButton.Cancel
        )
        self.import_button = QPushButton("&Import from fetchmail…")
        row = QHBoxLayout()
        row.addWidget(self.import_button)
        row.addStretch(1)
        row.addWidget(self.buttons)
        layout.addLayout(row)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.apply_button = self.buttons.button(QDialogButtonBox.StandardButton.Apply)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.apply_button.clicked.connect(self.apply)
        self.import_button.clicked.connect(self._import)
        self.load(config)
        for editor in (self.mailboxes, self.delivery, self.signal, self.schedule):
            editor.changed.connect(self._edited)
        self.apply_button.setEnabled(False)
        self.resize(860, 720)

    @classmethod
    def from_file(
        cls,
        path: Path,
        *,
        secrets: SecretStore | None = None,
        autostart: Autostart | None = None,
        parent: QWidget | None = None,
    ) -> SettingsDialog:
        """Open the dialog on the config at ``path``; raises ConfigError if it does not load."""
        config = configmod.load(path)
        return cls(config, secrets=secrets, autostart=autostart, parent=parent)

    @staticmethod
    def _padded(editor: QWidget) -> QWidget:
        page = QWidget()
        column = QVBoxLayout(page)
        column.addWidget(editor)
        return page

    def stored(self, account: str) -> str | None:
        """The keyring's password for ``account``; a keyring that fails counts as none."""
        try:
            return self.secrets.get(account)
        except SecretError:
            return None

    def load(self, config: Config) -> None:
        self.config = config
        self.mailboxes.load(config.mailboxes)
        self.delivery.load(config)
        self.signal.load(config.signal)
        self.schedule.load(config.schedule)
        self.show_problem(None)

    def _edited(self) -> None:
        self.apply_button.setEnabled(True)

    def show_problem(self, text: str | None) -> None:
        self.problem.setText(text or "")
        self.problem.setVisible(bool(text))

    # -- saving ---------------------------------------------------------------------------

    def validate(self) -> list[str]:
        """Check every tab; bring the first with a problem to the front."""
        checks = (
            (self.mailboxes, self.mailboxes.validate),
            (self.delivery, self.delivery.validate),
            (self.signal, self.signal.validate),
        )
        for editor, check in checks:
            problems = check()
            if problems:
                self.tabs.setCurrentIndex(self._tab_of(editor))
                return problems
        return []

    def _tab_of(self, editor: QWidget) -> int:
        for index in range(self.tabs.count()):
            page = self.tabs.widget(index)
            if page is not None and (page is editor or page.isAncestorOf(editor)):
                return index
        return 0

    def build_config(self) -> tuple[Config, PasswordChanges]:
        self.mailboxes.commit()
        entries = self.mailboxes.entries
        typed = {e.box.name: e.password for e in entries}
        typed["delivery"] = self.delivery.typed_password()
        typed["signal"] = self.signal.typed_password()
        renamed = {e.box.name: e.original for e in entries if e.original}
        removed = [e.original for e in self.mailboxes.removed if e.original]
        config = replace(
            self.config,
            mailboxes=tuple(e.box for e in entries),
            delivery=self.delivery.value(),
            signal=self.signal.value(),
            schedule=self.schedule.value(),
        )
        return config, PasswordChanges.of(typed, renamed=renamed, removed=removed)

    def apply(self) -> bool:
        """Validate and save; True when saved (the dialog stays open)."""
        problems = self.validate()
        if problems:
            self.show_problem("Please correct the fields marked in red. " + problems[0])
            return False
        try:
            config, changes = self.build_config()
            saved = save_settings(config, changes, secrets=self.secrets)
        except PostbridgeError as error:
            self.show_problem(f"The settings could not be saved: {error}")
            return False
        self.saved_config = saved
        problem = self.schedule.apply_autostart()
        self.load(saved)
        self.show_problem(problem)
        self.apply_button.setEnabled(False)
        self.configSaved.emit(saved)
        return True

    def accept(self) -> None:
        if self.apply():
            super().accept()

    # -- import ----------------------------------------------------------------------------

    def _import(self) -> None:
        draft = choose_and_read(self)
        if draft is not None:
            self.apply_draft(draft)

    def apply_draft(self, draft: ImportDraft) -> None:
        """Add the imported mailboxes and take over delivery, signal and interval."""
        taken = [e.box.name for e in self.mailboxes.entries]
        for box in draft.mailboxes:
            name = suggest_name(box.name, taken)
            taken.append(name)
            password = draft.passwords.get(box.name, "")
            self.mailboxes.add_entry(MailboxEntry(box=replace(box, name=name), password=password))
        if draft.delivery is not None:
            self.delivery.load(replace(self.config, delivery=draft.delivery))
            self.delivery.password.setText(draft.passwords.get("delivery", ""))
        if draft.signal is not None:
            self.signal.load(draft.signal)
            self.signal.password.setText(draft.passwords.get("signal", ""))
        if draft.interval_minutes:
            self.schedule.interval.setValue(draft.interval_minutes)
        self.tabs.setCurrentIndex(0)
        self._edited()
