"""The collector against real servers: Dovecot as the ISP; Postfix, LMTP or Maildir as the office.

Every test checks what the office would see: each message arrives exactly once, the
ISP mailbox is emptied only of delivered mail, and failures read as words.
"""

from __future__ import annotations

import email
from pathlib import Path

import pytest

from postbridge.engine import config as configmod
from postbridge.engine.cycle import Collector
from postbridge.engine.ledger import QUARANTINED
from postbridge.engine.secrets import SecretStore
from tests.servers.dovecot import Dovecot
from tests.servers.postfix import PostfixOffice

pytestmark = pytest.mark.interop

PASSWORD = "pa55-word"


def message(n: int, *, to: str = "alice@isp.example", extra: bytes = b"") -> bytes:
    return (
        b"Return-Path: <sender%d@outside.example>\r\n"
        b"From: Sender %d <sender%d@outside.example>\r\n"
        b"To: %s\r\n"
        b"Subject: interop %d\r\n"
        b"Message-ID: <interop-%d@outside.example>\r\n"
        b"\r\n"
        b"Hello %d.\r\n"
        b".leading dot\r\n"
        b"..two dots\r\n" % (n, n, n, to.encode(), n, n, n)
    ) + extra


def ids_of(messages: list[bytes]) -> list[str]:
    return sorted(str(email.message_from_bytes(m)["Message-ID"]) for m in messages)


def write_config(tmp_path: Path, mailbox: str, delivery: str = "") -> configmod.Config:
    path = tmp_path / "postbridge.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n{delivery}\n{mailbox}\n')
    return configmod.load(path)


def user_mailbox(dovecot: Dovecot, *, security: str = "tls", **extra: object) -> str:
    port = dovecot.pop3s_port if security == "tls" else dovecot.pop3_port
    lines = [
        "[[mailbox]]",
        'name = "alice"',
        'kind = "user"',
        f'host = "{dovecot.host}"',
        f"port = {port}",
        f'security = "{security}"',
        'username = "alice"',
        'recipient = "alice@example.com"',
        f'ca_file = "{dovecot.ca_file}"',
        "timeout = 10",
    ]
    for key, value in extra.items():
        lines.append(
            f"{key} = "
            + (str(value).lower() if isinstance(value, bool) else repr(value)).replace("'", '"')
        )
    return "\n".join(lines)


def maildir(config: configmod.Config, address: str) -> list[bytes]:
    root = config.maildir_root / address
    return [p.read_bytes() for p in sorted((root / "new").glob("*"))]


async def collect(config: configmod.Config, **kw: object) -> Collector:
    secrets = SecretStore()
    secrets.set("alice", PASSWORD)
    collector = Collector(config, secrets=secrets, **kw)  # type: ignore[arg-type]
    return collector


@pytest.mark.parametrize(
    ("security", "extra"),
    [
        ("tls", {}),
        ("starttls", {}),
        ("starttls", {"auth": "plain"}),
        ("starttls", {"auth": "user"}),
        ("none", {"auth": "apop"}),
        ("none", {"auth": "user", "allow_plaintext_login": True}),
    ],
    ids=["pop3s", "stls-auto", "stls-sasl-plain", "stls-user-pass", "apop", "plain-allowed"],
)
async def test_collects_into_maildir(
    dovecot: Dovecot, tmp_path: Path, security: str, extra: dict[str, object]
) -> None:
    dovecot.add_user("alice", PASSWORD)
    dovecot.add_messages("alice", [message(i) for i in range(1, 11)])
    config = write_config(tmp_path, user_mailbox(dovecot, security=security, **extra))
    collector = await collect(config)
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert result.ok, result.summaries
    assert result.summaries[0].delivered == 10
    assert dovecot.count("alice") == 0
    delivered = maildir(config, "alice@example.com")
    assert ids_of(delivered) == ids_of([message(i) for i in range(1, 11)])
    # byte-exact body (LF line endings in Maildir), dot lines unstuffed
    first = next(m for m in delivered if b"<interop-1@" in m)
    assert first.endswith(b"Hello 1.\n.leading dot\n..two dots\n")


async def test_wrong_password_is_reported_in_words(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_user("alice", "something-else")
    dovecot.add_message("alice", message(1))
    config = write_config(tmp_path, user_mailbox(dovecot))
    collector = await collect(config)
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    summary = result.summaries[0]
    assert summary.error is not None
    assert "rejected the password" in summary.error and "alice" in summary.error
    assert PASSWORD not in summary.error
    assert dovecot.count("alice") == 1


async def test_plaintext_password_refused_without_encryption(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    dovecot.add_user("alice", PASSWORD)
    dovecot.add_message("alice", message(1))
    config = write_config(tmp_path, user_mailbox(dovecot, security="none", auth="user"))
    collector = await collect(config)
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    error = result.summaries[0].error or ""
    assert "unencrypted" in error.lower() or "plain" in error.lower(), error
    assert dovecot.count("alice") == 1
    assert PASSWORD.encode() not in dovecot.log_text().encode()


async def test_untrusted_certificate_is_a_tls_error(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_user("alice", PASSWORD)
    text = user_mailbox(dovecot).replace(f'ca_file = "{dovecot.ca_file}"\n', "")
    config = write_config(tmp_path, text)
    collector = await collect(config)
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    summary = result.summaries[0]
    assert summary.error is not None and "certificate" in summary.error.lower()
    assert summary.error_needs_user


async def test_leave_on_server_across_cycles(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_user("alice", PASSWORD)
    dovecot.add_messages("alice", [message(i) for i in range(1, 4)])
    config = write_config(tmp_path, user_mailbox(dovecot, leave_on_server_days=2))
    now = [2_000_000_000.0]
    collector = await collect(config, clock=lambda: now[0])
    try:
        first = await collector.run_cycle()
        dovecot.add_message("alice", message(4))
        second = await collector.run_cycle()
        assert (first.summaries[0].downloaded, second.summaries[0].downloaded) == (3, 1)
        assert dovecot.count("alice") == 4
        now[0] += 2 * 86400 + 60
        third = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert third.summaries[0].downloaded == 0
    assert third.summaries[0].removed == 4
    assert dovecot.count("alice") == 0
    assert len(maildir(config, "alice@example.com")) == 4


def smtp_delivery(office: PostfixOffice) -> str:
    return (
        "[delivery]\n"
        'kind = "smtp"\n'
        f'host = "{office.host}"\n'
        f"port = {office.smtp_port}\n"
        'security = "starttls"\n'
        f'ca_file = "{office.ca_file}"\n'
        "timeout = 10\n"
    )


async def test_delivers_to_postfix_by_smtp(
    dovecot: Dovecot, postfix_office: PostfixOffice, tmp_path: Path
) -> None:
    dovecot.add_user("alice", PASSWORD)
    dovecot.add_messages("alice", [message(i) for i in range(1, 6)])
    config = write_config(tmp_path, user_mailbox(dovecot), smtp_delivery(postfix_office))
    collector = await collect(config)
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert result.ok, result.summaries
    arrived = postfix_office.wait_for("alice@example.com", 5)
    assert ids_of(arrived) == ids_of([message(i) for i in range(1, 6)])
    assert all(b"X-Postbridge-Original-To: alice" in m for m in arrived)
    assert dovecot.count("alice") == 0


async def test_delivers_to_dovecot_lmtp(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_user("alice", PASSWORD)
    dovecot.add_user("office", "x")
    dovecot.add_messages("alice", [message(i) for i in range(1, 4)])
    lmtp = (
        "[delivery]\n"
        'kind = "lmtp"\n'
        f'host = "{dovecot.host}"\n'
        f"port = {dovecot.lmtp_port}\n"
        'security = "none"\n'
    )
    mailbox = user_mailbox(dovecot).replace(
        'recipient = "alice@example.com"', 'recipient = "office@example.com"'
    )
    config = write_config(tmp_path, mailbox, lmtp)
    collector = await collect(config)
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert result.ok, result.summaries
    assert dovecot.count("alice") == 0
    assert ids_of(dovecot.messages("office")) == ids_of([message(i) for i in range(1, 4)])


async def test_4xx_keeps_mail_then_delivers(
    dovecot: Dovecot, postfix_office: PostfixOffice, tmp_path: Path
) -> None:
    dovecot.add_user("alice", PASSWORD)
    dovecot.add_messages("alice", [message(1), message(2)])
    config = write_config(tmp_path, user_mailbox(dovecot), smtp_delivery(postfix_office))
    postfix_office.defer("alice@example.com")
    collector = await collect(config)
    try:
        first = await collector.run_cycle()
        assert first.summaries[0].deferred == 2
        assert first.summaries[0].delivered == 0
        assert dovecot.count("alice") == 2  # still at the ISP: nothing was accepted
        postfix_office.undefer("alice@example.com")
        await collector.target.aclose()  # a new connection sees the change
        second = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert second.ok and second.summaries[0].delivered == 2
    assert ids_of(postfix_office.wait_for("alice@example.com", 2)) == ids_of(
        [message(1), message(2)]
    )
    assert dovecot.count("alice") == 0


async def test_5xx_is_quarantined_and_can_be_retried(
    dovecot: Dovecot, postfix_office: PostfixOffice, tmp_path: Path
) -> None:
    dovecot.add_user("alice", PASSWORD)
    dovecot.add_message("alice", message(1))
    mailbox = user_mailbox(dovecot).replace(
        'recipient = "alice@example.com"', 'recipient = "dave@example.com"'
    )
    config = write_config(tmp_path, mailbox, smtp_delivery(postfix_office))
    collector = await collect(config)
    try:
        result = await collector.run_cycle()
        assert result.summaries[0].quarantined == 1
        (row,) = collector.ledger.in_state(QUARANTINED)
        assert row.last_error is not None and "550" in row.last_error
        assert dovecot.count("alice") == 0  # safe in the spool; never dropped
        postfix_office.add_user("dave@example.com")
        await collector.target.aclose()
        retried = await collector.retry_quarantined(row.id)
    finally:
        await collector.aclose()
    assert retried.delivered == 1
    assert ids_of(postfix_office.wait_for("dave@example.com", 1)) == ids_of([message(1)])
