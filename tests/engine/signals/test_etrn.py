"""ETRN (RFC 1985): every reply code in words, every domain asked, failures explained.

The words of each code are tested on :func:`answer` alone (a pure function); the session
(EHLO, the ETRN advertisement, one ETRN per domain, QUIT) against a scripted fake server.
The real thing, a Postfix holding mail until ETRN, is in tests/interop/test_signals.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from postbridge.engine import config as configmod
from postbridge.engine.delivery.wire import Reply
from postbridge.engine.events import SignalSummary
from postbridge.engine.secrets import SecretStore
from postbridge.engine.signals import answer, send_signal
from tests.engine.delivery.fakeserver import FakeMailServer, Session
from tests.engine.signals.conftest import ConfigWriter

# RFC 1985 §5 replies, as servers word them.
STARTED = "250 OK, queuing for node example.com started"
NOTHING = "251 OK, no messages waiting for node example.org"
PENDING = "252 OK, pending messages for node example.net started"
COUNTED = "253 OK, 14 pending messages for node example.com started"
CANNOT = "458 Unable to queue messages for node example.com"
NOT_ALLOWED = "459 Node example.com not allowed: not in fast flush list"


def reply(line: str) -> Reply:
    code, _, text = line.partition(" ")
    return Reply(int(code), (text,))


@pytest.mark.parametrize(
    ("line", "outcome", "words", "count"),
    [
        (STARTED, "started", "example.com: the ISP started delivering the held mail", None),
        (NOTHING, "nothing", "example.com: no mail waiting", None),
        (PENDING, "started", "example.com: the ISP started delivering the held mail", None),
        (COUNTED, "started", "example.com: the ISP started delivering 14 messages", 14),
        ("253 2.0.0 1 message for example.com", "started", "delivering 1 message", 1),
        ("250 2.0.0 Queuing started", "started", "started delivering the held mail", None),
        (CANNOT, "refused", "could not start delivering right now", None),
        (NOT_ALLOWED, "refused", "does not release mail for this domain on request", None),
        ("500 5.5.2 Error: command not recognized", "unsupported", "does not support ETRN", None),
        ("502 5.5.1 Command not implemented", "unsupported", "does not support ETRN", None),
        ("501 5.5.4 Syntax: ETRN domain", "unsupported", "check the domains in [signal]", None),
        ("530 5.7.0 Authentication required", "refused", "postbridge secret set signal", None),
        ("554 5.7.1 Go away", "refused", "the ISP refused (“554 5.7.1 Go away”)", None),
    ],
)
def test_every_reply_code_becomes_words(
    line: str, outcome: str, words: str, count: int | None
) -> None:
    result = answer("example.com", reply(line))
    assert result.outcome == outcome
    assert words in result.words
    assert result.count == count
    assert result.ok == (outcome in ("started", "nothing"))


class FakeEtrnServer(FakeMailServer):
    """Answers ``ETRN <domain>`` from a table; everything else as the delivery fake does."""

    def __init__(self, replies: dict[str, str], *, etrn: bool = True) -> None:
        extensions = ("PIPELINING", "ETRN") if etrn else ("PIPELINING",)
        super().__init__(extensions=extensions)
        self.replies = replies
        self.on_etrn: list[str] = []

    async def cmd_ETRN(
        self,
        session: Session,
        arg: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.on_etrn.append(arg)
        writer.write(f"{self.replies.get(arg, STARTED)}\r\n".encode())


@pytest.fixture
async def server() -> AsyncIterator[FakeEtrnServer]:
    fake = FakeEtrnServer({})
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def etrn_config(
    write_config: ConfigWriter, port: int, *domains: str, **keys: object
) -> configmod.Config:
    settings: dict[str, object] = {"security": "none", **keys}
    return write_config(port, kind="etrn", domains=list(domains or ("example.com",)), **settings)


async def run(config: configmod.Config) -> SignalSummary:
    return await send_signal(config, host=_NoHost(), secrets=SecretStore(), events=lambda e: None)


class _NoHost:
    """ETRN receives nothing itself: the host must never be asked to store or deliver."""

    stop_requested = False

    def spool_inbound(self, **kwargs: object) -> int:
        raise AssertionError("ETRN stored a message")

    async def deliver_pending(self, *args: object) -> None:
        raise AssertionError("ETRN delivered a message")


async def test_etrn_for_every_domain_even_after_nothing_waiting(
    server: FakeEtrnServer, write_config: ConfigWriter
) -> None:
    server.replies = {"example.org": NOTHING, "example.net": COUNTED}
    config = etrn_config(write_config, server.port, "example.org", "example.com", "example.net")
    summary = await run(config)
    assert server.on_etrn == ["example.org", "example.com", "example.net"]
    assert server.commands[-1] == "QUIT"
    assert summary.ok and not summary.no_mail
    assert summary.words == (
        f"ETRN sent to 127.0.0.1:{server.port} — example.org: no mail waiting; "
        "example.com: the ISP started delivering the held mail; "
        "example.net: the ISP started delivering 14 messages."
    )


async def test_nothing_waiting_anywhere_is_success(
    server: FakeEtrnServer, write_config: ConfigWriter
) -> None:
    server.replies = {"example.com": NOTHING}
    summary = await run(etrn_config(write_config, server.port))
    assert summary.ok and summary.no_mail
    assert summary.words.startswith(f"ETRN sent to 127.0.0.1:{server.port}: no mail waiting")


async def test_a_refused_domain_is_an_error_but_the_others_are_still_asked(
    server: FakeEtrnServer, write_config: ConfigWriter
) -> None:
    server.replies = {"example.com": NOT_ALLOWED}
    summary = await run(etrn_config(write_config, server.port, "example.com", "example.org"))
    assert server.on_etrn == ["example.com", "example.org"]
    assert summary.error is not None
    assert summary.error.startswith("ETRN was refused: example.com: the ISP does not release")
    assert NOT_ALLOWED in summary.error
    assert summary.error_needs_user and not summary.error_transient  # 459 will not pass by itself
    assert "example.org: the ISP started delivering" in summary.words


async def test_a_temporary_refusal_is_transient(
    server: FakeEtrnServer, write_config: ConfigWriter
) -> None:
    server.replies = {"example.com": CANNOT}
    summary = await run(etrn_config(write_config, server.port))
    assert summary.error is not None and "could not start delivering right now" in summary.error
    assert summary.error_transient and not summary.error_needs_user


async def test_not_supported_when_the_server_rejects_the_command(
    server: FakeEtrnServer, write_config: ConfigWriter
) -> None:
    server.replies = {"example.com": "502 5.5.1 Error: command not implemented"}
    summary = await run(etrn_config(write_config, server.port))
    assert summary.error is not None
    assert summary.error.startswith("ETRN was not accepted: example.com: the ISP's server does")
    assert summary.error_needs_user


async def test_not_supported_when_etrn_is_not_advertised(write_config: ConfigWriter) -> None:
    fake = FakeEtrnServer({}, etrn=False)
    await fake.start()
    try:
        summary = await run(etrn_config(write_config, fake.port))
    finally:
        await fake.stop()
    assert fake.on_etrn == []
    assert summary.error == (
        f"The ISP's mail server at 127.0.0.1:{fake.port} does not offer ETRN, so it cannot be "
        "asked to release the held mail this way. Check the signal kind and port with the ISP."
    )
    assert summary.words == summary.error


async def test_starttls_is_required_unless_security_none(
    server: FakeEtrnServer, write_config: ConfigWriter
) -> None:
    config = etrn_config(write_config, server.port, security="starttls")
    summary = await run(config)
    assert summary.error is not None and "does not offer STARTTLS" in summary.error
    assert server.on_etrn == []


async def test_a_server_that_is_down_reads_as_words(write_config: ConfigWriter) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens once it is closed
    summary = await run(etrn_config(write_config, port))
    assert summary.error == (
        f"The ISP's mail server at 127.0.0.1:{port} could not be reached "
        "(the connection was refused; is the server running?)."
    )
    assert summary.error_transient


async def test_arrivals_in_the_maildir_target_are_reported(
    server: FakeEtrnServer, write_config: ConfigWriter
) -> None:
    config = etrn_config(write_config, server.port, watch_seconds=5)
    new = config.maildir_root / "alice@example.com" / "new"
    new.mkdir(parents=True)
    (new / "old-message").write_bytes(b"Subject: already there\n\n")

    def office_delivers() -> None:  # the ISP's delivery reaching the office, a moment later
        for name in ("one", "two"):
            (new / name).write_bytes(b"Subject: released\n\n")

    asyncio.get_running_loop().call_later(0.3, office_delivers)
    summary = await run(config)
    assert summary.ok and summary.watched == 2
    assert summary.words.endswith(" 2 messages arrived in the Maildir folders.")


async def test_without_watch_seconds_it_does_not_wait(
    server: FakeEtrnServer, write_config: ConfigWriter
) -> None:
    summary = await run(etrn_config(write_config, server.port))
    assert summary.watched is None
