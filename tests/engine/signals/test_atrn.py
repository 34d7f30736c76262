"""ATRN (RFC 2645) against the fake ODMR server, delivering into the default Maildir target.

Each test checks what the office would notice: every held message arrives exactly once
(a 10 MB one too), a wrong password or an unsupported server reads as words, "no mail"
is not an error, a line dropped mid-DATA loses nothing that was acknowledged and
duplicates nothing, and mail for a domain Postbridge did not ask for is refused.
"""

from __future__ import annotations

import email
import ssl
from collections.abc import Sequence
from dataclasses import replace

import pytest

from postbridge.engine import config as configmod
from postbridge.engine.config import MailboxConfig
from postbridge.engine.cycle import Collector
from postbridge.engine.errors import StorageError
from postbridge.engine.events import (
    Event,
    MailboxSummary,
    MessageDelivered,
    MessageSpooled,
    SignalFinished,
    SignalStarted,
    SignalSummary,
)
from postbridge.engine.ledger import DELIVERED
from postbridge.engine.secrets import SecretStore
from postbridge.engine.signals import send_signal
from tests.engine.signals.conftest import PASSWORD, ConfigWriter, maildir
from tests.fakes.odmr import FakeOdmrServer, QueuedMessage

MB = 1024 * 1024
NO_MAIL = "453"
REFUSED_RCPT = "550 5.7.1"
NOT_STORED = "451 4.3.0"


def held(n: int, *to: str, size: int = 0) -> QueuedMessage:
    line = b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n"
    body = line * (size // len(line)) if size else b"Hello.\r\n"
    data = (
        b"From: sender%d@outside.test\r\nTo: %s\r\nSubject: held %d\r\n"
        b"Message-ID: <held-%d@outside.test>\r\n\r\n"
        % (n, ", ".join(to).encode(), n, n)
        + body
        + b".a line starting with a dot\r\n"
    )
    return QueuedMessage(f"sender{n}@outside.test", list(to), data)


def ids(messages: Sequence[bytes]) -> list[str]:
    return sorted(str(email.message_from_bytes(m)["Message-ID"]) for m in messages)


async def signal(config: configmod.Config, secrets: SecretStore) -> SignalSummary:
    events: list[Event] = []
    collector = Collector(config, secrets=secrets, events=events.append)
    try:
        summary = await collector.run_signal()
    finally:
        await collector.aclose()
    assert isinstance(events[0], SignalStarted)
    assert isinstance(events[-1], SignalFinished) and events[-1].summary is summary
    return summary


async def test_held_mail_including_10_mb_arrives_and_is_delivered_exactly_once(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    messages = [
        held(1, "alice@example.com"),
        held(2, "bob@example.com"),
        held(3, "alice@example.com", "bob@example.com"),
        held(4, "carol@example.com", size=10 * MB),
    ]
    big = messages[3].data
    async with FakeOdmrServer(messages, password=PASSWORD, tls_context=server_tls) as isp:
        config = write_config(isp.port, domains=["example.com"])
        summary = await signal(config, secrets)
        assert summary.ok, summary.error
        assert summary.words == "4 messages arrived by ATRN and were delivered."
        assert summary.arrived == 4 and summary.delivery.delivered == 4
        assert isp.queue == []
        assert isp.requested == [["example.com"]]
        # The second time the ISP has nothing: 453 is "no mail", not an error.
        again = await signal(config, secrets)
    assert again.ok and again.no_mail
    assert again.words.startswith("No mail waiting at the ISP")
    assert ids(maildir(config, "alice@example.com")) == [
        "<held-1@outside.test>",
        "<held-3@outside.test>",
    ]
    assert ids(maildir(config, "bob@example.com")) == [
        "<held-2@outside.test>",
        "<held-3@outside.test>",
    ]
    (stored,) = maildir(config, "carol@example.com")
    # Maildir stores LF line ends; the whole 10 MB body arrived, un-dot-stuffed.
    assert stored.endswith(big.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n"))
    assert b"by postbridge (ATRN, RFC 2645) with ESMTPS for <carol@example.com>" in stored


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
async def test_each_offered_login_method_works(
    mechanism: str, write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    isp = FakeOdmrServer(
        [held(1, "alice@example.com")],
        password=PASSWORD,
        tls_context=server_tls,
        mechanisms=[mechanism],
    )
    async with isp:
        summary = await signal(write_config(isp.port), secrets)
    assert summary.ok, summary.error
    assert summary.arrived == 1
    assert any(c.startswith(f"AUTH {mechanism}") for c in isp.commands)
    assert isp.used_cram_md5 == (mechanism == "CRAM-MD5")


async def test_wrong_password_is_reported_in_words_and_asks_for_the_user(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    isp = FakeOdmrServer([held(1, "alice@example.com")], password="other", tls_context=server_tls)
    async with isp:
        summary = await signal(write_config(isp.port), secrets)
    assert not summary.ok
    assert summary.error is not None
    assert "rejected the user name or password for example.com" in summary.error
    assert "ISP's ODMR server at 127.0.0.1" in summary.error
    assert summary.error_needs_user and not summary.error_transient
    assert not any(c.startswith("ATRN") for c in isp.commands)
    assert len(isp.queue) == 1


@pytest.mark.parametrize("code", [453, 450])
async def test_no_mail_waiting_is_not_an_error(
    code: int, write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    async with FakeOdmrServer(password=PASSWORD, tls_context=server_tls) as isp:
        isp.no_mail_code = code
        summary = await signal(write_config(isp.port), secrets)
    assert summary.ok and summary.no_mail
    assert summary.words == (
        f"No mail waiting at the ISP (127.0.0.1:{isp.port}: {code} You have no mail)."
    )
    assert isp.commands[-1] == "QUIT"


async def test_mail_for_other_domains_stays_at_the_isp(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    async with FakeOdmrServer(
        [held(1, "alice@example.org")], password=PASSWORD, tls_context=server_tls
    ) as isp:
        summary = await signal(write_config(isp.port), secrets)
    assert summary.no_mail
    assert len(isp.queue) == 1


async def test_drop_mid_data_loses_nothing_acknowledged_and_duplicates_nothing(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    messages = [
        held(1, "alice@example.com"),
        held(2, "alice@example.com", size=MB),
        held(3, "alice@example.com"),
    ]
    async with FakeOdmrServer(messages, password=PASSWORD, tls_context=server_tls) as isp:
        isp.drop_in_data = 1  # the second message of the session is cut half-way
        config = write_config(isp.port)
        first = await signal(config, secrets)
        # What was acknowledged (message 1) is delivered; the cut one is not.
        assert ids(maildir(config, "alice@example.com")) == ["<held-1@outside.test>"]
        assert not first.ok and first.error_transient
        assert first.error is not None and "lost while a message was arriving" in first.error
        assert first.words.startswith("1 message arrived by ATRN and was delivered. Then: ")
        assert [m.id for m in isp.queue] == [messages[1].id, messages[2].id]
        isp.drop_in_data = None
        second = await signal(config, secrets)
    assert second.ok and second.arrived == 2
    assert ids(maildir(config, "alice@example.com")) == [
        "<held-1@outside.test>",
        "<held-2@outside.test>",
        "<held-3@outside.test>",
    ]
    collector = Collector(config, secrets=secrets)
    try:
        rows = collector.ledger.recent()
    finally:
        await collector.aclose()
    assert sorted(r.state for r in rows) == [DELIVERED] * 3  # no row for the partial copy
    assert not list((config.data_dir / "spool").rglob("*.eml"))


async def test_recipient_outside_the_requested_domains_gets_550_and_nothing(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    messages = [
        held(1, "alice@example.com", "eve@elsewhere.test"),
        held(2, "mallory@elsewhere.test"),
    ]
    async with FakeOdmrServer(messages, password=PASSWORD, tls_context=server_tls) as isp:
        isp.ignore_domains = True  # a misbehaving ISP sends everything it holds
        config = write_config(isp.port)
        summary = await signal(config, secrets)
    refusals = [r for r in isp.replies if r.startswith(REFUSED_RCPT)]
    assert len(refusals) == 2
    assert "<eve@elsewhere.test>" in refusals[0] and "<mallory@elsewhere.test>" in refusals[1]
    assert summary.ok and summary.arrived == 1
    assert summary.refused == ("eve@elsewhere.test", "mallory@elsewhere.test")
    assert "Refused 2 recipient(s) outside the requested domains" in summary.words
    assert ids(maildir(config, "alice@example.com")) == ["<held-1@outside.test>"]
    assert not (config.maildir_root / "eve@elsewhere.test").exists()
    assert not (config.maildir_root / "mallory@elsewhere.test").exists()


class _BrokenStore:
    """A host whose spool fails: nothing may be acknowledged."""

    stop_requested = False

    def __init__(self) -> None:
        self.delivered = 0

    def spool_inbound(self, **kwargs: object) -> int:
        raise StorageError("Postbridge could not write to its data folder (disk full).")

    async def deliver_pending(self, mailbox: MailboxConfig, summary: MailboxSummary) -> None:
        assert mailbox.name == "signal" and mailbox.local_domains == ("example.com",)


async def test_a_message_that_could_not_be_stored_is_not_acknowledged(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    async with FakeOdmrServer(
        [held(1, "alice@example.com")], password=PASSWORD, tls_context=server_tls
    ) as isp:
        config = write_config(isp.port)
        summary = await send_signal(
            config, host=_BrokenStore(), secrets=secrets, events=lambda e: None
        )
    assert any(r.startswith(NOT_STORED) for r in isp.replies)
    assert isp.acknowledged == [] and len(isp.queue) == 1
    assert summary.error == "Postbridge could not write to its data folder (disk full)."


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        ("502 5.5.2 Error: command not recognized", "does not support ATRN"),
        ("451 4.3.0 Try again later", "could not act on ATRN right now"),
        ("554 5.7.1 Not for you", "refused ATRN"),
    ],
)
async def test_atrn_refusals_read_as_words(
    reply: str,
    words: str,
    write_config: ConfigWriter,
    secrets: SecretStore,
    server_tls: ssl.SSLContext,
) -> None:
    async with FakeOdmrServer(password=PASSWORD, tls_context=server_tls) as isp:
        isp.atrn_reply = reply
        summary = await signal(write_config(isp.port), secrets)
    assert summary.error is not None and words in summary.error
    assert reply in summary.error
    assert summary.error_transient == reply.startswith("4")


async def test_a_server_that_does_not_advertise_atrn_is_not_asked(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    async with FakeOdmrServer(password=PASSWORD, tls_context=server_tls) as isp:
        isp.advertise_atrn = False
        summary = await signal(write_config(isp.port), secrets)
    assert summary.error is not None and "does not offer ATRN" in summary.error
    assert not any(c.startswith(("AUTH", "ATRN")) for c in isp.commands)  # no password sent


async def test_no_starttls_means_no_password_sent(
    write_config: ConfigWriter, secrets: SecretStore
) -> None:
    async with FakeOdmrServer(password=PASSWORD, require_tls=False) as isp:
        summary = await signal(write_config(isp.port), secrets)
    assert summary.error is not None and "does not offer STARTTLS" in summary.error
    assert not any(c.startswith("AUTH") for c in isp.commands)


async def test_an_untrusted_certificate_stops_before_login(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    async with FakeOdmrServer(password=PASSWORD, tls_context=server_tls) as isp:
        config = write_config(isp.port)
        assert config.signal is not None
        # Without the test CA, the certificate is not trusted.
        unsafe = replace(config, signal=replace(config.signal, ca_file=None))
        summary = await signal(unsafe, secrets)
    assert summary.error is not None and "is not trusted" in summary.error
    assert not any(c.startswith("AUTH") for c in isp.commands)


async def test_an_isp_that_stalls_after_the_turn_is_given_up_on_in_time(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    async with FakeOdmrServer(
        [held(1, "alice@example.com")], password=PASSWORD, tls_context=server_tls
    ) as isp:
        isp.stall_after_turn = True
        summary = await signal(write_config(isp.port, timeout=1), secrets)
    assert summary.error is not None and "sent nothing for 1 seconds" in summary.error
    assert summary.error_transient
    assert len(isp.queue) == 1


async def test_poll_sends_atrn_first_when_before_poll(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    async with FakeOdmrServer(
        [held(1, "alice@example.com")], password=PASSWORD, tls_context=server_tls
    ) as isp:
        events: list[Event] = []
        config = write_config(isp.port, when="before-poll")
        collector = Collector(config, secrets=secrets, events=events.append)
        try:
            await collector.run_cycle()
        finally:
            await collector.aclose()
    finished = [e for e in events if isinstance(e, SignalFinished)]
    assert len(finished) == 1 and finished[0].ok
    delivered = [e for e in events if isinstance(e, MessageDelivered)]
    assert [(e.mailbox, e.recipients) for e in delivered] == [("signal", ("alice@example.com",))]
    assert ids(maildir(config, "alice@example.com")) == ["<held-1@outside.test>"]


async def test_poll_leaves_an_interval_signal_alone(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    async with FakeOdmrServer(
        [held(1, "alice@example.com")], password=PASSWORD, tls_context=server_tls
    ) as isp:
        config = write_config(isp.port, when="interval")
        collector = Collector(config, secrets=secrets)
        try:
            await collector.run_cycle()
        finally:
            await collector.aclose()
    assert isp.sessions == 0


async def test_quitting_stops_before_the_next_message_and_leaves_it_at_the_isp(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    messages = [held(1, "alice@example.com"), held(2, "alice@example.com")]
    async with FakeOdmrServer(messages, password=PASSWORD, tls_context=server_tls) as isp:
        config = write_config(isp.port)
        collector = Collector(config, secrets=secrets)

        stops: list[Event] = []

        def quit_after_first(event: Event) -> None:
            if isinstance(event, MessageSpooled) and not stops:
                stops.append(event)
                collector.request_stop()  # the user chose Quit while mail was arriving

        collector.emit = quit_after_first
        try:
            stopped = await collector.run_signal()
            again = await collector.run_signal()  # the next start finishes the job
        finally:
            await collector.aclose()
    assert stopped.error is not None and "Stopped during ATRN" in stopped.error
    assert stopped.arrived == 1
    assert any(r.startswith("421 4.3.2") for r in isp.replies)
    assert again.arrived == 1 and again.delivery.delivered == 2
    assert ids(maildir(config, "alice@example.com")) == [
        "<held-1@outside.test>",
        "<held-2@outside.test>",
    ]


async def test_a_session_that_never_ends_is_bounded(
    write_config: ConfigWriter, secrets: SecretStore, server_tls: ssl.SSLContext
) -> None:
    async with FakeOdmrServer(
        [held(1, "alice@example.com")], password=PASSWORD, tls_context=server_tls
    ) as isp:
        isp.stall_after_turn = True
        config = write_config(isp.port, timeout=30)
        summary = await send_signal(
            config, host=_BrokenStore(), secrets=secrets, events=lambda e: None, session_limit=0.5
        )
    assert summary.error is not None
    assert "lasted longer than 0.00833333 minutes and was ended" in summary.error
