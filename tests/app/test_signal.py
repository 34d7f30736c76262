"""The online signal in the app: on its own timer or before each poll, reported like a mailbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from postbridge.app.status import AppState
from postbridge.app.worker import Timing
from postbridge.engine.secrets import SecretStore
from tests.app.conftest import AppFactory, RecordingNotifier, maildir_messages, run_cycle
from tests.fakes.odmr import FakeOdmrServer, QueuedMessage, run_in_thread


def held(n: int, to: str) -> QueuedMessage:
    data = (
        f"From: Sender {n} <sender{n}@outside.test>\r\nTo: {to}\r\n"
        f"Subject: held {n}\r\nMessage-ID: <held-{n}@outside.test>\r\n\r\nHello.\r\n"
    ).encode()
    return QueuedMessage(f"sender{n}@outside.test", [to], data)


@pytest.fixture
def odmr() -> Iterator[FakeOdmrServer]:
    server = FakeOdmrServer(
        [held(1, "alice@example.com"), held(2, "bob@example.com"), held(3, "alice@example.com")],
        password="odmr-secret",
        require_tls=False,
    )
    (_host, _port), stop = run_in_thread(server)
    try:
        yield server
    finally:
        stop()


def signal_config(tmp_path: Path, port: int, *, when: str) -> Path:
    path = tmp_path / "postbridge.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[signal]\n"
        'kind = "atrn"\nhost = "127.0.0.1"\n'
        f'port = {port}\nsecurity = "none"\nallow_plaintext_login = true\n'
        f'domains = ["example.com"]\nusername = "example.com"\nwhen = "{when}"\n'
        "interval_minutes = 60\ntimeout = 5\n"
    )
    return path


def test_signal_on_its_own_timer_delivers_and_notifies_once(
    qtbot: QtBot,
    tmp_path: Path,
    odmr: FakeOdmrServer,
    make_app: AppFactory,
    notifier: RecordingNotifier,
) -> None:
    SecretStore().set("signal", "odmr-secret")
    config = signal_config(tmp_path, odmr.port, when="interval")
    app = make_app(config, timing=Timing(first_delay=0.1))
    app.start()
    qtbot.waitUntil(lambda: bool(notifier.notes), timeout=15_000)
    assert notifier.texts() == ["3 held messages delivered — alice 2, bob 1"]
    assert len(maildir_messages(tmp_path, "alice@example.com")) == 2
    assert len(maildir_messages(tmp_path, "bob@example.com")) == 1
    qtbot.waitUntil(lambda: not app.polling, timeout=5000)
    assert app.state is AppState.IDLE


def test_a_refused_signal_before_each_poll_is_notified_once(
    qtbot: QtBot,
    tmp_path: Path,
    odmr: FakeOdmrServer,
    make_app: AppFactory,
    notifier: RecordingNotifier,
) -> None:
    SecretStore().set("signal", "not-the-password")
    app = make_app(signal_config(tmp_path, odmr.port, when="before-poll"))
    app.start()
    run_cycle(qtbot, app)
    assert app.state is AppState.ERROR
    assert "ATRN signal" in app.tooltip_text()
    [note] = notifier.notes
    assert note.is_error and note.title == "Postbridge: ATRN signal"
    assert "not-the-password" not in note.text
    run_cycle(qtbot, app)
    assert len(notifier.notes) == 1  # the same refusal: said once
    assert odmr.queue and maildir_messages(tmp_path, "alice@example.com") == []
