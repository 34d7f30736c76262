"""The first-run wizard, driven like a user would, against a private Dovecot and Postfix.

What is checked is what the office would notice: after Finish the mail really
arrives, the Test buttons say in words what happened (and never freeze the
window), a mistake keeps the wizard open with the reason next to the field,
and the password is in the keyring and nowhere in the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QDialog, QWizard
from pytestqt.qtbot import QtBot

from postbridge.app.autostart import XdgAutostart
from postbridge.app.wizard import FirstRunWizard
from postbridge.engine import config as configmod
from postbridge.engine.config import Config
from postbridge.engine.cycle import Collector
from postbridge.engine.errors import SecretError
from postbridge.engine.events import CycleFinished
from postbridge.engine.importers.fetchmail import load as load_rc
from postbridge.engine.secrets import SecretStore
from tests.app.wizard_helpers import (
    PASSWORD,
    fill_pop3,
    fill_smtp,
    message,
    message_ids,
    press_test,
    visible_errors,
    wait_idle,
)
from tests.servers.dovecot import Dovecot
from tests.servers.postfix import PostfixOffice

DATA = Path(__file__).parents[1] / "data" / "fetchmail"


@pytest.fixture
def autostart(tmp_path: Path) -> XdgAutostart:
    return XdgAutostart(["/opt/postbridge/postbridge", "--hidden"], config_home=tmp_path / "xdg")


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "postbridge.toml"


@pytest.fixture
def wizard(qtbot: QtBot, config_path: Path, autostart: XdgAutostart) -> Iterator[FirstRunWizard]:
    wiz = FirstRunWizard(config_path, autostart=autostart)
    qtbot.addWidget(wiz)
    wiz.show()
    qtbot.waitExposed(wiz)
    yield wiz
    wait_idle(qtbot)


def finish(wizard: FirstRunWizard) -> None:
    wizard.button(QWizard.WizardButton.FinishButton).click()


def poll(config: Config) -> CycleFinished:
    async def cycle() -> CycleFinished:
        collector = Collector(config, secrets=SecretStore())
        try:
            return await collector.run_cycle()
        finally:
            await collector.aclose()

    return asyncio.run(cycle())


def test_wizard_end_to_end_then_the_config_polls(
    qtbot: QtBot,
    wizard: FirstRunWizard,
    config_path: Path,
    dovecot: Dovecot,
    postfix_office: PostfixOffice,
    autostart: XdgAutostart,
) -> None:
    dovecot.add_user("alice", PASSWORD)
    dovecot.add_messages("alice", [message(n) for n in (1, 2, 3)])
    fill_pop3(wizard.pop3, dovecot, "alice")
    ok, words = press_test(qtbot, wizard.pop3.test)
    assert ok, words
    assert f"Logged in to {dovecot.host}:{dovecot.pop3s_port} as alice" in words
    assert "holds 3 message(s)" in words and "Nothing was downloaded or deleted" in words
    assert dovecot.count("alice") == 3
    wizard.next()
    assert wizard.currentPage() is wizard.routing_page
    wizard.routing.recipient.setText("alice@example.com")
    wizard.next()
    assert wizard.currentPage() is wizard.delivery_page
    fill_smtp(wizard.delivery, postfix_office)
    ok, words = press_test(qtbot, wizard.delivery.test)
    assert ok, words
    assert "Connected to the office mail server" in words
    wizard.next()
    assert wizard.currentPage() is wizard.signal_page
    wizard.next()
    wizard.schedule.interval.setValue(5)
    wizard.schedule.start_at_login.setChecked(True)
    saved: list[Config] = []
    wizard.configSaved.connect(saved.append)
    finish(wizard)
    assert wizard.result() == QDialog.DialogCode.Accepted
    assert saved and config_path.is_file()
    assert autostart.is_enabled()

    config = configmod.load(config_path)
    (box,) = config.mailboxes
    assert (box.name, box.kind, box.recipient) == ("alice", "user", "alice@example.com")
    assert config.delivery.kind == "smtp" and config.schedule.interval_minutes == 5
    assert SecretStore().get("alice") == PASSWORD
    assert PASSWORD not in config_path.read_text()

    result = poll(config)
    assert result.ok, result.summaries
    arrived = postfix_office.wait_for("alice@example.com", 3)
    assert message_ids(arrived) == message_ids([message(n) for n in (1, 2, 3)])
    assert dovecot.count("alice") == 0


def test_global_mailbox_detect_and_a_second_mailbox(
    qtbot: QtBot, wizard: FirstRunWizard, config_path: Path, dovecot: Dovecot
) -> None:
    dovecot.add_user("office", PASSWORD)
    dovecot.add_user("carol", "carol-pw")
    bcc = [
        b"X-Original-To: bob@example.com\r\n" + message(n, to="alice@example.com") for n in (1, 2)
    ]
    dovecot.add_messages("office", bcc)
    dovecot.add_messages("carol", [message(7, to="carol@isp.example")])
    fill_pop3(wizard.pop3, dovecot, "office")
    wizard.next()
    routing = wizard.routing
    routing.global_radio.setChecked(True)
    routing.domains.setText("example.com")
    routing.postmaster.setText("admin@example.com")
    ok, words = press_test(qtbot, routing.detect)
    assert ok, words
    assert "X-Original-To" in words
    assert routing.envelope.currentData() == "X-Original-To"
    row = routing.map_model.add_rule("sales@example.com", "alice@example.com, bob@example.com")
    assert row == 0

    dialog = wizard.add_mailbox()
    qtbot.waitExposed(dialog)
    fill_pop3(dialog.editor.pop3, dovecot, "carol", password="carol-pw")
    dialog.editor.routing.recipient.setText("carol@example.com")
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    assert [e.box.name for e in wizard.extra] == ["carol"]
    assert wizard.more_list.count() == 1

    wizard.next()  # delivery: the Maildir default
    assert wizard.delivery.maildir_radio.isChecked()
    wizard.next()
    wizard.next()
    finish(wizard)
    assert wizard.result() == QDialog.DialogCode.Accepted

    config = configmod.load(config_path)
    office, carol = config.mailboxes
    assert office.kind == "global" and office.envelope_header == "X-Original-To"
    assert office.address_map == {"sales@example.com": ("alice@example.com", "bob@example.com")}
    assert carol.recipient == "carol@example.com"
    assert SecretStore().get("carol") == "carol-pw"
    result = poll(config)
    assert result.ok, result.summaries
    mail = config.maildir_root
    assert len(list((mail / "bob@example.com" / "new").iterdir())) == 2  # the Bcc'd person
    assert len(list((mail / "carol@example.com" / "new").iterdir())) == 1


def test_pop3_test_button_failures_in_words(
    qtbot: QtBot, wizard: FirstRunWizard, dovecot: Dovecot
) -> None:
    dovecot.add_user("alice", PASSWORD)
    editor = wizard.pop3
    ok, words = press_test(qtbot, editor.test)
    assert not ok and words.startswith("Fill in the server settings first")

    fill_pop3(editor, dovecot, "alice", password="wrong")
    ok, words = press_test(qtbot, editor.test)
    assert not ok
    assert "The ISP rejected the password for alice" in words
    assert "Details:" in words

    editor.password.setText(PASSWORD)
    editor.ca_file.set_path(None)  # the test CA is not in the system store
    ok, words = press_test(qtbot, editor.test)
    assert not ok and "is not trusted" in words

    editor.ca_file.set_path(dovecot.ca_file)
    editor.port.setValue(1)  # nothing listens on port 1
    ok, words = press_test(qtbot, editor.test)
    assert not ok and "refused the connection" in words


def test_delivery_test_button_success_and_failure(
    qtbot: QtBot, wizard: FirstRunWizard, postfix_office: PostfixOffice, tmp_path: Path
) -> None:
    editor = wizard.delivery
    editor.folder.set_path(tmp_path / "Mail")
    ok, words = press_test(qtbot, editor.test)
    assert ok and "are writable" in words
    fill_smtp(editor, postfix_office)
    editor.port.setValue(1)
    ok, words = press_test(qtbot, editor.test)
    assert not ok and "office mail server" in words
    editor.port.setValue(postfix_office.smtp_port)
    editor.ca_file.set_path(None)
    ok, words = press_test(qtbot, editor.test)
    assert not ok and "certificate" in words.lower()


def test_invalid_pages_block_next_with_the_reason_shown(
    qtbot: QtBot, wizard: FirstRunWizard, dovecot: Dovecot
) -> None:
    wizard.next()
    assert wizard.currentPage() is wizard.pop3_page
    errors = visible_errors(wizard.pop3_page)
    assert "Enter the name of the ISP's POP3 server, e.g. pop.isp.example." in errors
    assert "Enter the user name." in errors
    assert "Enter the password of the ISP mailbox." in errors
    assert "Please correct the fields marked in red." in errors

    fill_pop3(wizard.pop3, dovecot, "alice")
    wizard.pop3.security.set_value("none")
    wizard.next()
    assert wizard.currentPage() is wizard.pop3_page
    assert any("tick the box" in e for e in visible_errors(wizard.pop3_page))
    wizard.pop3.security.set_value("tls")
    wizard.next()
    assert wizard.currentPage() is wizard.routing_page

    wizard.routing.recipient.setText("alice")
    wizard.next()
    assert wizard.currentPage() is wizard.routing_page
    assert any("not an e-mail address" in e for e in visible_errors(wizard.routing_page))

    wizard.routing.global_radio.setChecked(True)
    wizard.next()
    assert "Enter at least one domain, e.g. example.com." in visible_errors(wizard.routing_page)
    wizard.routing.domains.setText("example.com")
    wizard.routing.map_model.add_rule("sales@other.example", "alice@example.com")
    wizard.next()
    assert wizard.currentPage() is wizard.routing_page
    assert any("not one of the local domains" in e for e in visible_errors(wizard.routing_page))
    wizard.routing.map_model.remove_rows([0])
    wizard.next()
    assert wizard.currentPage() is wizard.delivery_page

    wizard.delivery.server_radio.setChecked(True)
    wizard.delivery.username.setText("collector")
    wizard.next()
    errors = visible_errors(wizard.delivery_page)
    assert "Enter the name of the office mail server, e.g. mail.office.lan." in errors
    assert "Enter the password for this login." in errors
    assert wizard.currentPage() is wizard.delivery_page


def test_finish_is_blocked_when_the_keyring_refuses(
    qtbot: QtBot, config_path: Path, autostart: XdgAutostart, dovecot: Dovecot
) -> None:
    class NoKeyring(SecretStore):
        def set(self, account: str, password: str) -> None:
            raise SecretError("Postbridge could not store the password for “alice”.")

    wizard = FirstRunWizard(config_path, secrets=NoKeyring(), autostart=autostart)
    qtbot.addWidget(wizard)
    wizard.show()
    fill_pop3(wizard.pop3, dovecot, "alice")
    wizard.next()
    wizard.routing.recipient.setText("alice@example.com")
    for _ in range(3):
        wizard.next()
    assert wizard.currentPage() is wizard.schedule_page
    finish(wizard)
    assert wizard.isVisible() and wizard.result() != QDialog.DialogCode.Accepted
    assert (
        "The settings could not be saved: Postbridge could not store the password for “alice”."
        in visible_errors(wizard.schedule_page)
    )
    assert not config_path.exists()


def test_every_password_goes_to_the_keyring_and_none_to_the_file(
    qtbot: QtBot, wizard: FirstRunWizard, config_path: Path, dovecot: Dovecot
) -> None:
    fill_pop3(wizard.pop3, dovecot, "alice", password="pop-secret-1")
    wizard.next()
    wizard.routing.recipient.setText("alice@example.com")
    wizard.next()
    d = wizard.delivery
    d.server_radio.setChecked(True)
    d.host.setText("mail.office.lan")
    d.username.setText("collector")
    d.password.setText("smtp-secret-2")
    wizard.next()
    s = wizard.signal
    s.atrn_radio.setChecked(True)
    s.host.setText("odmr.isp.example")
    s.domains.setText("example.com")
    s.username.setText("example.com")
    s.password.setText("atrn-secret-3")
    wizard.next()
    finish(wizard)
    assert wizard.result() == QDialog.DialogCode.Accepted
    store = SecretStore()
    assert store.get("alice") == "pop-secret-1"
    assert store.get("delivery") == "smtp-secret-2"
    assert store.get("signal") == "atrn-secret-3"
    text = config_path.read_text()
    for secret in ("pop-secret-1", "smtp-secret-2", "atrn-secret-3", "secret"):
        assert secret not in text
    config = configmod.load(config_path)
    assert config.signal is not None and config.signal.kind == "atrn"
    assert config.signal.port == 366
    assert config.delivery.username == "collector" and config.delivery.port == 25


def test_import_from_fetchmail_fills_the_pages(
    qtbot: QtBot, wizard: FirstRunWizard, config_path: Path
) -> None:
    wizard.apply_draft(load_rc(DATA / "several_polls.rc"))
    assert wizard.currentPage() is wizard.pop3_page
    assert wizard.pop3.host.text() == "pop.isp.example"
    assert wizard.pop3.username.text() == "alice"
    assert wizard.pop3.password.text() == "pw-a"
    assert wizard.routing.recipient.text() == "alice@example.com"
    assert [e.box.name for e in wizard.extra] == ["bob", "carol", "dave"]
    assert wizard.schedule.interval.value() == 10
    for _ in range(4):
        wizard.next()
    finish(wizard)
    assert wizard.result() == QDialog.DialogCode.Accepted
    config = configmod.load(config_path)
    assert [m.name for m in config.mailboxes] == ["alice", "bob", "carol", "dave"]
    assert not config.mailboxes[3].enabled
    store = SecretStore()
    assert [store.get(n) for n in ("alice", "bob", "carol", "dave")] == [
        "pw-a",
        "pw-b",
        "pw-c",
        "pw-d",
    ]
    assert "pw-" not in config_path.read_text()
