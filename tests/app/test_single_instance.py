"""One instance per user: a second launch wakes the first and exits 0; stale locks do not block."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pytestqt.qtbot import QtBot

from postbridge.app.single_instance import HIDDEN, SHOW, SingleInstance, default_lock_path
from tests.app.conftest import AppFactory


def launch(*args: str) -> subprocess.Popen[str]:
    """``postbridge`` as a user would start it (same HOME and XDG dirs as this test)."""
    return subprocess.Popen(
        [sys.executable, "-m", "postbridge", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(qtbot: QtBot, proc: subprocess.Popen[str]) -> tuple[int, str]:
    # Keep this process's event loop running: the first instance answers from it.
    qtbot.waitUntil(lambda: proc.poll() is not None, timeout=20_000)
    _, err = proc.communicate()
    return proc.returncode, err


def test_second_launch_shows_the_first_ones_activity_and_exits_0(
    qtbot: QtBot, make_app: AppFactory
) -> None:
    first = SingleInstance()
    assert first.acquire()
    app = make_app()
    app.start()
    first.messageReceived.connect(app.on_second_launch)
    try:
        with qtbot.waitSignal(first.messageReceived, timeout=20_000) as signal:
            code, err = finish(qtbot, launch())
        assert code == 0, err
        assert signal.args == [SHOW]
        assert app.activity is not None and app.activity.isVisible()

        app.activity.hide()
        with qtbot.waitSignal(first.messageReceived, timeout=20_000) as signal:
            code, err = finish(qtbot, launch("--hidden"))  # the login autostart: stay quiet
        assert code == 0, err
        assert signal.args == [HIDDEN]
        assert not app.activity.isVisible()
    finally:
        first.release()


def test_a_lock_left_by_a_killed_instance_does_not_block_the_next(tmp_path: Path) -> None:
    lock = tmp_path / "instance.lock"
    holder = (
        "import os, sys\n"
        "from PySide6.QtCore import QLockFile\n"
        "lock = QLockFile(sys.argv[1])\n"
        "assert lock.tryLock(0)\n"
        "os._exit(0)  # like a crash: the lock file stays behind\n"
    )
    subprocess.run([sys.executable, "-c", holder, str(lock)], check=True, timeout=30)
    assert lock.exists()
    instance = SingleInstance(lock)
    try:
        assert instance.acquire()
    finally:
        instance.release()


def test_a_live_lock_is_respected(tmp_path: Path) -> None:
    first, second = SingleInstance(tmp_path / "a.lock"), SingleInstance(tmp_path / "a.lock")
    try:
        assert first.acquire()
        assert not second.acquire()
    finally:
        first.release()
    assert second.acquire()
    second.release()


def test_the_lock_lives_in_the_users_data_folder(tmp_path: Path) -> None:
    assert str(default_lock_path()).startswith(str(tmp_path))
