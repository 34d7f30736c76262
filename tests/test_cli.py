"""The ``postbridge`` command as a user runs it: output in words, exit codes, no secrets leaked."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postbridge import cli
from postbridge.engine.secrets import SecretStore
from tests.fakes.pop3 import FakePop3Server, run_in_thread

PASSWORD = "cli-secret-pw"


def message(n: int, to: str = "alice@example.com") -> bytes:
    return (
        f"From: sender{n}@outside.example\r\nTo: {to}\r\nSubject: cli {n}\r\n"
        f"Message-ID: <cli-{n}@outside.example>\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.fixture
def pop3() -> Iterator[FakePop3Server]:
    server = FakePop3Server([message(i) for i in range(1, 4)], username="alice", password=PASSWORD)
    _, stop = run_in_thread(server)
    try:
        yield server
    finally:
        stop()


def write_config(tmp_path: Path, port: int, *, kind: str = "user") -> Path:
    box = (
        'recipient = "alice@example.com"'
        if kind == "user"
        else 'local_domains = ["example.com"]\npostmaster = "admin@example.com"'
    )
    path = tmp_path / "postbridge.toml"
    path.write_text(
        f"""
data_dir = "{tmp_path / "data"}"
[[mailbox]]
name = "alice"
kind = "{kind}"
host = "127.0.0.1"
port = {port}
security = "none"
allow_plaintext_login = true
username = "alice"
timeout = 3
{box}
"""
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_poll_once_prints_summary_and_exits_zero(
    tmp_path: Path, pop3: FakePop3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    SecretStore().set("alice", PASSWORD)
    config = write_config(tmp_path, pop3.port)
    code, out, _ = run(capsys, "--config", str(config), "poll", "--once")
    assert code == cli.EXIT_OK
    assert "alice: 3 downloaded, 3 delivered, 0 kept on server, 3 removed from server" in out
    assert pop3.remaining == []
    maildir = tmp_path / "data" / "Mail" / "alice@example.com" / "new"
    assert len(list(maildir.iterdir())) == 3


def test_poll_failure_exits_one_with_words(
    tmp_path: Path, pop3: FakePop3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    SecretStore().set("alice", "not-the-password")
    config = write_config(tmp_path, pop3.port)
    code, out, _ = run(capsys, "--config", str(config), "poll", "--once")
    assert code == cli.EXIT_FAILED
    assert "ERROR: The ISP rejected the password for alice" in out
    assert "not-the-password" not in out


def test_config_error_exits_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "postbridge.toml"
    path.write_text('[[mailbox]]\nname = "a"\nhost = "h"\nusername = "u"\nrecipient = "nope"\n')
    code, _, err = run(capsys, "--config", str(path), "poll", "--once")
    assert code == cli.EXIT_CONFIG
    assert str(path) in err and "recipient" in err


def test_config_from_environment(
    tmp_path: Path,
    pop3: FakePop3Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    SecretStore().set("alice", PASSWORD)
    monkeypatch.setenv("POSTBRIDGE_CONFIG", str(write_config(tmp_path, pop3.port)))
    code, out, _ = run(capsys, "poll", "--once", "--mailbox", "alice")
    assert code == cli.EXIT_OK and "3 delivered" in out


def test_secret_set_reads_stdin_and_never_writes_plain_config(
    tmp_path: Path,
    pop3: FakePop3Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(tmp_path, pop3.port)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, out, _ = run(capsys, "secret", "set", "alice")
    assert code == cli.EXIT_OK
    assert "stored" in out and "not the system keyring" in out  # the test backend is a file
    assert SecretStore().get("alice") == PASSWORD
    code, _, _ = run(capsys, "--config", str(config), "-v", "poll", "--once")
    assert code == cli.EXIT_OK
    assert PASSWORD not in config.read_text()
    logs = Path(os.environ["XDG_STATE_HOME"])
    for log in logs.rglob("*.log*"):
        assert PASSWORD not in log.read_text(errors="replace"), log


def test_check_changes_nothing(
    tmp_path: Path, pop3: FakePop3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    SecretStore().set("alice", PASSWORD)
    config = write_config(tmp_path, pop3.port)
    code, out, _ = run(capsys, "--config", str(config), "check")
    assert "OK    mailbox alice: Logged in to 127.0.0.1" in out
    assert "3 message(s)" in out and "Nothing was downloaded or deleted" in out
    assert "OK    delivery:" in out and "are writable" in out
    assert "Keyring:" in out and "not the system keyring" in out
    assert len(pop3.remaining) == 3
    assert code == cli.EXIT_OK


def test_dry_run_shows_routes_and_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FakePop3Server(
        [
            message(1, "Alice <alice@example.com>, x@elsewhere.example"),
            message(2, "z@outside.test"),
        ],
        username="alice",
        password=PASSWORD,
    )
    _, stop = run_in_thread(server)
    try:
        SecretStore().set("alice", PASSWORD)
        config = write_config(tmp_path, server.port, kind="global")
        code, out, _ = run(capsys, "--config", str(config), "poll", "--once", "--dry-run")
    finally:
        stop()
    assert code == cli.EXIT_OK
    assert "-> alice@example.com" in out
    assert "-> admin@example.com" in out  # nobody local: the postmaster
    assert "nothing was delivered or deleted" in out
    assert len(server.remaining) == 2
    assert not (tmp_path / "data" / "Mail").exists()


def test_suggest_envelope_names_the_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heads = [
        f"Delivered-To: user{i}@example.com\r\n".encode() + message(i, "list@elsewhere.example")
        for i in range(5)
    ]
    server = FakePop3Server(heads, username="alice", password=PASSWORD)
    _, stop = run_in_thread(server)
    try:
        SecretStore().set("alice", PASSWORD)
        config = write_config(tmp_path, server.port, kind="global")
        code, out, _ = run(capsys, "--config", str(config), "suggest-envelope", "alice")
    finally:
        stop()
    assert code == cli.EXIT_OK
    assert 'envelope_header = "Delivered-To"' in out


def test_quarantine_list_retry_and_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FakePop3Server(
        [message(1, "nobody@outside.example")], username="alice", password=PASSWORD
    )
    _, stop = run_in_thread(server)
    try:
        SecretStore().set("alice", PASSWORD)
        path = write_config(tmp_path, server.port, kind="global")
        path.write_text(path.read_text().replace('postmaster = "admin@example.com"', ""))
        code, out, _ = run(capsys, "--config", str(path), "poll", "--once")
        assert "1 quarantined" in out
    finally:
        stop()
    code, out, _ = run(capsys, "--config", str(path), "quarantine", "list")
    assert "cli 1" in out and "sender1@outside.example" in out
    ledger_id = out.split()[0]
    code, out, _ = run(capsys, "--config", str(path), "history", "--message", ledger_id)
    assert "quarantined" in out and "Route:" in out
    code, out, _ = run(
        capsys, "--config", str(path), "quarantine", "retry", ledger_id, "--to", "admin@example.com"
    )
    assert code == cli.EXIT_OK and "delivered" in out
    assert len(list((tmp_path / "data" / "Mail" / "admin@example.com" / "new").iterdir())) == 1
    code, out, _ = run(capsys, "--config", str(path), "quarantine", "list")
    assert "The quarantine is empty." in out


def test_run_polls_until_sigterm(tmp_path: Path) -> None:
    """``postbridge run`` (headless service): polls at once, then stops cleanly on SIGTERM."""
    server = FakePop3Server([message(i) for i in range(1, 4)], username="alice", password=PASSWORD)
    _, stop = run_in_thread(server)
    try:
        SecretStore().set("alice", PASSWORD)
        config = write_config(tmp_path, server.port)
        proc = subprocess.Popen(
            [sys.executable, "-m", "postbridge", "--config", str(config), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        maildir = tmp_path / "data" / "Mail" / "alice@example.com" / "new"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            maildir.is_dir() and len(list(maildir.iterdir())) == 3
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        stop()
    assert proc.returncode == 0, err
    assert "3 delivered" in out
    assert len(list(maildir.iterdir())) == 3
    assert server.remaining == []


def test_a_command_run_as_a_program_leaves_nothing_unsaid_or_unrecorded(
    tmp_path: Path, pop3: FakePop3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m postbridge``: after a command the process skips the interpreter's
    teardown (cli.console); its output, exit code and ledger are complete all the same."""
    config = write_config(tmp_path, pop3.port)
    command = [sys.executable, "-m", "postbridge", "--config", str(config), "poll", "--once"]
    SecretStore().set("alice", "not-the-password")
    failed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert failed.returncode == cli.EXIT_FAILED
    assert "ERROR" in failed.stdout and "password" in failed.stdout.lower()

    SecretStore().set("alice", PASSWORD)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == cli.EXIT_OK, done.stderr
    # The last line, printed just before the process left: flushed, not lost.
    assert done.stdout.rstrip().endswith(
        "alice: 3 downloaded, 3 delivered, 0 kept on server, 3 removed from server, 0 quarantined"
    )
    assert pop3.remaining == []
    code, out, _ = run(capsys, "--config", str(config), "history")
    assert code == cli.EXIT_OK and out.count("delivered") == 3


def test_app_without_a_desktop_session_says_what_to_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run(capsys)
    assert code == cli.EXIT_CONFIG
    assert "needs a desktop session" in err and "postbridge run" in err
    assert cli.no_display_problem({"DISPLAY": ":0"}) is None
    assert cli.no_display_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
