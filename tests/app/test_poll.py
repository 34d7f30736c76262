"""The app against a private Dovecot: Poll now, notifications, errors, pause, quit mid-poll."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from postbridge.app.status import AppState
from postbridge.app.worker import Timing
from postbridge.engine import config as configmod
from postbridge.engine.cycle import Collector
from postbridge.engine.secrets import SecretStore
from tests.app.conftest import (
    AppFactory,
    RecordingNotifier,
    Seams,
    add_user,
    maildir_messages,
    message,
    message_ids,
    run_cycle,
    user_mailbox,
    write_config,
)
from tests.servers.dovecot import Dovecot

pytestmark = pytest.mark.interop


def test_poll_now_delivers_and_activity_shows_the_rows(
    qtbot: QtBot, dovecot: Dovecot, tmp_path: Path, make_app: AppFactory
) -> None:
    add_user(dovecot, "alice")
    dovecot.add_messages("alice", [message(i) for i in range(1, 4)])
    app = make_app(write_config(tmp_path, user_mailbox(dovecot, "alice", "alice@example.com")))
    app.start()
    run_cycle(qtbot, app)

    assert len(maildir_messages(tmp_path, "alice@example.com")) == 3
    assert dovecot.count("alice") == 0
    assert app.state is AppState.IDLE
    assert "3 delivered" in app.tooltip_text()

    app.menu.activity.trigger()
    window = app.activity
    assert window is not None and window.isVisible()
    model = window.recent_model
    assert model.rowCount() == 3
    assert {model.index(r, 1).data() for r in range(3)} == {"Sender 1", "Sender 2", "Sender 3"}
    subjects = {model.index(r, 2).data() for r in range(3)}
    assert subjects == {"app test 1", "app test 2", "app test 3"}
    assert {model.index(r, 4).data() for r in range(3)} == {"alice@example.com"}
    assert {model.index(r, 5).data() for r in range(3)} == {"Delivered"}
    window.recent_view.selectRow(0)
    details = window.details.toPlainText()
    assert details.startswith("Delivered. Sent to alice@example.com because")  # the why, first
    assert "alice@example.com: delivered" in details
    assert "alice: last collected" in window.strip.text()
    window.filter.setText("TEST 2")  # case-insensitive, over every column
    assert window.recent_proxy.rowCount() == 1


def test_notification_counts_per_recipient(
    qtbot: QtBot,
    dovecot: Dovecot,
    tmp_path: Path,
    make_app: AppFactory,
    notifier: RecordingNotifier,
) -> None:
    add_user(dovecot, "alice")
    add_user(dovecot, "bob")
    dovecot.add_messages("alice", [message(i) for i in range(1, 6)])
    dovecot.add_messages("bob", [message(i, to="bob@isp.example") for i in range(6, 10)])
    config = write_config(
        tmp_path,
        user_mailbox(dovecot, "alice", "alice@example.com"),
        user_mailbox(dovecot, "bob", "bob@example.com"),
    )
    app = make_app(config)
    app.start()
    run_cycle(qtbot, app)
    assert notifier.texts() == ["9 held messages delivered — alice 5, bob 4"]

    run_cycle(qtbot, app)  # nothing new: nothing to say
    assert len(notifier.notes) == 1


def test_error_needing_the_user_is_notified_once_per_change(
    qtbot: QtBot,
    dovecot: Dovecot,
    tmp_path: Path,
    make_app: AppFactory,
    notifier: RecordingNotifier,
) -> None:
    add_user(dovecot, "alice")
    SecretStore().set("alice", "not-the-password")
    dovecot.add_message("alice", message(1))
    app = make_app(write_config(tmp_path, user_mailbox(dovecot, "alice", "alice@example.com")))
    app.start()
    run_cycle(qtbot, app)
    assert app.state is AppState.ERROR
    assert len(notifier.notes) == 1 and notifier.notes[0].is_error
    assert "password" in notifier.notes[0].text
    assert "not-the-password" not in notifier.notes[0].text

    run_cycle(qtbot, app)  # same wrong password: already said (the recovery: test_status.py)
    assert len(notifier.notes) == 1
    assert app.state is AppState.ERROR


def test_transient_error_changes_only_icon_and_tooltip(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory, notifier: RecordingNotifier
) -> None:
    closed = (
        '\n[[mailbox]]\nname = "alice"\nhost = "127.0.0.1"\nport = 9\n'
        'security = "tls"\nusername = "alice"\nrecipient = "alice@example.com"\ntimeout = 5\n'
    )
    SecretStore().set("alice", "pw")
    app = make_app(write_config(tmp_path, closed))
    app.start()
    run_cycle(qtbot, app)
    assert app.state is AppState.ERROR
    assert "alice:" in app.tooltip_text()
    assert notifier.notes == []


def test_pause_stops_the_schedule(qtbot: QtBot, tmp_path: Path, make_app: AppFactory) -> None:
    # No mailboxes: a cycle takes milliseconds, so the schedule alone decides how many run.
    config = write_config(tmp_path, interval=1)
    app = make_app(config, timing=Timing(first_delay=0.2, minute=0.2))
    app.start()
    qtbot.waitUntil(lambda: app.cycles_seen >= 2, timeout=5000)

    app.menu.pause.trigger()
    assert app.menu.pause.text() == "Resume polling"
    assert app.state is AppState.PAUSED
    assert "Polling is paused" in app.tooltip_text()
    qtbot.wait(300)  # a cycle in flight when Pause was pressed may still finish
    paused_at = app.cycles_seen
    qtbot.wait(1000)  # five intervals
    assert app.cycles_seen == paused_at
    assert app.next_poll is None

    app.menu.pause.trigger()
    assert app.menu.pause.text() == "Pause polling"
    qtbot.waitUntil(lambda: app.cycles_seen > paused_at, timeout=5000)


def test_quit_mid_poll_loses_nothing_and_the_next_cycle_delivers_the_rest(
    qtbot: QtBot, dovecot: Dovecot, tmp_path: Path, make_app: AppFactory, seams: Seams
) -> None:
    add_user(dovecot, "alice")
    sent = [message(i) for i in range(1, 301)]
    dovecot.add_messages("alice", sent)
    config_path = write_config(tmp_path, user_mailbox(dovecot, "alice", "alice@example.com"))
    app = make_app(config_path)
    app.start()
    # Quit as soon as the first progress report arrives: mid-poll by construction.
    app.worker.progress.connect(app.request_quit)
    app.menu.poll_now.trigger()
    qtbot.waitUntil(lambda: app.worker_thread.isFinished(), timeout=10_000)
    # QThread.finished reaches the GUI thread as a queued signal: the app quits on the
    # next pass of the event loop, not necessarily before isFinished() turns true.
    qtbot.waitUntil(lambda: seams.quits > 0, timeout=5_000)
    assert seams.quits == 1
    first = maildir_messages(tmp_path, "alice@example.com")
    assert 0 < len(first) < 300, "quit should have stopped the poll part-way"

    async def collect_rest() -> None:  # the engine alone, as the next app start would
        config = configmod.load(config_path)
        collector = Collector(config)
        try:
            finished = await collector.run_cycle()
        finally:
            await collector.aclose()
        assert finished.ok, finished.summaries

    asyncio.run(collect_rest())
    delivered = maildir_messages(tmp_path, "alice@example.com")
    assert message_ids(delivered) == message_ids(sent)  # every message, each exactly once
    assert dovecot.count("alice") == 0
