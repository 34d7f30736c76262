"""The ISP side of one mailbox: POP3 server, security, login, and a Test button.

Shared by the first-run wizard (its first page) and the settings dialog (the
upper half of a mailbox). Security defaults to TLS on port 995; STARTTLS moves
the port to 110 unless the user typed one; "not encrypted" is offered only with
a warning and an explicit tick that allows the password to travel readable
(DESIGN.md: a plaintext password is refused unless allowed per account).

Test logs in and runs STAT in the background and says in words what it found;
it sends no DELE, so it cannot lose mail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QLineEdit, QSpinBox, QVBoxLayout, QWidget

from postbridge.app.background import CoroutineFactory
from postbridge.app.forms import Form, PasswordEdit, PathField, PortBox, SecurityCombo, TestPanel
from postbridge.engine import fields
from postbridge.engine.checks import check_pop3
from postbridge.engine.config import MailboxConfig, Security

POP3_PORTS: dict[Security, int] = {"tls": 995, "starttls": 110, "none": 110}
PLAINTEXT_WARNING = (
    "Without encryption your password and your mail cross the Internet readable by anyone "
    "on the way. Choose this only if the ISP offers nothing else."
)


def blank_mailbox(name: str = "") -> MailboxConfig:
    return MailboxConfig(name=name, kind="user", host="", port=995, security="tls", username="")


class Pop3Editor(QWidget):
    """Server, security, port, user name, password, optional CA file, leave-a-copy, Test."""

    changed = Signal()

    def __init__(
        self,
        *,
        show_keep: bool = True,
        stored: Callable[[str], str | None] = lambda account: None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.stored_password = stored  # reads the keyring; the owner decides which
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.form = Form()
        layout.addWidget(self.form)
        self.host = QLineEdit()
        self.host.setPlaceholderText("pop.isp.example")
        self.security = SecurityCombo()
        self.plaintext = QCheckBox("Send the password &unencrypted anyway")
        self.port = PortBox(POP3_PORTS)
        self.username = QLineEdit()
        self.username.setPlaceholderText("office@isp.example")
        self.password = PasswordEdit()
        self.ca_file = PathField(folder=False, caption="Extra trusted certificate")
        self.keep_days = QSpinBox()
        self.keep_days.setRange(0, 3650)
        self.keep_days.setSuffix(" days")
        self.keep_days.setSpecialValueText("No — remove once delivered")
        f = self.form
        f.add("ISP's POP3 &server:", self.host)
        f.add("&Security:", self.security)
        f.add("", self.plaintext, help_text=PLAINTEXT_WARNING)
        self.plaintext.setAccessibleName("Send the password unencrypted anyway")
        f.add("&Port:", self.port)
        f.add(
            "&User name:",
            self.username,
            help_text="As the ISP gave it to you; often the mailbox's full e-mail address.",
        )
        f.add("Pass&word:", self.password, help_text="Kept in the system keyring, not in a file.")
        f.add(
            "Extra trusted &certificate:",
            self.ca_file,
            focus=self.ca_file.edit,
            help_text="Usually empty; only if the ISP gave you a CA file (PEM).",
        )
        f.add(
            "Leave a cop&y at the ISP:",
            self.keep_days,
            help_text="Keep delivered messages on the ISP's server for this many days.",
        )
        f.set_row_visible(self.keep_days, show_keep)
        self.test = TestPanel("&Test login", prepare=self._prepare_test, busy_text="Logging in…")
        f.add_wide(self.test)
        self.security.currentIndexChanged.connect(self._security_changed)
        for edit in (self.host, self.username, self.password):
            edit.textChanged.connect(self.changed)
        self.ca_file.changed.connect(self.changed)
        self.port.valueChanged.connect(self.changed)
        self.plaintext.toggled.connect(self.changed)
        self.keep_days.valueChanged.connect(self.changed)
        self.changed.connect(self.test.clear)  # a result about other settings would mislead
        self._base = blank_mailbox()
        self.account = ""
        self.name_for_test: Callable[[], str] = lambda: self._base.name or "new mailbox"
        self._security_changed()

    # -- loading and reading -------------------------------------------------------------

    def load(
        self, box: MailboxConfig, *, stored_password: bool, account: str | None = None
    ) -> None:
        """Show ``box``; ``account`` is where the keyring keeps its password (its saved name)."""
        self._base = box
        self.account = account if account is not None else box.name
        self.host.setText(box.host)
        self.security.set_value(box.security)
        self.port.load(box.port)
        self.username.setText(box.username)
        self.password.clear()
        self.password.set_stored(stored_password)
        self.ca_file.set_path(box.ca_file)
        self.plaintext.setChecked(box.allow_plaintext_login)
        self.keep_days.setValue(box.leave_on_server_days)
        self.test.clear()
        self._security_changed()
        for field in self.form.errors:
            self.form.show_error(field, None)

    def apply(self, box: MailboxConfig) -> MailboxConfig:
        """``box`` with this page's values (unchecked; see :meth:`validate`)."""
        security = self.security.value()
        return replace(
            box,
            host=self.host.text().strip(),
            port=self.port.value(),
            security=security,
            username=self.username.text().strip(),
            ca_file=self.ca_file.path(),
            allow_plaintext_login=security == "none" and self.plaintext.isChecked(),
            leave_on_server_days=self.keep_days.value(),
        )

    def typed_password(self) -> str:
        return self.password.text()

    def _security_changed(self) -> None:
        security = self.security.value()
        self.port.follow(security)
        self.form.set_row_visible(self.plaintext, security == "none")
        self.changed.emit()

    # -- checks --------------------------------------------------------------------------

    def problems(self) -> dict[QWidget, str | None]:
        """Each field's problem (None: fine), without showing anything."""
        security = self.security.value()
        plaintext = None
        if security == "none" and not self.plaintext.isChecked():
            plaintext = (
                "Choose an encrypted connection, or tick the box to allow the password "
                "to be sent unencrypted."
            )
        password = None
        if not self.password.text() and not self.password.stored:
            password = "Enter the password of the ISP mailbox."
        return {
            self.host: fields.check_host(self.host.text(), what="the ISP's POP3 server"),
            self.security: plaintext,
            self.port: fields.check_port(self.port.value()),
            self.username: None if self.username.text().strip() else "Enter the user name.",
            self.password: password,
            self.ca_file.edit: fields.check_ca_file(self.ca_file.text()),
        }

    def validate(self) -> list[str]:
        """Show every field's problem next to it; return the problems (empty: all fine)."""
        found = []
        for field, problem in self.problems().items():
            if self.form.show_error(field, problem):
                found.append(problem or "")
        return found

    def test_password(self, stored: Callable[[str], str | None]) -> str | None:
        """The password to test with: the one typed, else the one in the keyring."""
        if self.password.text():
            return self.password.text()
        return stored(self.account) if self.password.stored else None

    def _prepare_test(self) -> CoroutineFactory | str:
        problems = {k: v for k, v in self.problems().items() if v and k is not self.password}
        if problems:
            self.validate()
            return "Fill in the server settings first: " + next(iter(problems.values()))
        password = self.test_password(self.stored_password)
        if not password:
            self.form.show_error(self.password, "Enter the password of the ISP mailbox.")
            return "Enter the password first."
        box = self.apply(replace(self._base, name=self.name_for_test() or "test"))
        return lambda: check_pop3(box, password)

    def mailbox_and_password(self) -> tuple[MailboxConfig, str] | str:
        """For the envelope Detect button: the mailbox as typed and a password, or why not."""
        job = self._prepare_test()
        if isinstance(job, str):
            return job
        password = self.test_password(self.stored_password) or ""
        return self.apply(replace(self._base, name=self.name_for_test() or "test")), password
