"""Helpers for the settings dialog and wizard tests: fill pages, press Test, read results."""

from __future__ import annotations

import email
from pathlib import Path

from PySide6.QtWidgets import (
    QAbstractButton,
    QComboBox,
    QLabel,
    QWidget,
)
from pytestqt.qtbot import QtBot

from postbridge.app.background import running_tasks
from postbridge.app.delivery_editor import DeliveryEditor
from postbridge.app.forms import TestPanel
from postbridge.app.pop3_editor import Pop3Editor
from tests.servers.dovecot import Dovecot
from tests.servers.postfix import PostfixOffice

PASSWORD = "wizard-Pa55"
TEST_TIMEOUT = 30_000


def message(n: int, to: str = "alice@example.com") -> bytes:
    return (
        f"From: Sender {n} <sender{n}@outside.example>\r\n"
        f"To: {to}\r\n"
        f"Subject: wizard test {n}\r\n"
        f"Message-ID: <wizard-{n}@outside.example>\r\n"
        "\r\n"
        f"Hello {n}.\r\n"
    ).encode()


def message_ids(messages: list[bytes]) -> list[str]:
    return sorted(str(email.message_from_bytes(m)["Message-ID"]) for m in messages)


def press_test(qtbot: QtBot, panel: TestPanel) -> tuple[bool, str]:
    """Click a Test button and wait (without blocking Qt) for its words."""
    with qtbot.waitSignal(panel.finished, timeout=TEST_TIMEOUT) as blocker:
        panel.button.click()
    ok, text = blocker.args
    assert panel.result.text() == text
    return bool(ok), str(text)


def wait_idle(qtbot: QtBot) -> None:
    qtbot.waitUntil(lambda: running_tasks() == 0, timeout=TEST_TIMEOUT)


def fill_pop3(
    editor: Pop3Editor,
    dovecot: Dovecot,
    user: str,
    *,
    password: str = PASSWORD,
    ca_file: Path | None = None,
) -> None:
    editor.host.setText(dovecot.host)
    editor.security.set_value("tls")
    editor.port.setValue(dovecot.pop3s_port)
    editor.username.setText(user)
    editor.password.setText(password)
    editor.ca_file.set_path(ca_file or dovecot.ca_file)


def fill_smtp(editor: DeliveryEditor, office: PostfixOffice) -> None:
    editor.server_radio.setChecked(True)
    editor.protocol.setCurrentIndex(editor.protocol.findData("smtp"))
    editor.host.setText(office.host)
    editor.security.set_value("starttls")
    editor.port.setValue(office.smtp_port)
    editor.ca_file.set_path(office.ca_file)


def visible_errors(root: QWidget) -> list[str]:
    """The red lines on screen under ``root``."""
    return [
        label.text()
        for label in root.findChildren(QLabel)
        if label.isVisibleTo(root) and label.text() and "b3261e" in label.styleSheet()
    ]


def combo_text(combo: QComboBox) -> str:
    return combo.currentText()


def click(button: QAbstractButton) -> None:
    button.click()
