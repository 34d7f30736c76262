"""``postbridge signal --once`` and ``poll --once`` with a signal, as a user runs them.

Words on the terminal and the exit status: 0 when the signal worked, "no mail waiting"
included; 1 when the ISP refused or the login failed; 2 without a [signal] section.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from postbridge import cli
from postbridge.engine.secrets import SecretStore
from tests.fakes.odmr import FakeOdmrServer, QueuedMessage, run_in_thread
from tests.servers.certs import Certificates

PASSWORD = "cli-odmr-pw"


def held(n: int) -> QueuedMessage:
    data = f"From: s{n}@outside.test\r\nSubject: held {n}\r\n\r\nbody {n}\r\n".encode()
    return QueuedMessage(f"s{n}@outside.test", ["alice@example.com"], data)


@pytest.fixture
def isp(certificates: Certificates) -> Iterator[FakeOdmrServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.cert_file, certificates.key_file)
    server = FakeOdmrServer([held(1), held(2)], password=PASSWORD, tls_context=context)
    _, stop = run_in_thread(server)
    try:
        yield server
    finally:
        stop()


def write_config(tmp_path: Path, port: int, ca_file: Path, *, when: str = "before-poll") -> Path:
    path = tmp_path / "postbridge.toml"
    path.write_text(
        f"""
data_dir = "{tmp_path / "data"}"
[signal]
kind = "atrn"
host = "127.0.0.1"
port = {port}
domains = ["example.com"]
username = "example.com"
ca_file = "{ca_file}"
when = "{when}"
timeout = 5
"""
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def delivered(tmp_path: Path) -> int:
    return len(list((tmp_path / "data" / "Mail" / "alice@example.com" / "new").glob("*")))


def test_signal_once_reports_what_arrived(
    tmp_path: Path, isp: FakeOdmrServer, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SecretStore().set("signal", PASSWORD)
    config = write_config(tmp_path, isp.port, ca_file)
    code, out, _ = run(capsys, "--config", str(config), "signal", "--once")
    assert code == cli.EXIT_OK
    assert "signal (ATRN): 2 messages arrived by ATRN and were delivered." in out
    assert delivered(tmp_path) == 2
    code, out, _ = run(capsys, "--config", str(config), "signal", "--once")
    assert code == cli.EXIT_OK  # "no mail waiting" is a success
    assert f"No mail waiting at the ISP (127.0.0.1:{isp.port}: 453 You have no mail)." in out
    assert delivered(tmp_path) == 2


def test_signal_once_with_a_wrong_password_fails_in_words(
    tmp_path: Path, isp: FakeOdmrServer, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SecretStore().set("signal", "wrong")
    config = write_config(tmp_path, isp.port, ca_file)
    code, out, _ = run(capsys, "--config", str(config), "signal", "--once")
    assert code == cli.EXIT_FAILED
    assert "rejected the user name or password for example.com" in out
    assert "wrong" not in out
    assert delivered(tmp_path) == 0


def test_signal_once_without_a_password_says_how_to_store_one(
    tmp_path: Path, isp: FakeOdmrServer, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, isp.port, ca_file)
    code, out, _ = run(capsys, "--config", str(config), "signal", "--once")
    assert code == cli.EXIT_FAILED
    assert "postbridge secret set signal" in out


def test_signal_once_without_a_signal_section_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "postbridge.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    code, _, err = run(capsys, "--config", str(config), "signal", "--once")
    assert code == cli.EXIT_CONFIG
    assert "No online signal is configured" in err and "[signal]" in err


def test_poll_once_sends_the_signal_first(
    tmp_path: Path, isp: FakeOdmrServer, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SecretStore().set("signal", PASSWORD)
    config = write_config(tmp_path, isp.port, ca_file)
    code, out, _ = run(capsys, "--config", str(config), "poll", "--once")
    assert code == cli.EXIT_OK
    assert "signal (ATRN): 2 messages arrived by ATRN and were delivered." in out
    assert delivered(tmp_path) == 2


def test_poll_once_does_not_send_an_interval_signal(
    tmp_path: Path, isp: FakeOdmrServer, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SecretStore().set("signal", PASSWORD)
    config = write_config(tmp_path, isp.port, ca_file, when="interval")
    code, _, err = run(capsys, "--config", str(config), "poll", "--once")
    assert code == cli.EXIT_CONFIG  # no mailboxes and no signal to send: nothing to do
    assert "No mailboxes are configured" in err
    assert isp.sessions == 0
