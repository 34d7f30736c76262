"""Global mailboxes in the cycle: one transaction for all recipients, postmaster redirect,
duplicate copies suppressed, quarantine when nobody can take a message."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from postbridge.engine import config as configmod
from postbridge.engine.cycle import Collector
from postbridge.engine.delivery.base import DeliveryJob, DeliveryTarget, RecipientResult
from postbridge.engine.ledger import DELIVERED, QUARANTINED
from postbridge.engine.secrets import SecretStore
from tests.fakes.pop3 import FakeMessage, FakePop3Server

PASSWORD = "secret"


class RecordingTarget(DeliveryTarget):
    """Accepts everyone except the addresses in ``refuse`` (5xx) and ``defer`` (4xx)."""

    description = "recording"

    def __init__(self, *, refuse: Iterable[str] = (), defer: Iterable[str] = ()) -> None:
        self.refuse = set(refuse)
        self.defer = set(defer)
        self.jobs: list[DeliveryJob] = []
        self.bodies: list[bytes] = []

    async def deliver(self, job: DeliveryJob) -> dict[str, RecipientResult]:
        self.jobs.append(job)
        with job.open() as source:
            self.bodies.append(job.prepend + source.read()[job.skip :])
        out = {}
        for r in job.recipients:
            if r in self.refuse:
                out[r] = RecipientResult(r, "permanent", f"550 5.1.1 <{r}>: User unknown")
            elif r in self.defer:
                out[r] = RecipientResult(r, "temporary", f"450 4.2.0 <{r}>: try later")
            else:
                out[r] = RecipientResult(r, "accepted", "250 ok")
        return out

    async def check(self) -> str:
        return "ok"

    async def aclose(self) -> None:
        pass


def global_config(tmp_path: Path, port: int, *, postmaster: bool = True) -> configmod.Config:
    text = f"""
data_dir = "{tmp_path / "data"}"
[[mailbox]]
name = "office"
kind = "global"
host = "127.0.0.1"
port = {port}
security = "none"
allow_plaintext_login = true
username = "company@isp.example"
local_domains = ["example.com"]
envelope_header = "auto"
{'postmaster = "admin@example.com"' if postmaster else ""}
timeout = 2
[mailbox.map]
"sales@example.com" = ["alice@example.com", "bob@example.com"]
"""
    path = tmp_path / "postbridge.toml"
    path.write_text(text)
    return configmod.load(path)


def msg(headers: str, body: str = "Hello.\r\n") -> bytes:
    return (headers.strip().replace("\n", "\r\n") + "\r\n\r\n" + body).encode()


@pytest.fixture
def secrets() -> SecretStore:
    store = SecretStore()
    store.set("office", PASSWORD)
    return store


@pytest.fixture
async def server() -> AsyncIterator[FakePop3Server]:
    async with FakePop3Server([], username="company@isp.example", password=PASSWORD) as srv:
        yield srv


async def cycle(
    config: configmod.Config, secrets: SecretStore, target: RecordingTarget
) -> Collector:
    collector = Collector(config, secrets=secrets, target=target)
    await collector.run_cycle()
    return collector


async def test_all_recipients_in_one_transaction(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    server.messages.append(
        FakeMessage(
            msg(
                """
From: x@outside.example
To: Alice <alice@example.com>, sales@example.com
Cc: bob@example.com, stranger@elsewhere.example
Subject: team
Message-ID: <team@x>
"""
            )
        )
    )
    target = RecordingTarget()
    collector = await cycle(global_config(tmp_path, server.port), secrets, target)
    await collector.aclose()
    assert len(target.jobs) == 1
    assert sorted(target.jobs[0].recipients) == ["alice@example.com", "bob@example.com"]
    assert server.remaining == []


async def test_refused_recipient_goes_to_postmaster_with_reason(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    server.messages.append(
        FakeMessage(msg("From: x@outside.example\nTo: nobody@example.com\nMessage-ID: <n@x>"))
    )
    target = RecordingTarget(refuse={"nobody@example.com"})
    collector = await cycle(global_config(tmp_path, server.port), secrets, target)
    try:
        (row,) = collector.ledger.recent()
        assert row.state == DELIVERED
        assert row.recipients == ("nobody@example.com", "admin@example.com")
        assert [job.recipients for job in target.jobs] == [
            ("nobody@example.com",),
            ("admin@example.com",),
        ]
        assert b"X-Postbridge-Reason: not deliverable to nobody@example.com" in target.bodies[1]
        assert b"User unknown" in target.bodies[1]
        assert row.last_error is not None and "postmaster" in row.last_error
    finally:
        await collector.aclose()
    assert server.remaining == []


async def test_refused_without_postmaster_is_quarantined(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    server.messages.append(
        FakeMessage(msg("From: x@outside.example\nTo: nobody@example.com\nMessage-ID: <q@x>"))
    )
    target = RecordingTarget(refuse={"nobody@example.com"})
    collector = await cycle(global_config(tmp_path, server.port, postmaster=False), secrets, target)
    try:
        (row,) = collector.ledger.in_state(QUARANTINED)
        assert "User unknown" in (row.last_error or "")
    finally:
        await collector.aclose()


async def test_partial_acceptance_retries_only_the_deferred_recipient(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    server.messages.append(
        FakeMessage(
            msg(
                "From: x@outside.example\nTo: alice@example.com, bob@example.com\nMessage-ID: <p@x>"
            )
        )
    )
    target = RecordingTarget(defer={"bob@example.com"})
    config = global_config(tmp_path, server.port)
    collector = Collector(config, secrets=secrets, target=target)
    try:
        await collector.run_cycle()
        assert len(server.remaining) == 1  # not everyone has it yet: keep it at the ISP
        target.defer.clear()
        await collector.run_cycle()
    finally:
        await collector.aclose()
    assert [sorted(job.recipients) for job in target.jobs] == [
        ["alice@example.com", "bob@example.com"],
        ["bob@example.com"],
    ]
    assert server.remaining == []


async def test_duplicate_copies_without_envelope_header_delivered_once(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    one = "From: x@outside.example\nTo: alice@example.com, bob@example.com\nMessage-ID: <dup@x>"
    # The ISP stored one copy per recipient; with no envelope header they look alike.
    server.messages += [FakeMessage(msg(one)), FakeMessage(msg(one)), FakeMessage(msg(one))]
    target = RecordingTarget()
    collector = await cycle(global_config(tmp_path, server.port), secrets, target)
    try:
        delivered_to = [r for job in target.jobs for r in job.recipients]
        assert sorted(delivered_to) == ["alice@example.com", "bob@example.com"]
        assert all(row.state == DELIVERED for row in collector.ledger.recent())
    finally:
        await collector.aclose()
    assert server.remaining == []


async def test_copies_with_envelope_header_each_go_to_their_own_recipient(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    base = "To: alice@example.com\nFrom: x@outside.example\nMessage-ID: <env@x>"
    server.messages += [
        FakeMessage(msg(f"Delivered-To: alice@example.com\n{base}")),
        FakeMessage(msg(f"Delivered-To: carol@example.com\n{base}")),  # the Bcc copy
    ]
    target = RecordingTarget()
    collector = await cycle(global_config(tmp_path, server.port), secrets, target)
    await collector.aclose()
    assert [job.recipients for job in target.jobs] == [
        ("alice@example.com",),
        ("carol@example.com",),
    ]
    # the ISP's Delivered-To is renamed so the office server does not see a mail loop
    assert all(
        b"\r\nDelivered-To:" not in b and not b.startswith(b"Delivered-To:") for b in target.bodies
    )
    assert all(b"X-Postbridge-Delivered-To: " in b for b in target.bodies)


async def test_atrn_mail_left_spooled_is_delivered_by_the_next_cycle(
    tmp_path: Path, secrets: SecretStore
) -> None:
    """Mail that arrived by ATRN and met a 4xx is retried every cycle, signal or not."""
    path = tmp_path / "postbridge.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    config = configmod.load(path)
    target = RecordingTarget(defer={"alice@example.com"})
    collector = Collector(config, secrets=secrets, target=target)
    try:
        ledger_id = collector.spool_inbound(
            source="signal",
            data=msg("From: x@outside.example\nTo: alice@example.com\nMessage-ID: <atrn@x>"),
            envelope_from="x@outside.example",
            recipients=["alice@example.com"],
            route_note="Envelope recipient of the ATRN session.",
        )
        first = await collector.run_cycle()
        assert first.summaries[0].deferred == 1
        target.defer.clear()
        second = await collector.run_cycle()
        row = collector.ledger.get(ledger_id)
    finally:
        await collector.aclose()
    assert second.summaries[0].per_recipient == {"alice@example.com": 1}
    assert row is not None and row.state == DELIVERED
