"""ETRN against a real Postfix playing the ISP: the mail it holds reaches the office only then.

The ISP Postfix (tests/servers/postfix.py, ``PostfixIsp``) relays example.com to the office
Postfix through a transport in ``defer_transports``, with example.com in
``fast_flush_domains``: mail waits in its queue until someone says ``ETRN example.com``. A
domain it relays but does not fast-flush answers 459, and it does not know ATRN at all.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from postbridge import cli
from postbridge.engine.secrets import SecretStore
from tests.servers.postfix import PostfixIsp, PostfixOffice

pytestmark = pytest.mark.interop

HOLD_CHECK = 1.5  # seconds: Postfix would have delivered well within this if it were not held


def message(n: int, to: str) -> bytes:
    return (
        f"From: sender{n}@outside.test\r\nTo: {to}\r\nSubject: held {n}\r\n"
        f"Message-ID: <etrn-{n}@outside.test>\r\n\r\nHeld until ETRN.\r\n"
    ).encode()


def write_config(
    tmp_path: Path, isp: PostfixIsp, ca_file: Path, *domains: str, extra: str = ""
) -> Path:
    listed = ", ".join(f'"{d}"' for d in domains)
    path = tmp_path / "postbridge.toml"
    path.write_text(
        f"""
data_dir = "{tmp_path / "data"}"
{extra}
[signal]
kind = "etrn"
host = "127.0.0.1"
port = {isp.smtp_port}
security = "starttls"
ca_file = "{ca_file}"
domains = [{listed}]
timeout = 10
"""
    )
    return path


def run(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, str]:
    code = cli.main(["--config", str(config), "signal", "--once"])
    out, err = capsys.readouterr()
    return code, out + err


def hold(isp: PostfixIsp, office: PostfixOffice, *messages: tuple[int, str]) -> None:
    for n, to in messages:
        isp.send(message(n, to), sender=f"sender{n}@outside.test", recipients=[to])
    time.sleep(HOLD_CHECK)
    assert isp.queued() == len(messages), isp.log_text()[-2000:]
    assert office.count("alice@example.com") == office.count("bob@example.com") == 0


def test_etrn_releases_the_mail_the_isp_holds(
    tmp_path: Path,
    postfix_isp: PostfixIsp,
    postfix_office: PostfixOffice,
    ca_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hold(postfix_isp, postfix_office, (1, "alice@example.com"), (2, "bob@example.com"))
    config = write_config(tmp_path, postfix_isp, ca_file, "example.com", "held.test")
    code, out = run(capsys, config)
    assert code == cli.EXIT_OK, out
    assert f"ETRN sent to 127.0.0.1:{postfix_isp.smtp_port} — " in out
    assert "example.com: the ISP started delivering the held mail" in out
    assert "held.test: the ISP started delivering the held mail" in out
    (alice,) = postfix_office.wait_for("alice@example.com", 1)
    (bob,) = postfix_office.wait_for("bob@example.com", 1)
    assert b"<etrn-1@outside.test>" in alice and b"<etrn-2@outside.test>" in bob
    postfix_isp.wait_for_empty_queue()
    # One session: STARTTLS, then one ETRN per domain (Postfix's per-session counters).
    assert "ehlo=2 starttls=1 etrn=2 quit=1" in postfix_isp.log_text()


def test_etrn_reports_what_arrived_in_a_maildir_target_it_can_see(
    tmp_path: Path,
    postfix_isp: PostfixIsp,
    postfix_office: PostfixOffice,
    ca_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hold(postfix_isp, postfix_office, (3, "alice@example.com"))
    # Postbridge's Maildir target is where the office server stores its mail.
    maildirs = f'[delivery]\nkind = "maildir"\npath = "{postfix_office.root / "mail"}"'
    config = write_config(tmp_path, postfix_isp, ca_file, "example.com", extra=maildirs)
    text = config.read_text().replace("timeout = 10", "timeout = 10\nwatch_seconds = 15")
    config.write_text(text)
    code, out = run(capsys, config)
    assert code == cli.EXIT_OK, out
    assert out.rstrip().endswith("1 message arrived in the Maildir folders.")
    assert postfix_office.count("alice@example.com") == 1


def test_a_domain_outside_fast_flush_is_refused_and_the_rest_still_released(
    tmp_path: Path,
    postfix_isp: PostfixIsp,
    postfix_office: PostfixOffice,
    ca_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hold(postfix_isp, postfix_office, (4, "alice@example.com"))
    config = write_config(tmp_path, postfix_isp, ca_file, "noflush.test", "example.com")
    code, out = run(capsys, config)
    assert code == cli.EXIT_FAILED
    assert "noflush.test: the ISP does not release mail for this domain on request" in out
    assert "459" in out
    assert "example.com: the ISP started delivering the held mail" in out
    postfix_office.wait_for("alice@example.com", 1)


def test_atrn_against_postfix_reads_as_not_supported(
    tmp_path: Path,
    postfix_isp: PostfixIsp,
    ca_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    SecretStore().set("signal", "never-sent")
    config = write_config(tmp_path, postfix_isp, ca_file, "example.com")
    text = config.read_text().replace('kind = "etrn"', 'kind = "atrn"\nusername = "example.com"')
    config.write_text(text)
    code, out = run(capsys, config)
    assert code == cli.EXIT_FAILED
    assert f"The ISP's ODMR server at 127.0.0.1:{postfix_isp.smtp_port} does not offer ATRN" in out
    assert "AUTH" not in postfix_isp.log_text()
