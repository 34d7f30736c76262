"""The first-run wizard: from nothing to a working configuration in five pages.

In the spirit of the old "connection wizards": ISP mailbox (with Test), who
gets its mail (one person or the whole office, with Detect for the envelope
header, and more mailboxes if there are), where mail is delivered (with Test),
the online signal (with Test), and the schedule. Every page checks its fields
when Next is pressed and shows what is wrong next to the field; Finish checks
the whole file the way the loader will read it, stores the passwords in the
keyring, writes the file and only then closes.

The tray calls :func:`run_first_run` when there is no config file; it returns
whether one was written, and the worker can start polling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from postbridge.app.autostart import Autostart, for_platform
from postbridge.app.delivery_editor import DeliveryEditor
from postbridge.app.fetchmail_import import choose_and_read
from postbridge.app.forms import ERROR_STYLE, note_label
from postbridge.app.mailboxes_editor import MailboxDialog, MailboxEntry, suggest_name
from postbridge.app.pop3_editor import Pop3Editor, blank_mailbox
from postbridge.app.routing_editor import RoutingEditor
from postbridge.app.schedule_editor import ScheduleEditor
from postbridge.app.signal_editor import SignalEditor
from postbridge.engine.config import Config, DeliveryConfig, ScheduleConfig
from postbridge.engine.configure import PasswordChanges, save_settings
from postbridge.engine.errors import PostbridgeError
from postbridge.engine.importers.draft import ImportDraft
from postbridge.engine.paths import default_data_dir
from postbridge.engine.secrets import SecretStore

TITLE = "Set up Postbridge"


class EditorPage(QWizardPage):
    """A wizard page around one editor; Next runs the editor's checks."""

    def __init__(
        self,
        title: str,
        subtitle: str,
        editor: QWidget,
        *,
        validate: Callable[[], list[str]],
        scroll: bool = False,
    ) -> None:
        super().__init__()
        self.validate = validate
        self.setTitle(title)
        self.setSubTitle(subtitle)
        self.editor = editor
        layout = QVBoxLayout(self)
        if scroll:
            area = QScrollArea()
            area.setWidget(editor)
            area.setWidgetResizable(True)
            area.setFrameShape(QScrollArea.Shape.NoFrame)
            area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            layout.addWidget(area, 1)
        else:
            layout.addWidget(editor)
        self.extra = QVBoxLayout()
        layout.addLayout(self.extra)
        self.problem = note_label(style=ERROR_STYLE)
        self.problem.setAccessibleName("Problem")
        self.problem.hide()
        layout.addWidget(self.problem)

    def show_problem(self, text: str | None) -> None:
        self.problem.setText(text or "")
        self.problem.setVisible(bool(text))

    def validatePage(self) -> bool:
        problems = self.validate()
        self.show_problem("Please correct the fields marked in red." if problems else None)
        return not problems


class FirstRunWizard(QWizard):
    """Five pages to a saved config; ``configSaved(Config)`` when Finish wrote it."""

    configSaved = Signal(object)

    def __init__(
        self,
        config_path: Path,
        *,
        secrets: SecretStore | None = None,
        autostart: Autostart | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.config_path = config_path
        self.secrets = secrets or SecretStore()
        self.saved_config: Config | None = None
        self.extra: list[MailboxEntry] = []
        self.setWindowTitle(TITLE)
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage)
        self.setOption(QWizard.WizardOption.HaveCustomButton1)
        self.setButtonText(QWizard.WizardButton.CustomButton1, "&Import from fetchmail…")
        self.setButtonLayout(
            [
                QWizard.WizardButton.CustomButton1,
                QWizard.WizardButton.Stretch,
                QWizard.WizardButton.BackButton,
                QWizard.WizardButton.NextButton,
                QWizard.WizardButton.FinishButton,
                QWizard.WizardButton.CancelButton,
            ]
        )
        self.customButtonClicked.connect(self._custom_button)
        base = Config(
            path=config_path, data_dir=default_data_dir(), delivery=DeliveryConfig(), mailboxes=()
        )
        self.pop3 = Pop3Editor(show_keep=False, stored=lambda account: None)
        self.routing = RoutingEditor(source=self.pop3.mailbox_and_password)
        self.delivery = DeliveryEditor()
        self.delivery.load(base)
        self.signal = SignalEditor()
        self.signal.load(None)
        self.schedule = ScheduleEditor(autostart=autostart or for_platform(), with_keep=True)
        self.schedule.load(ScheduleConfig())
        self.pop3.load(blank_mailbox(), stored_password=False)
        self.routing.load(blank_mailbox())
        self.pop3.name_for_test = self._first_name
        self.pop3_page = EditorPage(
            "Your ISP mailbox",
            "The POP3 mailbox at your Internet provider where your mail waits. The details are "
            "in the letter or e-mail the provider sent you.",
            self.pop3,
            validate=self.pop3.validate,
        )
        self.routing_page = EditorPage(
            "Who gets its mail",
            "A mailbox may belong to one person, or receive the mail of the whole office.",
            self.routing,
            validate=self.routing.validate,
            scroll=True,
        )
        self._build_more_mailboxes()
        self.delivery_page = EditorPage(
            "Where the mail goes",
            "Postbridge hands every message to the office's mail server, or keeps it in "
            "folders on this computer.",
            self.delivery,
            validate=self.delivery.validate,
        )
        self.signal_page = EditorPage(
            "Mail held by the ISP",
            "Some providers keep the office's mail until told the office is online. If yours "
            "does not, keep “No signal”.",
            self.signal,
            validate=self.signal.validate,
        )
        self.schedule_page = EditorPage(
            "When to check",
            "Postbridge checks on a schedule while it runs in the notification area.",
            self.schedule,
            validate=list,
        )
        for page in (
            self.pop3_page,
            self.routing_page,
            self.delivery_page,
            self.signal_page,
            self.schedule_page,
        ):
            self.addPage(page)
        self.resize(760, 680)

    # -- the extra mailboxes -------------------------------------------------------------

    def _build_more_mailboxes(self) -> None:
        group = QGroupBox("More ISP mailboxes")
        column = QVBoxLayout(group)
        column.addWidget(
            note_label("If the office has further mailboxes at the ISP, add them here.")
        )
        self.more_list = QListWidget()
        self.more_list.setAccessibleName("More ISP mailboxes")
        self.more_list.setMaximumHeight(80)
        column.addWidget(self.more_list)
        buttons = QHBoxLayout()
        self.add_more = QPushButton("Add another mailbo&x…")
        self.remove_more = QPushButton("Remove the selected mailbox")
        buttons.addWidget(self.add_more)
        buttons.addWidget(self.remove_more)
        buttons.addStretch(1)
        column.addLayout(buttons)
        self.routing_page.extra.addWidget(group)
        self.add_more.clicked.connect(self.add_mailbox)
        self.remove_more.clicked.connect(self._remove_mailbox)
        self._refresh_more()

    def add_mailbox(self) -> MailboxDialog:
        dialog = MailboxDialog(
            stored=lambda account: None,
            taken=[self._first_name(), *self._extra_names()],
            parent=self,
        )
        dialog.accepted.connect(lambda: self._added(dialog.entry))
        dialog.open()
        return dialog

    def _added(self, entry: MailboxEntry) -> None:
        self.extra.append(entry)
        self._refresh_more()

    def _remove_mailbox(self) -> None:
        row = self.more_list.currentRow()
        if 0 <= row < len(self.extra):
            del self.extra[row]
            self._refresh_more()

    def _refresh_more(self) -> None:
        self.more_list.clear()
        for entry in self.extra:
            self.more_list.addItem(f"{entry.box.name} — {entry.box.username} at {entry.box.host}")
        self.more_list.setVisible(bool(self.extra))
        self.remove_more.setEnabled(bool(self.extra))

    def _extra_names(self) -> list[str]:
        return [e.box.name for e in self.extra]

    def _first_name(self) -> str:
        return suggest_name(self.pop3.username.text().strip(), self._extra_names())

    # -- result ---------------------------------------------------------------------------

    def build_config(self) -> tuple[Config, PasswordChanges]:
        """The config the pages describe, and the passwords typed into them."""
        keep = self.schedule.keep_days.value()
        first = self.routing.apply(self.pop3.apply(blank_mailbox(self._first_name())))
        boxes = [first, *(e.box for e in self.extra)]
        boxes = [replace(b, leave_on_server_days=keep) for b in boxes]
        typed = {first.name: self.pop3.typed_password()}
        typed.update({e.box.name: e.password for e in self.extra})
        typed["delivery"] = self.delivery.typed_password()
        typed["signal"] = self.signal.typed_password()
        config = Config(
            path=self.config_path,
            data_dir=default_data_dir(),
            delivery=self.delivery.value(),
            mailboxes=tuple(boxes),
            schedule=self.schedule.value(),
            signal=self.signal.value(),
        )
        return config, PasswordChanges.of(typed)

    def validateCurrentPage(self) -> bool:
        if not super().validateCurrentPage():
            return False
        if self.currentPage() is not self.schedule_page:
            return True
        return self.finish()

    def finish(self) -> bool:
        """Check the whole file, store passwords, write it; show why not if that fails."""
        try:
            config, changes = self.build_config()
            self.saved_config = save_settings(config, changes, secrets=self.secrets)
        except PostbridgeError as error:
            self.schedule_page.show_problem(f"The settings could not be saved: {error}")
            return False
        problem = self.schedule.apply_autostart()
        if problem:
            self.schedule_page.show_problem(problem)
        self.configSaved.emit(self.saved_config)
        return True

    # -- import ----------------------------------------------------------------------------

    def _custom_button(self, which: int) -> None:
        if which == QWizard.WizardButton.CustomButton1.value:
            draft = choose_and_read(self)
            if draft is not None:
                self.apply_draft(draft)

    def apply_draft(self, draft: ImportDraft) -> None:
        """Fill the pages from an import; the passwords wait in the fields until Finish."""
        boxes = list(draft.mailboxes)
        if boxes:
            first = boxes.pop(0)
            self.pop3.load(first, stored_password=False)
            self.pop3.password.setText(draft.passwords.get(first.name, ""))
            self.routing.load(first)
            self.schedule.keep_days.setValue(first.leave_on_server_days)
        self.extra = [MailboxEntry(box=b, password=draft.passwords.get(b.name, "")) for b in boxes]
        self._refresh_more()
        if draft.delivery is not None:
            self.delivery.load(
                Config(
                    path=self.config_path,
                    data_dir=default_data_dir(),
                    delivery=draft.delivery,
                    mailboxes=(),
                )
            )
            self.delivery.password.setText(draft.passwords.get("delivery", ""))
        if draft.signal is not None:
            self.signal.load(draft.signal)
            self.signal.password.setText(draft.passwords.get("signal", ""))
        if draft.interval_minutes:
            self.schedule.interval.setValue(draft.interval_minutes)
        self.restart()


def run_first_run(
    parent: QWidget | None,
    config_path: Path,
    *,
    secrets: SecretStore | None = None,
    autostart: Autostart | None = None,
) -> bool:
    """Show the wizard modally; True when it wrote ``config_path`` (start polling then)."""
    wizard = FirstRunWizard(config_path, secrets=secrets, autostart=autostart, parent=parent)
    return wizard.exec() == QDialog.DialogCode.Accepted and wizard.saved_config is not None


__all__ = ["FirstRunWizard", "run_first_run"]
