"""The settings dialog: edits are checked in place, saved atomically, passwords kept apart.

The dialog opens on an existing file; OK/Apply must refuse what the loader
would refuse (and say so next to the field, on the right tab), keep what it
does not edit (timeouts, data_dir), move a renamed mailbox's password, drop a
removed one's, and announce the saved config so the tray can hand it to the
worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from postbridge.app.autostart import XdgAutostart
from postbridge.app.mapping_model import SOURCE
from postbridge.app.settings import SettingsDialog
from postbridge.engine import config as configmod
from postbridge.engine.config import Config
from postbridge.engine.importers.fetchmail import load as load_rc
from postbridge.engine.secrets import SecretStore
from tests.app.wizard_helpers import message, press_test, visible_errors, wait_idle
from tests.servers.dovecot import Dovecot

DATA = Path(__file__).parents[1] / "data" / "fetchmail"

CONFIG = """
data_dir = "{data}"

[delivery]
kind = "smtp"
host = "mail.office.lan"
port = 2525
security = "starttls"
timeout = 12

[schedule]
interval_minutes = 10

[[mailbox]]
name = "alice"
kind = "user"
host = "pop.isp.example"
username = "alice@isp.example"
recipient = "alice@example.com"
timeout = 7
leave_on_server_days = 3

[[mailbox]]
name = "office"
kind = "global"
host = "pop.isp.example"
security = "starttls"
username = "office@isp.example"
local_domains = ["example.com"]
envelope_header = "Delivered-To"
[mailbox.map]
"sales@example.com" = ["alice@example.com", "bob@example.com"]
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "postbridge.toml"
    path.write_text(CONFIG.format(data=tmp_path / "data"))
    store = SecretStore()
    store.set("alice", "alice-pw")
    store.set("office", "office-pw")
    return path


@pytest.fixture
def dialog(qtbot: QtBot, config_path: Path, tmp_path: Path) -> Iterator[SettingsDialog]:
    autostart = XdgAutostart(["/opt/postbridge/postbridge"], config_home=tmp_path / "xdg")
    dlg = SettingsDialog.from_file(config_path, autostart=autostart)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    yield dlg
    wait_idle(qtbot)


def select(dialog: SettingsDialog, name: str) -> None:
    names = [e.box.name for e in dialog.mailboxes.entries]
    dialog.mailboxes.list.setCurrentRow(names.index(name))


def test_apply_saves_keeps_what_it_does_not_edit_and_announces_it(
    dialog: SettingsDialog, config_path: Path, tmp_path: Path
) -> None:
    saved: list[Config] = []
    dialog.configSaved.connect(saved.append)
    assert not dialog.apply_button.isEnabled()
    select(dialog, "alice")
    assert dialog.mailboxes.editor.pop3.password.text() == ""  # never shown
    assert "Stored in the keyring" in dialog.mailboxes.editor.pop3.password.placeholderText()
    dialog.mailboxes.editor.routing.recipient.setText("alice.smith@example.com")
    assert dialog.apply_button.isEnabled()
    dialog.apply_button.click()
    assert dialog.isVisible() and len(saved) == 1
    again = configmod.load(config_path)
    assert saved[0].mailboxes == again.mailboxes
    alice, office = again.mailboxes
    assert alice.recipient == "alice.smith@example.com"
    assert alice.timeout == 7 and alice.leave_on_server_days == 3
    assert office.address_map["sales@example.com"] == ("alice@example.com", "bob@example.com")
    assert again.delivery.timeout == 12 and again.delivery.port == 2525
    assert again.data_dir == tmp_path / "data"
    assert SecretStore().get("alice") == "alice-pw"
    assert "pw" not in config_path.read_text()
    assert not dialog.apply_button.isEnabled()


def test_rename_moves_the_password_and_remove_deletes_it(
    dialog: SettingsDialog, config_path: Path
) -> None:
    select(dialog, "alice")
    dialog.mailboxes.editor.name.setText("alice-home")
    select(dialog, "office")
    dialog.mailboxes.remove_current()
    dialog.ok_button.click()
    assert not dialog.isVisible()
    config = configmod.load(config_path)
    assert [m.name for m in config.mailboxes] == ["alice-home"]
    store = SecretStore()
    assert store.get("alice-home") == "alice-pw"
    assert store.get("alice") is None
    assert store.get("office") is None


def test_a_new_mailbox_needs_its_password_and_the_problem_is_shown(
    dialog: SettingsDialog, config_path: Path
) -> None:
    before = config_path.read_text()
    dialog.tabs.setCurrentIndex(3)
    dialog.mailboxes.add_new()
    editor = dialog.mailboxes.editor
    editor.pop3.host.setText("pop.other.example")
    editor.pop3.username.setText("carol")
    editor.routing.recipient.setText("carol@example.com")
    assert editor.name.text() == "carol"  # named after the user name until renamed
    dialog.ok_button.click()
    assert dialog.isVisible()
    assert dialog.tabs.currentIndex() == 0
    assert dialog.mailboxes.list.currentItem().text() == "carol"
    assert "Enter the password of the ISP mailbox." in visible_errors(dialog)
    assert config_path.read_text() == before
    editor.pop3.password.setText("carol-pw")
    dialog.ok_button.click()
    assert not dialog.isVisible()
    assert SecretStore().get("carol") == "carol-pw"
    assert [m.name for m in configmod.load(config_path).mailboxes] == ["alice", "office", "carol"]


def test_bad_address_and_unknown_local_domain_block_saving(
    dialog: SettingsDialog, config_path: Path
) -> None:
    before = config_path.read_text()
    select(dialog, "office")
    routing = dialog.mailboxes.editor.routing
    model = routing.map_model
    model.setData(model.index(0, SOURCE), "sales@other.example")
    problem = model.data(model.index(0, SOURCE), Qt.ItemDataRole.ToolTipRole)
    assert "other.example is not one of the local domains (example.com)" in str(problem)
    assert model.data(model.index(0, SOURCE), Qt.ItemDataRole.BackgroundRole) is not None
    routing.postmaster.setText("postmaster")
    assert not dialog.apply()
    errors = " ".join(visible_errors(dialog))
    assert "Row 1, Mail sent to: other.example is not one of the local domains" in errors
    assert "“postmaster” is not an e-mail address" in errors
    assert config_path.read_text() == before
    routing.domains.setText("example.com, other.example")  # now the rule is inside them
    assert model.data(model.index(0, SOURCE), Qt.ItemDataRole.BackgroundRole) is None
    routing.postmaster.setText("postmaster@example.com")
    assert dialog.apply()
    office = configmod.load(config_path).mailbox("office")
    assert office.local_domains == ("example.com", "other.example")
    assert "sales@other.example" in office.address_map


def test_a_problem_on_another_tab_brings_that_tab_forward(dialog: SettingsDialog) -> None:
    dialog.delivery.host.setText("")
    dialog.tabs.setCurrentIndex(3)
    assert not dialog.apply()
    assert dialog.tabs.currentIndex() == 1
    assert "Enter the name of the office mail server, e.g. mail.office.lan." in visible_errors(
        dialog
    )
    dialog.delivery.host.setText("mail.office.lan")
    dialog.signal.etrn_radio.setChecked(True)
    assert not dialog.apply()
    assert dialog.tabs.currentIndex() == 2
    assert "Enter at least one domain, e.g. example.com." in visible_errors(dialog)


def test_switching_to_maildir_and_signal_round_trip(
    dialog: SettingsDialog, config_path: Path, tmp_path: Path
) -> None:
    dialog.delivery.maildir_radio.setChecked(True)
    assert dialog.delivery.folder.text() == str(tmp_path / "data" / "Mail")
    s = dialog.signal
    s.etrn_radio.setChecked(True)
    s.host.setText("mail.isp.example")
    s.domains.setText("example.com, example.org")
    s.when.setCurrentIndex(s.when.findData("interval"))
    dialog.schedule.interval.setValue(20)
    dialog.schedule.start_at_login.setChecked(True)
    assert dialog.apply()
    config = configmod.load(config_path)
    assert config.delivery.kind == "maildir" and config.delivery.path is None
    assert config.signal is not None
    assert (config.signal.kind, config.signal.port, config.signal.when) == ("etrn", 25, "interval")
    assert config.signal.domains == ("example.com", "example.org")
    assert config.schedule.interval_minutes == 20
    assert dialog.schedule.autostart.is_enabled()


def test_import_from_fetchmail_adds_mailboxes_and_their_passwords(
    dialog: SettingsDialog, config_path: Path
) -> None:
    dialog.apply_draft(load_rc(DATA / "multidrop_envelope.rc"))
    names = [e.box.name for e in dialog.mailboxes.entries]
    assert names == ["alice", "office", "company"]
    assert dialog.schedule.interval.value() == 5
    assert dialog.apply()
    company = configmod.load(config_path).mailbox("company")
    assert company.kind == "global" and company.envelope_header == "X-Original-To"
    assert SecretStore().get("company") == "domain-pw"
    assert "domain-pw" not in config_path.read_text()


def test_test_login_uses_the_stored_password_even_after_a_rename(
    qtbot: QtBot, tmp_path: Path, dovecot: Dovecot
) -> None:
    dovecot.add_user("alice", "stored-pw")
    dovecot.add_messages("alice", [message(1)])
    path = tmp_path / "postbridge.toml"
    path.write_text(
        f"""
[[mailbox]]
name = "alice"
host = "{dovecot.host}"
port = {dovecot.pop3s_port}
username = "alice"
recipient = "alice@example.com"
ca_file = "{dovecot.ca_file}"
"""
    )
    SecretStore().set("alice", "stored-pw")
    dialog = SettingsDialog.from_file(path, autostart=XdgAutostart(["x"], config_home=tmp_path))
    qtbot.addWidget(dialog)
    editor = dialog.mailboxes.editor
    editor.name.setText("alice-home")
    ok, words = press_test(qtbot, editor.pop3.test)
    assert ok, words
    assert "holds 1 message(s)" in words
    editor.pop3.password.setText("typed-wrong")
    ok, words = press_test(qtbot, editor.pop3.test)
    assert not ok and "rejected the password" in words
    wait_idle(qtbot)
