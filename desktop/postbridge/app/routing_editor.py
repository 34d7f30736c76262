"""Who gets the mail of one ISP mailbox: one person, or the whole office by its rules.

A *user mailbox* belongs to one person: everything in it goes to one office
address. A *global mailbox* receives mail for whole domains; Postbridge reads
each message's recipients and delivers to the matching people, by the local
domains, the address map (exceptions and aliases) and a postmaster for the
rest. The envelope header is where the ISP wrote the real recipient; it is
what lets Bcc copies arrive, and "Detect" reads the newest messages' headers
(TOP only, nothing is downloaded or deleted) to suggest it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from postbridge.app.background import CoroutineFactory
from postbridge.app.forms import Form, PageStack, TestPanel
from postbridge.app.mapping_model import MappingModel
from postbridge.engine import fields
from postbridge.engine.checks import detect_envelope
from postbridge.engine.config import ENVELOPE_HEADERS, MailboxConfig
from postbridge.engine.routing.router import EnvelopeSuggestion

ENVELOPE_CHOICES = [
    ("auto", "Detect automatically (recommended)"),
    ("none", "None — use To and Cc only (Bcc copies are lost)"),
    *[(h, h) for h in ENVELOPE_HEADERS if h not in ("auto", "none")],
]
MailboxSource = Callable[[], "tuple[MailboxConfig, str] | str"]


def explain_suggestion(result: object) -> str:
    assert isinstance(result, EnvelopeSuggestion)
    if result.header:
        return (
            f"Your ISP writes the recipient into {result.header}; it has been chosen above. "
            f"({result.messages} message(s) examined.)"
        )
    if result.messages:
        return (
            f"No envelope header names your people in the {result.messages} message(s) "
            "examined, so routing will use To and Cc. " + " ".join(result.evidence)
        ).strip()
    return "The mailbox is empty; Detect needs a few messages to look at. Try again later."


class RoutingEditor(QWidget):
    """User or global mailbox, and the global mailbox's routing rules."""

    changed = Signal()

    def __init__(self, *, source: MailboxSource, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = source
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.user_radio = QRadioButton("&One person — everything in it goes to one address")
        self.global_radio = QRadioButton(
            "&Everyone in the office — it receives mail for whole domains"
        )
        self.kind_group = QButtonGroup(self)
        self.kind_group.addButton(self.user_radio)
        self.kind_group.addButton(self.global_radio)
        self.user_radio.setChecked(True)
        layout.addWidget(self.user_radio)
        layout.addWidget(self.global_radio)
        self.stack = PageStack()
        layout.addWidget(self.stack, 1)
        self.user_form = Form()
        self.recipient = QLineEdit()
        self.recipient.setPlaceholderText("alice@example.com")
        self.user_form.add(
            "&Deliver to:",
            self.recipient,
            help_text="The office address that gets every message from this ISP mailbox.",
        )
        self.stack.addWidget(self.user_form)
        self.global_form = Form()
        self.stack.addWidget(self.global_form)
        self._build_global()
        self.user_radio.toggled.connect(self._kind_changed)
        self.recipient.textChanged.connect(self.changed)
        self._base: MailboxConfig | None = None

    def _build_global(self) -> None:
        f = self.global_form
        self.domains = QLineEdit()
        self.domains.setPlaceholderText("example.com, example.org")
        f.add(
            "Local do&mains:",
            self.domains,
            help_text="The office's own domains. Only addresses in them are delivered; "
            "mail for other domains is never sent on.",
        )
        self.postmaster = QLineEdit()
        self.postmaster.setPlaceholderText("admin@example.com")
        f.add(
            "&Postmaster:",
            self.postmaster,
            help_text="Gets the messages no rule matches. Leave empty to keep them in "
            "quarantine (Activity window) instead.",
        )
        self.envelope = QComboBox()
        for value, text in ENVELOPE_CHOICES:
            self.envelope.addItem(text, value)
        f.add(
            "Envelope &header:",
            self.envelope,
            help_text="Where your ISP records the real recipient of each message; needed "
            "to deliver Bcc copies.",
        )
        self.detect = TestPanel(
            "De&tect",
            prepare=self._prepare_detect,
            describe=self._detected,
            busy_text="Reading the headers of the newest messages…",
        )
        f.add_wide(self.detect)
        self.map_model = MappingModel(self)
        self.map_view = QTableView()
        self.map_view.setModel(self.map_model)
        self.map_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.map_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.map_view.verticalHeader().setVisible(False)
        rows = self.map_view.verticalHeader().defaultSectionSize()
        header = self.map_view.horizontalHeader().sizeHint().height()
        self.map_view.setFixedHeight(header + 4 * rows + 2 * self.map_view.frameWidth())
        self.map_view.setTabKeyNavigation(False)  # Tab leaves the table, arrows move inside
        buttons = QHBoxLayout()
        self.add_rule = QPushButton("&Add rule")
        self.remove_rule = QPushButton("&Remove rule")
        self.import_rules = QPushButton("&Import CSV…")
        for button in (self.add_rule, self.remove_rule, self.import_rules):
            buttons.addWidget(button)
        buttons.addStretch(1)
        box = QWidget()
        box.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        column = QVBoxLayout(box)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.map_view)
        column.addLayout(buttons)
        f.add(
            "Address &map:",
            box,
            focus=self.map_view,
            help_text="Exceptions and aliases: mail sent to an address (or *@domain for the "
            "rest of a domain) goes to the people listed instead. Separate several with commas.",
        )
        self.add_rule.clicked.connect(self._add_rule)
        self.remove_rule.clicked.connect(self._remove_rules)
        self.import_rules.clicked.connect(self._import_csv)
        self.domains.textChanged.connect(self._domains_changed)
        self.postmaster.textChanged.connect(self.changed)
        self.envelope.currentIndexChanged.connect(self.changed)
        self.map_model.dataChanged.connect(self.changed)
        self.map_model.rowsInserted.connect(self.changed)
        self.map_model.rowsRemoved.connect(self.changed)

    # -- loading and reading -------------------------------------------------------------

    def load(self, box: MailboxConfig) -> None:
        self._base = box
        (self.global_radio if box.kind == "global" else self.user_radio).setChecked(True)
        self.recipient.setText(box.recipient)
        self.domains.setText(", ".join(box.local_domains))
        self.postmaster.setText(box.postmaster)
        lowered = [value.lower() for value, _ in ENVELOPE_CHOICES]  # the file may use any case
        wanted = box.envelope_header.lower()
        self.envelope.setCurrentIndex(lowered.index(wanted) if wanted in lowered else 0)
        self.map_model.load(box.address_map)
        self.map_model.set_local_domains(box.local_domains)
        self.detect.clear()
        self._kind_changed()
        for form in (self.user_form, self.global_form):
            for field in form.errors:
                form.show_error(field, None)

    def is_global(self) -> bool:
        return self.global_radio.isChecked()

    def apply(self, box: MailboxConfig) -> MailboxConfig:
        if not self.is_global():
            return replace(
                box,
                kind="user",
                recipient=self.recipient.text().strip().lower(),
                local_domains=(),
                postmaster="",
                address_map={},
                envelope_header="auto",
            )
        return replace(
            box,
            kind="global",
            recipient="",
            local_domains=tuple(d.lower() for d in fields.split_list(self.domains.text())),
            postmaster=self.postmaster.text().strip().lower(),
            envelope_header=str(self.envelope.currentData()),
            address_map=self.map_model.value(),
        )

    def _kind_changed(self) -> None:
        self.stack.setCurrentWidget(self.global_form if self.is_global() else self.user_form)
        self.changed.emit()

    def _domains_changed(self) -> None:
        self.map_model.set_local_domains(fields.split_list(self.domains.text()))
        self.changed.emit()

    # -- checks --------------------------------------------------------------------------

    def validate(self) -> list[str]:
        if not self.is_global():
            problem = fields.check_address(self.recipient.text(), what="the recipient's address")
            self.user_form.show_error(self.recipient, problem)
            return [problem] if problem else []
        f = self.global_form
        domains = fields.split_list(self.domains.text())
        postmaster = self.postmaster.text().strip()
        checks = {
            self.domains: fields.check_domains(domains),
            self.postmaster: fields.check_address(postmaster) if postmaster else None,
            self.map_view: "; ".join(self.map_model.problems()) or None,
        }
        return [p for field, p in checks.items() if f.show_error(field, p) and p]

    # -- buttons -------------------------------------------------------------------------

    def _add_rule(self) -> None:
        row = self.map_model.add_rule()
        index = self.map_model.index(row, 0)
        self.map_view.setCurrentIndex(index)
        self.map_view.edit(index)

    def _remove_rules(self) -> None:
        rows = {i.row() for i in self.map_view.selectionModel().selectedIndexes()}
        if not rows and self.map_view.currentIndex().isValid():
            rows = {self.map_view.currentIndex().row()}
        self.map_model.remove_rows(rows)

    def _import_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import address map", str(Path.home()), "CSV files (*.csv *.txt);;All files (*)"
        )
        if path:
            self.import_csv_file(Path(path))

    def import_csv_file(self, path: Path) -> str:
        """Add the rules of a CSV file; show and return what happened in words."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            words = f"Could not read {path.name}: {error}"
        else:
            added, skipped = self.map_model.import_csv(text)
            words = f"Imported {added} rule(s) from {path.name}."
            if skipped:
                words += " Not imported: " + "; ".join(skipped)
        self.global_form.show_error(self.map_view, None)
        self.detect.result.setText(words)
        return words

    def _prepare_detect(self) -> CoroutineFactory | str:
        got = self.source()
        if isinstance(got, str):
            return got
        box, password = got
        domains = fields.split_list(self.domains.text())
        if fields.check_domains(domains):
            self.validate()
            return "Enter the local domains first: Detect looks for your people's addresses."
        box = self.apply(box)
        return lambda: detect_envelope(box, password)

    def _detected(self, result: object) -> str:
        if isinstance(result, EnvelopeSuggestion) and result.header:
            index = self.envelope.findData(result.header)
            if index >= 0:
                self.envelope.setCurrentIndex(index)
        elif isinstance(result, EnvelopeSuggestion) and result.messages:
            self.envelope.setCurrentIndex(self.envelope.findData("none"))
        return explain_suggestion(result)
