"""Fixtures for the Qt shell: a TrayApp with recording seams, and configs for a private Dovecot.

The app runs on the offscreen platform (tests/conftest.py), where there is no system tray, so
every TrayApp here shows the no-tray window; the tray icon itself is exercised by
tests/screenshots.py under Xvfb with a real tray host.
"""

from __future__ import annotations

import email
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QUrl
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from postbridge.app.autostart import XdgAutostart
from postbridge.app.controller import TrayApp
from postbridge.app.gcguard import collect_on_gui_thread
from postbridge.app.status import Notification
from postbridge.app.worker import Timing
from postbridge.engine.secrets import SecretStore
from tests.servers.dovecot import Dovecot

PASSWORD = "pa55-word"

# The offscreen platform reports what it cannot do (window hints, raise) as warnings, which
# qt_log_level_fail would turn into failures; they say nothing about Postbridge.
OFFSCREEN_NOISE = r"This plugin does not support"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            # pytest-qt reads only the closest marker: carry a test's own patterns along.
            own = [p for m in item.iter_markers("qt_log_ignore") for p in m.args]
            item.add_marker(pytest.mark.qt_log_ignore(OFFSCREEN_NOISE, *own), append=False)


class RecordingNotifier:
    def __init__(self) -> None:
        self.notes: list[Notification] = []

    def notify(self, note: Notification) -> None:
        self.notes.append(note)

    def texts(self) -> list[str]:
        return [n.text for n in self.notes]


class Seams:
    """What the app did to the outside world instead of doing it."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.quits = 0

    def open_url(self, url: QUrl) -> bool:
        self.opened.append(url.toLocalFile())
        return True

    def quit_app(self) -> None:
        self.quits += 1


def message(n: int, *, to: str = "alice@isp.example", subject: str | None = None) -> bytes:
    subject = subject or f"app test {n}"
    return (
        f"Return-Path: <sender{n}@outside.example>\r\n"
        f"From: Sender {n} <sender{n}@outside.example>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <app-{n}@outside.example>\r\n"
        "\r\n"
        f"Hello {n}.\r\n"
    ).encode()


def user_mailbox(dovecot: Dovecot, name: str, recipient: str) -> str:
    return f"""
[[mailbox]]
name = "{name}"
kind = "user"
host = "{dovecot.host}"
port = {dovecot.pop3s_port}
security = "tls"
username = "{name}"
recipient = "{recipient}"
ca_file = "{dovecot.ca_file}"
timeout = 10
"""


def write_config(
    tmp_path: Path, *mailboxes: str, interval: int = 15, data_dir: Path | None = None
) -> Path:
    path = tmp_path / "postbridge.toml"
    path.write_text(
        f'data_dir = "{data_dir or tmp_path / "data"}"\n\n'
        f"[schedule]\ninterval_minutes = {interval}\n" + "".join(mailboxes)
    )
    return path


def maildir_messages(tmp_path: Path, address: str) -> list[bytes]:
    root = tmp_path / "data" / "Mail" / address / "new"
    return [p.read_bytes() for p in sorted(root.glob("*"))] if root.is_dir() else []


def message_ids(messages: list[bytes]) -> list[str]:
    return sorted(str(email.message_from_bytes(m)["Message-ID"]) for m in messages)


def add_user(dovecot: Dovecot, name: str, *, password: str = PASSWORD) -> None:
    dovecot.add_user(name, password)
    SecretStore().set(name, password)


AppFactory = Callable[..., TrayApp]


@pytest.fixture(scope="session", autouse=True)
def gc_on_gui_thread(qapp: QApplication) -> Iterator[None]:
    """As in the app (main.make_application): cycles are only collected on the GUI thread."""
    guard = collect_on_gui_thread(qapp)
    yield
    guard.remove()


@pytest.fixture
def seams() -> Seams:
    return Seams()


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def make_app(
    qtbot: QtBot, tmp_path: Path, seams: Seams, notifier: RecordingNotifier
) -> Iterator[AppFactory]:
    """Build TrayApps that never poll on their own unless ``timing`` says so; shut them down."""
    made: list[TrayApp] = []

    def factory(config_path: Path | None = None, **kw: object) -> TrayApp:
        options: dict[str, object] = {
            "config_path": config_path or tmp_path / "postbridge.toml",
            "timing": Timing(first_delay=3600, stop_grace=5.0, progress_every=0.05),
            "notifier": notifier,
            "autostart": XdgAutostart(["/opt/postbridge/postbridge", "--hidden"]),
            "tray_wait": 0.0,
            "open_url": seams.open_url,
            "quit_app": seams.quit_app,
        }
        options.update(kw)
        app = TrayApp(**options)  # type: ignore[arg-type]
        made.append(app)
        return app

    yield factory
    for app in made:
        app.shutdown(timeout=30)
        assert app.worker_thread.isFinished() or not app.worker_thread.isRunning()
        for window in (app.activity, app.no_tray, app.no_config, app.about, app.wizard):
            if window is not None:
                window.deleteLater()


def run_cycle(qtbot: QtBot, app: TrayApp, *, timeout: int = 30_000) -> None:
    """Poll now and wait for the cycle's result to reach the GUI.

    Waits on the GUI side (qtbot.waitSignal on a worker signal would run its slot on the
    worker thread, which is exactly what the app must never do).
    """
    before = app.last_finished
    app.menu.poll_now.trigger()
    qtbot.waitUntil(lambda: app.last_finished is not before and not app.polling, timeout=timeout)
