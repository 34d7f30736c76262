"""The menu, the no-tray window, the no-config window and the Activity window's quarantine."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QSystemTrayIcon
from pytestqt.qtbot import QtBot

from postbridge.app.activity_model import explain_route
from postbridge.app.status import AppState
from postbridge.engine import config as configmod
from tests.app.conftest import (
    AppFactory,
    RecordingNotifier,
    Seams,
    add_user,
    maildir_messages,
    message,
    run_cycle,
    write_config,
)
from tests.servers.dovecot import Dovecot

MENU = [
    "Not polled yet",
    "",
    "Poll now",
    "Pause polling",
    "",
    "Activity…",
    "Settings…",
    "Open mail folder",
    "",
    "Start at login",
    "About Postbridge",
    "",
    "Quit Postbridge",
]


def test_menu_is_built_once_with_every_command_parented_to_it(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory
) -> None:
    app = make_app(write_config(tmp_path))
    app.start()
    actions = app.menu.menu.actions()
    assert [a.text() for a in actions] == MENU
    assert all(a.parent() is app.menu.menu for a in actions if not a.isSeparator())
    assert not app.menu.status.isEnabled()
    assert app.menu.autostart.isCheckable()
    assert app.menu.open_mail.isEnabled()  # the default target is the Maildir folder

    before = list(actions)
    app.menu.pause.trigger()
    app.menu.pause.trigger()
    assert app.menu.menu.actions() == before  # toggled in place, never rebuilt


def test_without_a_tray_a_window_offers_the_same_commands_and_says_why(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory, seams: Seams
) -> None:
    assert not QSystemTrayIcon.isSystemTrayAvailable()  # offscreen: no tray
    app = make_app(write_config(tmp_path))
    app.start()
    window = app.no_tray
    assert window is not None and window.isVisible()
    assert "no notification area" in window.reason.text()
    assert {b.defaultAction() for b in window.buttons.values()} | {app.menu.autostart} == set(
        app.menu.commands()
    )
    window.buttons["Open mail folder"].click()
    assert seams.opened == [str(tmp_path / "data" / "Mail")]
    assert (tmp_path / "data" / "Mail").is_dir()
    window.close()  # the only way back to the app: minimised, not hidden
    assert window.isVisible()


def test_hidden_start_without_a_tray_still_shows_the_window_after_waiting(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory
) -> None:
    app = make_app(write_config(tmp_path), hidden=True, tray_wait=0.3, tray_retry=0.05)
    app.start()
    assert app.no_tray is None  # the tray host may still be starting: look for a while
    qtbot.waitUntil(lambda: app.no_tray is not None and app.no_tray.isVisible(), timeout=5000)


# Showing a tray icon on the offscreen platform (which has no tray) trips this Qt warning.
@pytest.mark.qt_log_ignore("systemTrayWindowChanged")
def test_a_tray_that_appears_late_is_used(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory
) -> None:
    available = [False]
    app = make_app(
        write_config(tmp_path), hidden=True, tray_available=lambda: available[0], tray_retry=0.05
    )
    app.start()
    available[0] = True
    qtbot.waitUntil(lambda: app.tray is not None, timeout=5000)
    assert app.tray is not None and app.tray.contextMenu() is app.menu.menu
    app.tray.activated.emit(QSystemTrayIcon.ActivationReason.Trigger)  # a single click
    assert app.activity is not None and app.activity.isVisible()


def test_no_config_opens_the_first_run_wizard(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory
) -> None:
    config_path = tmp_path / "cfg" / "postbridge.toml"
    app = make_app(config_path)
    app.start()
    assert app.wizard is not None and app.wizard.isVisible()
    assert app.state.value == "error"  # (not `is`: mypy would keep the narrowing)
    assert "not set up yet" in app.tooltip_text()
    app.wizard.hide()
    app.menu.poll_now.trigger()  # nothing to poll yet: the wizard again, not an error
    assert app.wizard.isVisible()
    app.wizard.hide()
    app.menu.settings.trigger()
    assert app.wizard.isVisible() and app.settings_dialog is None


def test_wizard_finish_starts_polling(qtbot: QtBot, tmp_path: Path, make_app: AppFactory) -> None:
    config_path = tmp_path / "cfg" / "postbridge.toml"
    app = make_app(config_path)
    app.start()
    assert app.wizard is not None
    # What Finish does once the file is written: hand the config over and poll.
    write_config(tmp_path)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text((tmp_path / "postbridge.toml").read_text())
    app.wizard.configSaved.emit(configmod.load(config_path))
    qtbot.waitUntil(lambda: app.cycles_seen == 1, timeout=5000)
    assert app.state is AppState.IDLE


def test_settings_opens_the_dialog_and_saving_updates_the_app(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory
) -> None:
    app = make_app(write_config(tmp_path))
    app.start()
    app.menu.settings.trigger()
    dialog = app.settings_dialog
    assert dialog is not None and dialog.isVisible()
    app.menu.settings.trigger()  # a second click raises the same dialog
    assert app.settings_dialog is dialog
    changed = configmod.load(app.config_path)
    dialog.configSaved.emit(changed)
    assert app.config is changed
    dialog.reject()
    assert app.settings_dialog is None


def test_broken_config_shows_the_problem_instead_of_the_dialog(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory, seams: Seams
) -> None:
    config_path = tmp_path / "cfg" / "postbridge.toml"
    config_path.parent.mkdir()
    config_path.write_text("[schedule]\ninterval_minutes = 0\n")
    app = make_app(config_path)
    app.start()
    app.menu.settings.trigger()
    window = app.no_config
    assert window is not None and window.isVisible()
    assert "interval_minutes" in window.problem.text()
    assert window.path_label.text() == str(config_path)
    window.open_button.click()
    assert seams.opened == [str(config_path.parent)]
    write_config(tmp_path)
    config_path.write_text((tmp_path / "postbridge.toml").read_text())
    window.check_button.click()
    assert not window.isVisible()
    qtbot.waitUntil(lambda: app.cycles_seen == 1, timeout=5000)


def test_poll_now_while_polling_says_so(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory, notifier: RecordingNotifier
) -> None:
    app = make_app(write_config(tmp_path))
    app.start()
    app.worker.polling = True  # as seen from the GUI while a cycle runs
    app.menu.poll_now.trigger()
    assert notifier.texts() == ["A poll is already running."]
    app.worker.polling = False


def test_about_names_the_files_and_the_keyring(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory
) -> None:
    app = make_app(write_config(tmp_path))
    app.start()
    app.menu.about.trigger()
    assert app.about is not None and app.about.isVisible()
    text = app.about.text()
    assert str(tmp_path / "postbridge.toml") in text
    assert "keyring" in text.lower()


def test_route_words_fall_back_to_a_plain_note() -> None:
    assert explain_route(None) == "Not routed yet."
    assert explain_route("Delivered by the ISP over ATRN to bob@example.com") == (
        "Delivered by the ISP over ATRN to bob@example.com"
    )


def global_mailbox(dovecot: Dovecot) -> str:
    return f"""
[[mailbox]]
name = "office"
kind = "global"
host = "{dovecot.host}"
port = {dovecot.pop3s_port}
security = "tls"
username = "office"
local_domains = ["example.com"]
ca_file = "{dovecot.ca_file}"
timeout = 10
"""


@pytest.mark.interop
def test_quarantine_retry_and_deliver_to_run_on_the_worker(
    qtbot: QtBot, dovecot: Dovecot, tmp_path: Path, make_app: AppFactory
) -> None:
    add_user(dovecot, "office")
    dovecot.add_message("office", message(1, to="someone@elsewhere.example", subject="lost"))
    dovecot.add_message("office", message(2, to="bob@example.com", subject="found"))
    app = make_app(write_config(tmp_path, global_mailbox(dovecot)))
    app.start()
    run_cycle(qtbot, app)
    app.show_activity()
    window = app.activity
    assert window is not None
    assert window.tabs.tabText(1) == "Quarantine (1)"
    window.tabs.setCurrentIndex(1)
    assert not window.retry_button.isEnabled()
    window.quarantine_view.selectRow(0)
    assert window.retry_button.isEnabled()
    assert "lost" in window.details.toPlainText()
    assert "quarantine" in window.details.toPlainText().lower()

    window.retry_button.click()  # same rules, same result: still no recipient
    qtbot.waitUntil(lambda: "was not delivered" in window.result.text(), timeout=10_000)
    assert window.quarantine_model.rowCount() == 1

    window.quarantine_view.selectRow(0)
    window.deliver_selected(address="not an address")
    assert "not an e-mail address" in window.result.text()
    window.deliver_selected(address="carol@example.com")
    qtbot.waitUntil(
        lambda: "delivered to carol@example.com" in window.result.text(), timeout=10_000
    )
    assert window.quarantine_model.rowCount() == 0
    assert window.tabs.tabText(1) == "Quarantine"
    [delivered] = maildir_messages(tmp_path, "carol@example.com")
    assert b"Subject: lost" in delivered
    assert len(maildir_messages(tmp_path, "bob@example.com")) == 1
