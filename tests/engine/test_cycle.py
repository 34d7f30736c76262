"""The poll cycle against a fault-injecting fake POP3 server, delivering into Maildirs.

Real servers are exercised in tests/interop; here the fake breaks things on
purpose (a line dropped mid-RETR, garbage, a stall, a locked mailbox) and each
test checks what a user would notice: a clear error, nothing lost, nothing
delivered twice, and the next cycle finishing the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from postbridge.engine import config as configmod
from postbridge.engine import cycle as cyclemod
from postbridge.engine.cycle import Collector
from postbridge.engine.delivery.base import DeliveryJob, DeliveryTarget, RecipientResult
from postbridge.engine.errors import AuthError
from postbridge.engine.events import CycleFinished, Event, MessageDelivered, Notice
from postbridge.engine.ledger import DELIVERED, QUARANTINED, SPOOLED
from postbridge.engine.secrets import SecretStore
from postbridge.engine.spool import BUFFER_LIMIT
from tests.fakes.pop3 import FakePop3Server, FakePop3Session

PASSWORD = "secret"


def make_message(n: int, *, size: int = 0, to: str = "alice@isp.example") -> bytes:
    body = b"".join(b"line %d of message %d\r\n" % (i, n) for i in range(max(1, size // 24)))
    return (
        (
            b"From: sender%d@outside.example\r\n"
            b"To: %s\r\n"
            b"Subject: message %d\r\n"
            b"Message-ID: <m%d@test>\r\n"
            b"\r\n" % (n, to.encode(), n, n)
        )
        + body
        + b".dot line stays\r\n"
    )


def write_config(tmp_path: Path, port: int, **extra: object) -> configmod.Config:
    lines = [
        f'data_dir = "{tmp_path / "data"}"',
        "[[mailbox]]",
        'name = "alice"',
        'kind = "user"',
        'host = "127.0.0.1"',
        f"port = {port}",
        'security = "none"',
        "allow_plaintext_login = true",
        'username = "alice"',
        'recipient = "alice@example.com"',
    ]
    settings: dict[str, object] = {"timeout": 2, **extra}
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()]
    path = tmp_path / "postbridge.toml"
    path.write_text("\n".join(lines) + "\n")
    return configmod.load(path)


def maildir_messages(config: configmod.Config, address: str) -> list[bytes]:
    root = config.maildir_root / address
    files = sorted((root / "new").glob("*")) + sorted((root / "cur").glob("*"))
    return [f.read_bytes() for f in files]


def message_ids(config: configmod.Config, address: str) -> list[str]:
    return sorted(
        str(email.message_from_bytes(data)["Message-ID"])
        for data in maildir_messages(config, address)
    )


@pytest.fixture
def secrets() -> SecretStore:
    store = SecretStore()
    store.set("alice", PASSWORD)
    return store


@pytest.fixture
async def server() -> AsyncIterator[FakePop3Server]:
    async with FakePop3Server(
        [make_message(i) for i in range(1, 6)], username="alice", password=PASSWORD
    ) as srv:
        yield srv


async def test_collects_delivers_and_deletes(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    config = write_config(tmp_path, server.port)
    events: list[Event] = []
    collector = Collector(config, secrets=secrets, events=events.append)
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert result.ok
    (summary,) = result.summaries
    assert (summary.downloaded, summary.delivered, summary.removed) == (5, 5, 5)
    assert summary.per_recipient == {"alice@example.com": 5}
    assert server.remaining == []
    assert message_ids(config, "alice@example.com") == [f"<m{i}@test>" for i in range(1, 6)]
    delivered = [e for e in events if isinstance(e, MessageDelivered)]
    assert len(delivered) == 5 and delivered[0].subject == "message 1"
    # the message itself is unchanged, apart from our trace headers in front (LF in Maildir)
    data = maildir_messages(config, "alice@example.com")[0]
    assert data.endswith(make_message(1).replace(b"\r\n", b"\n"))
    assert b"X-Postbridge-Original-To: alice" in data


async def test_dropped_line_mid_retr_loses_nothing(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    config = write_config(tmp_path, server.port)
    server.drop_retr = {3: 40}
    collector = Collector(config, secrets=secrets)
    try:
        first = await collector.run_cycle()
        (summary,) = first.summaries
        assert not first.ok
        assert summary.error is not None and "connection" in summary.error.lower()
        assert summary.delivered == 2
        # nothing deleted: the session died before QUIT
        assert len(server.remaining) == 5
        server.drop_retr = {}
        second = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert second.ok
    assert server.remaining == []
    assert message_ids(config, "alice@example.com") == [f"<m{i}@test>" for i in range(1, 6)]
    assert not list((config.data_dir / "spool" / "tmp").glob("*.part"))


@pytest.mark.parametrize(
    ("knob", "words"),
    [
        ("garbage", "does not understand"),
        ("stall", "stopped answering"),
        ("in_use", "another program"),
    ],
)
async def test_faults_give_clear_errors_then_recover(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore, knob: str, words: str
) -> None:
    config = write_config(tmp_path, server.port, timeout=1)
    if knob == "garbage":
        server.garbage = {"UIDL": b"HELLO THERE"}
    elif knob == "stall":
        server.stall = {"UIDL"}
    else:
        server.in_use = True
    collector = Collector(config, secrets=secrets)
    try:
        first = await collector.run_cycle()
        (summary,) = first.summaries
        assert summary.error is not None and words in summary.error.lower(), summary.error
        assert summary.error_transient
        assert len(server.remaining) == 5
        server.garbage, server.stall, server.in_use = {}, set(), False
        second = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert second.ok, second.summaries
    assert server.remaining == []
    assert len(maildir_messages(config, "alice@example.com")) == 5


async def test_wrong_password_names_the_account(tmp_path: Path, server: FakePop3Server) -> None:
    config = write_config(tmp_path, server.port)
    store = SecretStore()
    store.set("alice", "wrong")
    collector = Collector(config, secrets=store)
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    (summary,) = result.summaries
    assert summary.error is not None
    assert "rejected the password" in summary.error and "alice" in summary.error
    assert summary.error_needs_user
    assert PASSWORD not in summary.error and "wrong" not in summary.error


async def test_missing_password_says_how_to_set_it(tmp_path: Path, server: FakePop3Server) -> None:
    config = write_config(tmp_path, server.port)
    collector = Collector(config, secrets=SecretStore())
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert "postbridge secret set alice" in (result.summaries[0].error or "")


async def test_leave_on_server_downloads_once(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    config = write_config(tmp_path, server.port, leave_on_server_days=3)
    now = [1_000_000.0]
    collector = Collector(config, secrets=secrets, clock=lambda: now[0])
    try:
        await collector.run_cycle()
        second = await collector.run_cycle()
        assert second.summaries[0].downloaded == 0
        assert second.summaries[0].kept == 5
        assert len(server.remaining) == 5
        now[0] += 3 * 86400 + 1
        third = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert third.summaries[0].removed == 5
    assert server.remaining == []
    assert len(maildir_messages(config, "alice@example.com")) == 5


async def test_expire_zero_warns_when_leaving_on_server(
    tmp_path: Path, secrets: SecretStore
) -> None:
    async with FakePop3Server(
        [make_message(1)], username="alice", password=PASSWORD, expire="0"
    ) as srv:
        config = write_config(tmp_path, srv.port, leave_on_server_days=2)
        events: list[Event] = []
        collector = Collector(config, secrets=secrets, events=events.append)
        try:
            await collector.run_cycle()
        finally:
            await collector.aclose()
    notes = [e for e in events if isinstance(e, Notice)]
    assert notes and "EXPIRE 0" in notes[0].text


async def test_server_without_uidl_delivers_each_message_once(
    tmp_path: Path, secrets: SecretStore
) -> None:
    async with FakePop3Server(
        [make_message(i) for i in range(1, 4)], username="alice", password=PASSWORD, uidl=False
    ) as srv:
        config = write_config(tmp_path, srv.port)
        srv.quit_error = True  # deletions are not committed: the messages come back next time
        collector = Collector(config, secrets=secrets)
        try:
            await collector.run_cycle()
            assert len(srv.remaining) == 3
            srv.quit_error = False
            await collector.run_cycle()
        finally:
            await collector.aclose()
        assert srv.remaining == []
    assert message_ids(config, "alice@example.com") == ["<m1@test>", "<m2@test>", "<m3@test>"]


async def test_delete_batches_commit_with_quit(tmp_path: Path, secrets: SecretStore) -> None:
    async with FakePop3Server(
        [make_message(i) for i in range(1, 8)], username="alice", password=PASSWORD
    ) as srv:
        config = write_config(tmp_path, srv.port, delete_batch=3)
        collector = Collector(config, secrets=secrets)
        try:
            result = await collector.run_cycle()
        finally:
            await collector.aclose()
        assert result.ok
        assert [len(batch) for batch in srv.committed] == [3, 3, 1]
        assert srv.remaining == []


class Timeline(FakePop3Session):
    """Records when each connection opened, logged in and quit, in one shared list."""

    events: ClassVar[list[tuple[str, int]]] = []

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.number = sum(1 for event, _ in Timeline.events if event == "open")
        Timeline.events.append(("open", self.number))

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            Timeline.events.append(("closed", self.number))

    async def dispatch(self, line: str) -> None:
        verb = line.partition(" ")[0].upper()
        if verb in ("APOP", "AUTH", "USER"):
            Timeline.events.append(("login", self.number))
        elif verb == "QUIT":
            Timeline.events.append(("quit", self.number))
        await super().dispatch(line)


class SlowTarget(DeliveryTarget):
    """Accepts everything, a little slowly: the end of a session takes a while."""

    description = "slow"

    async def deliver(self, job: DeliveryJob) -> dict[str, RecipientResult]:
        await asyncio.sleep(0.05)
        return {r: RecipientResult(r, "accepted", "ok") for r in job.recipients}

    async def check(self) -> str:
        return "ok"

    async def aclose(self) -> None:
        pass


async def cycle_in_sessions_of_3(
    tmp_path: Path,
    secrets: SecretStore,
    session_class: type[FakePop3Session],
    *,
    quit_error: bool = False,
    **server_options: Any,
) -> tuple[CycleFinished, FakePop3Server]:
    """One cycle over 7 messages, 3 per session, into a slow target; the server, stopped."""
    async with FakePop3Server(
        [make_message(i) for i in range(1, 8)],
        username="alice",
        password=PASSWORD,
        session_class=session_class,
        **server_options,
    ) as srv:
        srv.quit_error = quit_error
        config = write_config(tmp_path, srv.port, delete_batch=3)
        collector = Collector(config, secrets=secrets, target=SlowTarget())
        try:
            result = await collector.run_cycle()
        finally:
            await collector.aclose()
        if quit_error:
            # The connection opened ahead is closed; give the fake a moment to see it.
            for _ in range(200):  # bounded
                if ("closed", 1) in Timeline.events:
                    break
                await asyncio.sleep(0.01)
    return result, srv


def assert_each_message_once(result: CycleFinished, srv: FakePop3Server) -> None:
    """The 7 messages of cycle_in_sessions_of_3 delivered once, in sessions of 3, 3, 1."""
    assert result.ok, result.summaries
    assert srv.remaining == []
    assert [len(batch) for batch in srv.committed] == [3, 3, 1]
    assert result.summaries[0].delivered == 7  # each message once


async def test_the_next_session_connects_ahead_and_logs_in_after_the_quit(
    tmp_path: Path, secrets: SecretStore
) -> None:
    Timeline.events = []
    result, srv = await cycle_in_sessions_of_3(tmp_path, secrets, Timeline)
    assert result.ok, result.summaries
    assert srv.remaining == []
    assert [len(batch) for batch in srv.committed] == [3, 3, 1]
    events = Timeline.events
    assert [n for event, n in events if event == "open"] == [0, 1, 2]
    for n in (1, 2):
        # Opened while the session before was still delivering, before its QUIT...
        assert events.index(("open", n)) < events.index(("quit", n - 1))
        # ...but logged in only after that QUIT: the maildrop is never open twice.
        assert events.index(("login", n)) > events.index(("quit", n - 1))


async def test_a_connection_opened_ahead_is_closed_when_the_cycle_stops_there(
    tmp_path: Path, secrets: SecretStore
) -> None:
    Timeline.events = []
    result, srv = await cycle_in_sessions_of_3(tmp_path, secrets, Timeline, quit_error=True)
    assert not result.ok  # the first session could not commit its deletions
    assert "did not confirm the end of the session" in (result.summaries[0].error or "")
    assert len(srv.remaining) == 7  # nothing deleted, all delivered (the ledger knows)
    # The second connection was opened ahead, then closed without logging in.
    assert ("open", 1) in Timeline.events and ("closed", 1) in Timeline.events
    assert ("login", 1) not in Timeline.events


class OneAtATime(FakePop3Session):
    """Refuses a connection while another is open, as some ISPs do per address."""

    open_now = 0
    refused = 0

    async def run(self) -> None:
        if OneAtATime.open_now:
            OneAtATime.refused += 1
            self.push("-ERR [IN-USE] One connection at a time, please.")
            await self.writer.drain()
            return
        OneAtATime.open_now += 1
        try:
            await super().run()
        finally:
            OneAtATime.open_now -= 1


async def test_a_server_that_refuses_the_connection_opened_ahead_is_connected_again(
    tmp_path: Path, secrets: SecretStore
) -> None:
    OneAtATime.open_now = OneAtATime.refused = 0
    result, srv = await cycle_in_sessions_of_3(tmp_path, secrets, OneAtATime)
    assert result.ok, result.summaries
    assert OneAtATime.refused == 2  # both connections opened ahead
    assert [len(batch) for batch in srv.committed] == [3, 3, 1]
    assert srv.remaining == []


class ForgetsWaitingClients(Timeline):
    """Hangs up on the second connection when it logs in: it waited too long for that."""

    async def dispatch(self, line: str) -> None:
        if self.number == 1 and line.partition(" ")[0].upper() in ("APOP", "AUTH", "USER"):
            Timeline.events.append(("hung up", self.number))
            self.writer.close()
            self.closed = True
            return
        await super().dispatch(line)


async def test_a_connection_opened_ahead_and_lost_before_the_login_is_opened_again(
    tmp_path: Path, secrets: SecretStore
) -> None:
    Timeline.events = []
    result, srv = await cycle_in_sessions_of_3(tmp_path, secrets, ForgetsWaitingClients)
    assert result.ok, result.summaries
    assert ("hung up", 1) in Timeline.events
    assert [n for event, n in Timeline.events if event == "login"] == [0, 2, 3]
    assert [len(batch) for batch in srv.committed] == [3, 3, 1]
    assert srv.remaining == []


class FlakyTarget(DeliveryTarget):
    """Answers with scripted statuses, records what it was asked to deliver."""

    description = "scripted"

    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.jobs: list[DeliveryJob] = []

    async def deliver(self, job: DeliveryJob) -> dict[str, RecipientResult]:
        self.jobs.append(job)
        status = self.statuses.pop(0) if self.statuses else "accepted"
        return {
            r: RecipientResult(r, status, f"scripted {status}")  # type: ignore[arg-type]
            for r in job.recipients
        }

    async def check(self) -> str:
        return "ok"

    async def aclose(self) -> None:
        pass


async def test_temporary_failure_keeps_message_until_delivered(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    config = write_config(tmp_path, server.port)
    target = FlakyTarget(["temporary"] * 5)
    collector = Collector(config, secrets=secrets, target=target)
    try:
        first = await collector.run_cycle()
        assert first.summaries[0].deferred == 5
        assert len(server.remaining) == 5  # nothing deleted: nothing delivered
        deferred = collector.ledger.in_state(SPOOLED)
        assert len(deferred) == 5
        # kept messages were made durable in the spool before the ledger said so
        assert all((config.data_dir / "spool" / f"{row.id}.eml").exists() for row in deferred)
        second = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert second.summaries[0].delivered == 5
    assert second.summaries[0].downloaded == 0  # delivered from the spool, not downloaded again
    assert server.remaining == []
    assert len(target.jobs) == 10
    assert len({job.key for job in target.jobs}) == 5  # same key on retry


async def test_permanent_failure_quarantines_and_retry_delivers(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    config = write_config(tmp_path, server.port)
    target = FlakyTarget(["permanent"] + ["accepted"] * 10)
    collector = Collector(config, secrets=secrets, target=target)
    try:
        await collector.run_cycle()
        (row,) = collector.ledger.in_state(QUARANTINED)
        assert row.last_error == "scripted permanent"
        assert server.remaining == []  # quarantined mail is safe in the spool
        assert (config.data_dir / "spool" / f"{row.id}.eml").exists()
        summary = await collector.retry_quarantined(row.id, recipients=["admin@example.com"])
        assert summary.delivered == 1
        again = collector.ledger.get(row.id)
        assert again is not None and again.state == DELIVERED
        assert target.jobs[-1].recipients == ("admin@example.com",)
    finally:
        await collector.aclose()


async def test_stop_request_stops_after_the_batch_being_delivered(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    config = write_config(tmp_path, server.port)
    collector: Collector

    def on_event(event: Event) -> None:
        if isinstance(event, MessageDelivered) and event.ledger_id == 2:
            collector.request_stop()

    collector = Collector(config, secrets=secrets, events=on_event)
    try:
        first = await collector.run_cycle()
        # Messages delivered together with the second one are recorded, not undone.
        assert first.summaries[0].delivered >= 2
        assert "stopped" in (first.summaries[0].error or "")
        assert len(server.remaining) == 5  # no DELE after a stop: the next cycle sends it
        second = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert second.ok
    assert server.remaining == []
    assert message_ids(config, "alice@example.com") == [f"<m{i}@test>" for i in range(1, 6)]


async def test_messages_delivered_at_once_leave_nothing_in_the_spool(
    tmp_path: Path, secrets: SecretStore
) -> None:
    big = make_message(2, size=BUFFER_LIMIT + 50_000)  # streamed through a spool file
    messages = [make_message(1), big, make_message(3)]
    async with FakePop3Server(messages, username="alice", password=PASSWORD) as server:
        config = write_config(tmp_path, server.port)
        collector = Collector(config, secrets=secrets)
        try:
            result = await collector.run_cycle()
        finally:
            await collector.aclose()
        assert result.ok and server.remaining == []
    assert message_ids(config, "alice@example.com") == ["<m1@test>", "<m2@test>", "<m3@test>"]
    assert any(
        data.endswith(big.replace(b"\r\n", b"\n"))
        for data in maildir_messages(config, "alice@example.com")
    )
    spool = config.data_dir / "spool"
    assert sorted(p.name for p in spool.rglob("*") if p.is_file()) == []


class _Killed(Exception):
    """Stands for the process dying at that very instant."""


async def test_killed_between_maildir_copies_and_ledger_delivers_nothing_twice(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, server.port)
    collector = Collector(config, secrets=secrets)

    def die(*args: object, **kwargs: object) -> None:
        raise _Killed("power gone")

    monkeypatch.setattr(collector.ledger, "settle", die)
    try:
        first = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert not first.ok
    assert len(server.remaining) == 5  # nothing recorded, nothing deleted
    copies = len(maildir_messages(config, "alice@example.com"))
    assert copies >= 1  # the copies of the first batch were made before the "kill"
    again = Collector(config, secrets=secrets)  # a new process, the same data folder
    try:
        second = await again.run_cycle()
    finally:
        await again.aclose()
    assert second.ok and server.remaining == []
    assert message_ids(config, "alice@example.com") == [f"<m{i}@test>" for i in range(1, 6)]


class SlowServer(FlakyTarget):
    """A server that takes two messages at once; one of them fails with a wrong password."""

    parallel = 2

    def __init__(self, fail_subject: bytes | None = None) -> None:
        super().__init__([])
        self.fail_subject = fail_subject
        self.in_flight = 0
        self.most_in_flight = 0

    async def deliver(self, job: DeliveryJob) -> dict[str, RecipientResult]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            with job.open() as source:
                failing = self.fail_subject is not None and self.fail_subject in source.read()
            if failing:
                raise AuthError("The office mail server refused the password.")
            await asyncio.sleep(0.02)  # the server storing the message
            return await super().deliver(job)
        finally:
            self.in_flight -= 1


async def test_a_server_gets_two_messages_at_once_each_recorded_as_it_is_accepted(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    config = write_config(tmp_path, server.port)
    target = SlowServer()
    collector = Collector(config, secrets=secrets, target=target)
    try:
        result = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert result.ok and server.remaining == []
    assert result.summaries[0].delivered == 5
    assert target.most_in_flight == 2
    assert len(target.jobs) == 5


async def test_a_failure_in_flight_does_not_cut_short_the_other_delivery(
    tmp_path: Path, server: FakePop3Server, secrets: SecretStore
) -> None:
    config = write_config(tmp_path, server.port)
    target = SlowServer(fail_subject=b"Subject: message 1\r\n")
    collector = Collector(config, secrets=secrets, target=target)
    try:
        result = await collector.run_cycle()
        assert not result.ok
        assert "password" in (result.summaries[0].error or "")
        # the message delivered beside the failing one is recorded: never sent twice
        delivered = {row.uid for row in collector.ledger.in_state(DELIVERED)}
        assert len(delivered) == len(target.jobs) >= 1
        assert len(server.remaining) == 5  # nothing deleted in a failed session
        target.fail_subject = None
        again = await collector.run_cycle()
    finally:
        await collector.aclose()
    assert again.ok and server.remaining == []
    assert len(target.jobs) == 5  # each message once, over both cycles


class SeesWhatCameWithTheLogin(Timeline):
    """Notes, for each login, the RETRs that arrived in the same write (already read)."""

    with_login: ClassVar[list[list[str]]] = []

    async def dispatch(self, line: str) -> None:
        if line.partition(" ")[0].upper() == "AUTH":
            rest = self.buffer.decode("ascii", "replace").split("\r\n")
            SeesWhatCameWithTheLogin.with_login.append([c for c in rest if c.startswith("RETR")])
        await super().dispatch(line)


async def test_later_sessions_ask_for_their_first_messages_with_the_login(
    tmp_path: Path, secrets: SecretStore
) -> None:
    """After a QUIT the next session's message numbers are known (RFC 1939 numbers what
    is left from 1 up): their RETRs go in the login's write, one round trip fewer."""
    Timeline.events = []
    SeesWhatCameWithTheLogin.with_login = []
    result, srv = await cycle_in_sessions_of_3(
        tmp_path, secrets, SeesWhatCameWithTheLogin, apop=False
    )
    assert_each_message_once(result, srv)
    assert SeesWhatCameWithTheLogin.with_login == [[], ["RETR 1", "RETR 2", "RETR 3"], ["RETR 1"]]
    assert [n for event, n in Timeline.events if event == "open"] == [0, 1, 2]


async def test_a_wrong_guess_starts_the_session_over_and_delivers_each_message_once(
    tmp_path: Path, secrets: SecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the numbering after the QUIT were not what RFC 1939 says: the guessed
    # messages are not the session's first new ones.
    monkeypatch.setattr(cyclemod, "_renumbered", lambda *args, limit: [2, 3])
    Timeline.events = []
    result, srv = await cycle_in_sessions_of_3(tmp_path, secrets, Timeline)
    assert_each_message_once(result, srv)
    # Sessions 2 and 3 each dropped the connection that asked for the wrong messages.
    assert [n for event, n in Timeline.events if event == "open"] == [0, 1, 2, 3, 4]


class DropsInputBeforeItsGreeting(FakePop3Session):
    """Throws away what arrives in the 0.2 s before it greets: a CAPA sent early is lost."""

    dropped = 0

    async def run(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                while chunk := await self.reader.read(65536):
                    DropsInputBeforeItsGreeting.dropped += chunk.count(b"\n")
        await super().run()


async def test_a_server_that_drops_a_capa_sent_before_its_greeting_gets_it_after(
    tmp_path: Path, secrets: SecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    DropsInputBeforeItsGreeting.dropped = 0
    result, srv = await cycle_in_sessions_of_3(tmp_path, secrets, DropsInputBeforeItsGreeting)
    assert_each_message_once(result, srv)
    # The first connection timed out waiting for the CAPA's answer; the one opened in its
    # place, and every one after it, waited for the greeting first.
    assert DropsInputBeforeItsGreeting.dropped == 1
    assert "did not answer the CAPA sent before its greeting" in caplog.text


class LosesInputSentWithTheLogin(FakePop3Session):
    """Takes AUTH PLAIN, then loses whatever arrived along with it (as a server that hands
    the connection to another process after the login might): LIST never gets an answer."""

    lost = 0

    async def cmd_auth(self, arg: str) -> None:
        await super().cmd_auth(arg)
        if self.state == "TRANSACTION" and self.buffer:
            LosesInputSentWithTheLogin.lost += self.buffer.count(b"\n")
            self.buffer = b""


async def test_a_server_that_loses_commands_sent_with_the_login_gets_them_after_it(
    tmp_path: Path, secrets: SecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    LosesInputSentWithTheLogin.lost = 0
    # No APOP offered: the login is AUTH PLAIN, which the commands after it follow.
    result, srv = await cycle_in_sessions_of_3(
        tmp_path, secrets, LosesInputSentWithTheLogin, apop=False
    )
    assert_each_message_once(result, srv)
    # One session timed out waiting for LIST; its retry and the sessions after it
    # logged in first, listing after.
    assert LosesInputSentWithTheLogin.lost == 3  # CAPA, LIST, UIDL, once
    assert "did not answer the commands sent along with the login" in caplog.text
