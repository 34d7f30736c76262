"""A global mailbox end to end, with the envelope headers real servers write.

A private Postfix plays the ISP: it accepts mail for example.com and stores all of it in
one Dovecot mailbox ("company"), one copy per envelope recipient, with Delivered-To and
X-Original-To naming that recipient. Postbridge collects the mailbox and delivers by SMTP
to the office Postfix. Each message must end in exactly the right local mailboxes — Bcc
included — and nowhere else.
"""

from __future__ import annotations

import asyncio
import email
from collections.abc import Iterator
from pathlib import Path

import pytest

from postbridge.engine import config as configmod
from postbridge.engine.cycle import Collector
from postbridge.engine.ledger import Ledger, Row
from postbridge.engine.routing.router import RouteDecision
from postbridge.engine.secrets import SecretStore
from tests.servers.certs import Certificates
from tests.servers.dovecot import Dovecot
from tests.servers.multidrop import PostfixMultidropIsp
from tests.servers.postfix import PostfixOffice

pytestmark = pytest.mark.interop

PASSWORD = "global-pw"


@pytest.fixture
def isp(dovecot: Dovecot, certificates: Certificates) -> Iterator[PostfixMultidropIsp]:
    dovecot.add_user("company", PASSWORD)
    server = PostfixMultidropIsp(
        certificates=certificates,
        domain="example.com",
        mail_root=dovecot.root / "mail",
        user="company",
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


def message(tag: str, headers: str) -> bytes:
    text = (
        f"From: Sender <sender@outside.example>\n{headers.strip()}\n"
        f"Subject: {tag}\nMessage-ID: <{tag}@outside.example>\n\nThis is {tag}.\n"
    )
    return text.replace("\n", "\r\n").encode()


CASES = [
    # tag, headers, envelope recipients, where it must end up
    ("to-alice", "To: Alice <alice@example.com>", ["alice@example.com"], ["alice"]),
    (
        "cc-bob",
        "To: alice@example.com\nCc: Bob <bob@example.com>",
        ["alice@example.com", "bob@example.com"],
        ["alice", "bob"],
    ),
    (
        "bcc-carol",
        "To: alice@example.com",
        ["alice@example.com", "carol@example.com"],
        ["alice", "carol"],
    ),
    ("to-sales", "To: Sales <sales@example.com>", ["sales@example.com"], ["alice", "bob"]),
    ("to-nobody", "To: nobody@example.com", ["nobody@example.com"], ["admin"]),
    (
        "outside-only",
        "To: The List <list@lists.elsewhere.example>",
        ["bob@example.com"],
        ["bob"],
    ),
]


def config_for(tmp_path: Path, dovecot: Dovecot, office: PostfixOffice) -> configmod.Config:
    text = f"""
data_dir = "{tmp_path / "data"}"
[delivery]
kind = "smtp"
host = "{office.host}"
port = {office.smtp_port}
security = "starttls"
ca_file = "{office.ca_file}"
timeout = 10

[[mailbox]]
name = "office"
kind = "global"
host = "{dovecot.host}"
port = {dovecot.pop3s_port}
security = "tls"
ca_file = "{dovecot.ca_file}"
username = "company"
local_domains = ["example.com"]
envelope_header = "auto"
postmaster = "admin@example.com"
timeout = 10
[mailbox.map]
"sales@example.com" = ["alice@example.com", "bob@example.com"]
"""
    path = tmp_path / "postbridge.toml"
    path.write_text(text)
    return configmod.load(path)


def subjects(messages: list[bytes]) -> list[str]:
    return sorted(str(email.message_from_bytes(m)["Subject"]) for m in messages)


async def test_each_message_reaches_exactly_the_right_people(
    dovecot: Dovecot, isp: PostfixMultidropIsp, postfix_office: PostfixOffice, tmp_path: Path
) -> None:
    postfix_office.add_user("admin@example.com")
    copies = 0
    for tag, headers, rcpts, _ in CASES:
        isp.send(message(tag, headers), sender="sender@outside.example", recipients=rcpts)
        copies += len(rcpts)
    isp.wait_delivered(copies)
    assert dovecot.count("company") == copies
    # What a real ISP wrote: the envelope recipient in Delivered-To on each copy.
    assert all(b"\nDelivered-To: " in m for m in dovecot.messages("company"))

    config = config_for(tmp_path, dovecot, postfix_office)
    secrets = SecretStore()
    secrets.set("office", PASSWORD)
    collector = Collector(config, secrets=secrets)
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert result.ok, result.summaries
    assert dovecot.count("company") == 0

    expected: dict[str, list[str]] = {}
    for tag, _, _, owners in CASES:
        for owner in owners:
            expected.setdefault(owner, []).append(tag)
    for owner, tags in expected.items():
        arrived = postfix_office.wait_for(f"{owner}@example.com", len(tags))
        assert subjects(arrived) == sorted(tags), owner
    await asyncio.sleep(0.5)  # anything extra would have arrived by now
    for owner, tags in expected.items():
        assert subjects(postfix_office.messages(f"{owner}@example.com")) == sorted(tags), owner
    # nobody@ was refused by the office server and went to the postmaster, with the reason
    (to_admin,) = postfix_office.messages("admin@example.com")
    assert b"X-Postbridge-Reason:" in to_admin and b"nobody@example.com" in to_admin
    # the ISP's Delivered-To lines did not make the office server bounce anything
    assert postfix_office.queue_is_empty()
    # each message's route can be explained
    rows = {row.subject: row for row in collector_rows(tmp_path)}
    assert "Bcc" in explain(rows["bcc-carol"].route) or "Delivered-To" in explain(
        rows["bcc-carol"].route
    )


def collector_rows(tmp_path: Path) -> list[Row]:
    ledger = Ledger(tmp_path / "data" / "ledger.sqlite3")
    try:
        return ledger.recent()
    finally:
        ledger.close()


def explain(route: str | None) -> str:
    assert route
    return RouteDecision.from_json(route).explain()
