"""The online signal: telling an ISP that holds the office's mail to release it.

Most offices need none: their mail waits in POP3 mailboxes. Some ISPs instead
queue the mail for the office's domains and release it on request:

* ETRN (RFC 1985): Postbridge asks, and the ISP then delivers to the office's
  own mail server by itself (which must be reachable from the Internet).
* ATRN (RFC 2645, On-Demand Mail Relay): Postbridge logs in to the ISP
  (port 366) and the ISP sends the held mail down that same connection.

"Test" sends ETRN for real (harmless: the ISP starts delivering, as after a
poll) and, for ATRN, logs in and checks that ATRN is offered without asking
for the mail.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QLineEdit,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from postbridge.app.background import CoroutineFactory
from postbridge.app.forms import Form, PasswordEdit, PathField, PortBox, SecurityCombo, TestPanel
from postbridge.engine import fields
from postbridge.engine.checks import check_signal
from postbridge.engine.config import Security, SignalConfig, SignalKind

ACCOUNT = "signal"
PORTS: dict[SignalKind, dict[Security, int]] = {
    "none": {"tls": 465, "starttls": 25, "none": 25},
    "etrn": {"tls": 465, "starttls": 25, "none": 25},
    "atrn": {"tls": 366, "starttls": 366, "none": 366},
}


class SignalEditor(QWidget):
    changed = Signal()

    def __init__(
        self,
        *,
        stored: Callable[[str], str | None] = lambda account: None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.stored_password = stored
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.none_radio = QRadioButton("&No signal — my mail waits in the POP3 mailboxes")
        self.etrn_radio = QRadioButton(
            "&ETRN — ask the ISP to send the held mail to our mail server"
        )
        self.atrn_radio = QRadioButton(
            "&ATRN — fetch the held mail over Postbridge's own connection (On-Demand Mail Relay)"
        )
        self.kinds: dict[SignalKind, QRadioButton] = {
            "none": self.none_radio,
            "etrn": self.etrn_radio,
            "atrn": self.atrn_radio,
        }
        group = QButtonGroup(self)
        for radio in self.kinds.values():
            group.addButton(radio)
            layout.addWidget(radio)
        self.none_radio.setChecked(True)
        self.details = QWidget()
        details = QVBoxLayout(self.details)
        details.setContentsMargins(0, 0, 0, 0)
        self.form = Form()
        details.addWidget(self.form)
        self._build_form()
        self.test = TestPanel("&Test signal", prepare=self._prepare_test, busy_text="Sending…")
        details.addWidget(self.test)
        layout.addWidget(self.details)
        layout.addStretch(1)
        self._base = SignalConfig()
        for radio in self.kinds.values():
            radio.toggled.connect(self._kind_changed)
        self.changed.connect(self.test.clear)  # a result about other settings would mislead
        self._kind_changed()

    def _build_form(self) -> None:
        f = self.form
        self.host = QLineEdit()
        self.host.setPlaceholderText("mail.isp.example")
        self.security = SecurityCombo()
        self.security.set_value("starttls")
        self.port = PortBox(PORTS["etrn"])
        self.domains = QLineEdit()
        self.domains.setPlaceholderText("example.com")
        self.username = QLineEdit()
        self.password = PasswordEdit()
        self.plaintext = QCheckBox("Send the password &unencrypted anyway")
        self.when = QComboBox()
        self.when.addItem("Before every poll", "before-poll")
        self.when.addItem("On its own, at the poll interval", "interval")
        self.ca_file = PathField(folder=False, caption="Extra trusted certificate")
        f.add("ISP's &server:", self.host)
        f.add("Se&curity:", self.security)
        f.add("&Port:", self.port)
        f.add(
            "&Domains:",
            self.domains,
            help_text="The office's domains whose mail the ISP holds, separated by commas.",
        )
        f.add("&Login name:", self.username)
        f.add("Pass&word:", self.password)
        f.add("", self.plaintext, help_text="Without encryption the password can be read.")
        self.plaintext.setAccessibleName("Send the password unencrypted anyway")
        f.add("Send &when:", self.when)
        f.add(
            "Extra trusted certi&ficate:",
            self.ca_file,
            focus=self.ca_file.edit,
            help_text="Usually empty; only for an ISP certificate your computer does not know.",
        )
        self.security.currentIndexChanged.connect(self._refresh)
        for edit in (self.host, self.domains, self.username, self.password):
            edit.textChanged.connect(self._refresh)
        self.port.valueChanged.connect(self.changed)
        self.plaintext.toggled.connect(self.changed)
        self.when.currentIndexChanged.connect(self.changed)
        self.ca_file.changed.connect(self.changed)

    # -- loading and reading -------------------------------------------------------------

    def kind(self) -> SignalKind:
        return next(k for k, radio in self.kinds.items() if radio.isChecked())

    def load(self, signal: SignalConfig | None) -> None:
        cfg = signal or SignalConfig()
        self._base = cfg
        self.kinds[cfg.kind].setChecked(True)
        self.host.setText(cfg.host)
        self.security.set_value(cfg.security)
        self.port.defaults = PORTS[cfg.kind]
        self.port.load(cfg.port or self.port.defaults[cfg.security])
        self.domains.setText(", ".join(cfg.domains))
        self.username.setText(cfg.username)
        self.password.clear()
        self.password.set_stored(self.stored_password(ACCOUNT) is not None)
        self.plaintext.setChecked(cfg.allow_plaintext_login)
        self.when.setCurrentIndex(max(0, self.when.findData(cfg.when)))
        self.ca_file.set_path(cfg.ca_file)
        self.test.clear()
        self._kind_changed()
        for field in self.form.errors:
            self.form.show_error(field, None)

    def value(self) -> SignalConfig | None:
        kind = self.kind()
        if kind == "none":
            return None
        security = self.security.value()
        username = self.username.text().strip()
        return SignalConfig(
            kind=kind,
            host=self.host.text().strip(),
            port=self.port.value(),
            security=security,
            domains=tuple(dict.fromkeys(d.lower() for d in fields.split_list(self.domains.text()))),
            username=username,
            ca_file=self.ca_file.path(),
            when=self.when.currentData(),
            allow_plaintext_login=security == "none"
            and bool(username)
            and self.plaintext.isChecked(),
            timeout=self._base.timeout,
            interval_minutes=self._base.interval_minutes,
            watch_seconds=self._base.watch_seconds,
        )

    def typed_password(self) -> str:
        return self.password.text() if self.kind() != "none" else ""

    def _kind_changed(self) -> None:
        kind = self.kind()
        self.details.setVisible(kind != "none")
        if kind != "none":
            old = self.port.defaults
            self.port.defaults = PORTS[kind]
            self.port.custom = self.port.value() not in old.values()
        self._refresh()

    def _refresh(self) -> None:
        self.port.follow(self.security.value())
        needs_login = self.kind() == "atrn" or bool(self.username.text().strip())
        self.form.set_row_visible(self.password, needs_login)
        self.form.set_row_visible(self.plaintext, needs_login and self.security.value() == "none")
        self.changed.emit()

    # -- checks --------------------------------------------------------------------------

    def validate(self) -> list[str]:
        kind = self.kind()
        if kind == "none":
            return []
        username = self.username.text().strip()
        domains = fields.split_list(self.domains.text())
        domain_problem = fields.check_domains([d.lstrip("@#") for d in domains])
        if kind == "atrn" and any(d[:1] in "@#" for d in domains):
            domain_problem = "ATRN takes plain domain names (no @ or #)."
        login = None
        if kind == "atrn" and not username:
            login = "ATRN needs the ISP login (often the domain name)."
        password = None
        if (username or kind == "atrn") and not self.password.text() and not self.password.stored:
            password = "Enter the password for this login."
        plaintext = None
        if username and self.security.value() == "none" and not self.plaintext.isChecked():
            plaintext = "A login needs an encrypted connection, or tick the box below."
        checks = {
            self.host: fields.check_host(
                self.host.text(), what="the ISP's server", example="mail.isp.example"
            ),
            self.port: fields.check_port(self.port.value()),
            self.domains: domain_problem,
            self.username: login,
            self.password: password,
            self.security: plaintext,
            self.ca_file.edit: fields.check_ca_file(self.ca_file.text()),
        }
        return [p for field, p in checks.items() if self.form.show_error(field, p) and p]

    def _prepare_test(self) -> CoroutineFactory | str:
        problems = self.validate()
        cfg = self.value()
        if problems or cfg is None:
            return "Fill in the settings first: " + (problems[0] if problems else "")
        password = self.password.text() or self.stored_password(ACCOUNT)
        return lambda: check_signal(cfg, password)
