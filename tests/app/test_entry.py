"""``postbridge`` starts the app; SIGTERM ends it the same gentle way as Quit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postbridge import cli
from tests.app.conftest import write_config


def test_no_subcommand_starts_the_app_and_hidden_is_passed_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, object]] = []

    def fake_app(**kw: object) -> int:
        calls.append(kw)
        return 0

    monkeypatch.setattr("postbridge.app.main.main", fake_app)
    assert cli.main([]) == 0
    assert cli.main(["--hidden", "--config", str(tmp_path / "x.toml")]) == 0
    assert calls == [
        {"config_path": None, "hidden": False},
        {"config_path": tmp_path / "x.toml", "hidden": True},
    ]


def test_status_is_still_available_as_a_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert cli.main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert f"Config:  {config}" in out and "Deliver: maildir" in out


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_termination_signal_quits_cleanly(tmp_path: Path, signum: int) -> None:
    config = write_config(tmp_path)  # no mailboxes: nothing needs a server
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "postbridge", "-v", "--hidden", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        )
    try:
        started = _wait_for(log, "Postbridge is running", proc, timeout=30)
        assert "Postbridge is running" in started, started
        proc.send_signal(signum)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert "quit requested by a signal" in text
    assert "QThread: Destroyed" not in text
    assert "Traceback" not in text
