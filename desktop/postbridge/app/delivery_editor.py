"""Where collected mail goes: Maildir folders on this computer, or the office mail server.

Maildir folders are the default and need nothing: one folder per person under
Postbridge's data folder (shown, and changeable), readable by any mail program
or by Dovecot. The office mail server is reached by SMTP (Exchange, Postfix,
hMailServer) or LMTP (Dovecot, Cyrus), with optional login. "Test" connects,
starts TLS and logs in without sending a message (or, for folders, checks that
the folder is writable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

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
from postbridge.app.forms import (
    Form,
    PageStack,
    PasswordEdit,
    PathField,
    PortBox,
    SecurityCombo,
    TestPanel,
)
from postbridge.engine import fields
from postbridge.engine.checks import PendingSecrets, check_delivery
from postbridge.engine.config import Config, DeliveryConfig, DeliveryKind, Security

SMTP_PORTS: dict[Security, int] = {"tls": 465, "starttls": 25, "none": 25}
LMTP_PORTS: dict[Security, int] = {"tls": 24, "starttls": 24, "none": 24}
ACCOUNT = "delivery"


class DeliveryEditor(QWidget):
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
        self.maildir_radio = QRadioButton("&Folders on this computer (Maildir)")
        self.server_radio = QRadioButton("The office &mail server (SMTP or LMTP)")
        group = QButtonGroup(self)
        group.addButton(self.maildir_radio)
        group.addButton(self.server_radio)
        self.maildir_radio.setChecked(True)
        layout.addWidget(self.maildir_radio)
        layout.addWidget(self.server_radio)
        self.stack = PageStack()
        layout.addWidget(self.stack)
        self.maildir_form = Form()
        self.folder = PathField(folder=True, caption="Folder for the mail")
        self.maildir_form.add(
            "&Folder:",
            self.folder,
            focus=self.folder.edit,
            help_text="One subfolder per person, in the Maildir format any mail program "
            "(or Dovecot) can read.",
        )
        self.stack.addWidget(self.maildir_form)
        self.server_form = Form()
        self._build_server()
        self.stack.addWidget(self.server_form)
        self.test = TestPanel("&Test delivery", prepare=self._prepare_test, busy_text="Connecting…")
        layout.addWidget(self.test)
        layout.addStretch(1)
        self.maildir_radio.toggled.connect(self._kind_changed)
        self.folder.changed.connect(self.changed)
        self.changed.connect(self.test.clear)  # a result about other settings would mislead
        self.base = Config(
            path=Path("unsaved.toml"), data_dir=Path(), delivery=DeliveryConfig(), mailboxes=()
        )

    def _build_server(self) -> None:
        f = self.server_form
        self.protocol = QComboBox()
        self.protocol.addItem("SMTP — Exchange, Postfix, hMailServer and most others", "smtp")
        self.protocol.addItem("LMTP — Dovecot, Cyrus", "lmtp")
        self.host = QLineEdit()
        self.host.setPlaceholderText("mail.office.lan")
        self.security = SecurityCombo()
        self.security.set_value("starttls")
        self.port = PortBox(SMTP_PORTS)
        self.username = QLineEdit()
        self.password = PasswordEdit()
        self.plaintext = QCheckBox("Send the password &unencrypted anyway")
        self.ca_file = PathField(folder=False, caption="Extra trusted certificate")
        f.add("P&rotocol:", self.protocol)
        f.add("&Server:", self.host)
        f.add("S&ecurity:", self.security)
        f.add("&Port:", self.port)
        f.add("&Login name:", self.username, help_text="Leave empty if the server needs no login.")
        f.add("Pass&word:", self.password)
        f.add(
            "",
            self.plaintext,
            help_text="Only on a network you trust: without encryption the password can be read "
            "on the way.",
        )
        self.plaintext.setAccessibleName("Send the password unencrypted anyway")
        f.add(
            "Extra trusted &certificate:",
            self.ca_file,
            focus=self.ca_file.edit,
            help_text="Usually empty. For a server with its own certificate authority, choose "
            "its CA file (PEM).",
        )
        self.protocol.currentIndexChanged.connect(self._protocol_changed)
        self.security.currentIndexChanged.connect(self._security_changed)
        for widget in (self.host, self.username, self.password):
            widget.textChanged.connect(self._security_changed)
        self.port.valueChanged.connect(self.changed)
        self.plaintext.toggled.connect(self.changed)
        self.ca_file.changed.connect(self.changed)

    # -- loading and reading -------------------------------------------------------------

    def load(self, config: Config) -> None:
        self.base = config
        d = config.delivery
        (self.maildir_radio if d.kind == "maildir" else self.server_radio).setChecked(True)
        self.folder.set_path(config.maildir_root)
        self.protocol.setCurrentIndex(max(0, self.protocol.findData(d.kind)))
        self.host.setText(d.host)
        self.security.set_value(d.security)
        self.port.defaults = LMTP_PORTS if d.kind == "lmtp" else SMTP_PORTS
        self.port.load(d.port or self.port.defaults[d.security])
        self.username.setText(d.username)
        self.password.clear()
        self.password.set_stored(bool(d.username) and self.stored_password(ACCOUNT) is not None)
        self.plaintext.setChecked(d.allow_plaintext_login)
        self.ca_file.set_path(d.ca_file)
        self.test.clear()
        self._kind_changed()
        for form in (self.maildir_form, self.server_form):
            for field in form.errors:
                form.show_error(field, None)

    def value(self) -> DeliveryConfig:
        if self.maildir_radio.isChecked():
            default = self.base.data_dir / "Mail"
            chosen = self.folder.path()
            return DeliveryConfig(kind="maildir", path=None if chosen == default else chosen)
        kind: DeliveryKind = self.protocol.currentData()
        security = self.security.value()
        username = self.username.text().strip()
        return replace(
            DeliveryConfig(),
            kind=kind,
            host=self.host.text().strip(),
            port=self.port.value(),
            security=security,
            username=username,
            ca_file=self.ca_file.path(),
            allow_plaintext_login=security == "none"
            and bool(username)
            and self.plaintext.isChecked(),
            timeout=self.base.delivery.timeout,
        )

    def typed_password(self) -> str:
        """The new password, when a login is set and one was typed."""
        return self.password.text() if self.server_radio.isChecked() else ""

    def _kind_changed(self) -> None:
        maildir = self.maildir_radio.isChecked()
        self.stack.setCurrentWidget(self.maildir_form if maildir else self.server_form)
        self._security_changed()

    def _protocol_changed(self) -> None:
        lmtp = self.protocol.currentData() == "lmtp"
        old = self.port.defaults
        self.port.defaults = LMTP_PORTS if lmtp else SMTP_PORTS
        self.port.custom = self.port.value() not in old.values()
        self.port.follow(self.security.value())
        self.changed.emit()

    def _security_changed(self) -> None:
        self.port.follow(self.security.value())
        needs_login = bool(self.username.text().strip())
        self.server_form.set_row_visible(self.password, needs_login)
        self.server_form.set_row_visible(
            self.plaintext, needs_login and self.security.value() == "none"
        )
        self.changed.emit()

    # -- checks --------------------------------------------------------------------------

    def validate(self) -> list[str]:
        if self.maildir_radio.isChecked():
            problem = fields.check_folder(self.folder.text())
            self.maildir_form.show_error(self.folder.edit, problem)
            return [problem] if problem else []
        username = self.username.text().strip()
        security = self.security.value()
        password = None
        if username and not self.password.text() and not self.password.stored:
            password = "Enter the password for this login."
        plaintext = None
        if username and security == "none" and not self.plaintext.isChecked():
            plaintext = (
                "A login needs an encrypted connection; choose STARTTLS or TLS, or tick the box "
                "to send the password unencrypted."
            )
        checks = {
            self.host: fields.check_host(
                self.host.text(), what="the office mail server", example="mail.office.lan"
            ),
            self.port: fields.check_port(self.port.value()),
            self.password: password,
            self.security: plaintext,
            self.ca_file.edit: fields.check_ca_file(self.ca_file.text()),
        }
        return [p for field, p in checks.items() if self.server_form.show_error(field, p) and p]

    def _prepare_test(self) -> CoroutineFactory | str:
        problems = self.validate()
        if problems:
            return "Fill in the settings first: " + problems[0]
        config = replace(self.base, delivery=self.value())
        typed = {ACCOUNT: self.password.text()} if self.password.text() else {}
        secrets = PendingSecrets(typed)
        return lambda: check_delivery(config, secrets)
