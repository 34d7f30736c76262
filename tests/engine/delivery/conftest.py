"""In-process mail servers on loopback for the delivery tests.

aiosmtpd's SMTP/LMTP protocol objects run on the test's own event loop
(``loop.create_server`` on port 0: no thread, no port race); certificates come
from trustme. :class:`Dialer` is the client's connection seam, counting
connections and recording what the client wrote.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.engine.delivery.fakeserver import FakeMailServer

# Reply lines used across the tests (aiosmtpd testing/statuscodes.py style).
OK = "250 2.0.0 OK"
QUEUED = "250 2.0.0 Ok: queued as 4XyZ"
MAILBOX_BUSY = "450 4.2.1 Mailbox busy, try later"
USER_UNKNOWN = "550 5.1.1 <carol@example.com>: User unknown"
OVER_QUOTA = "452 4.2.2 Mailbox full"
TRY_LATER = "451 4.3.0 Local error, try later"
CONTENT_REJECTED = "554 5.6.0 Message content rejected"
SENDER_REJECTED = "553 5.7.1 Sender address rejected"

USER, PASSWORD = "office", "s3cr3t-Pässword"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]


@dataclass
class Handler:
    """aiosmtpd handler: records messages, answers per recipient as told."""

    pipelining: bool = True
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    mail_reply: str | None = None
    data_reply: str | None = None
    lmtp_replies: dict[str, str] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    mechanisms_used: list[str] = field(default_factory=list)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return OK

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return OK

    async def handle_DATA(self, server, session, envelope):
        received = Received(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            envelope.original_content,
            list(envelope.mail_options),
        )
        if isinstance(server, LMTP):
            # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order;
            # aiosmtpd pushes the joined lines as they are.
            replies = [
                self.lmtp_replies.get(r, f"250 2.0.0 <{r}> Saved") for r in envelope.rcpt_tos
            ]
            if any(r.startswith("250") for r in replies):
                self.messages.append(received)
            return "\r\n".join(replies)
        if self.data_reply:
            return self.data_reply
        self.messages.append(received)
        return QUEUED

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.mechanisms_used.append(mechanism)
        ok = isinstance(auth_data, LoginPassword) and auth_data == (
            USER.encode(),
            PASSWORD.encode(),
        )
        return AuthResult(success=ok, handled=False)


@dataclass
class Running:
    port: int
    server: asyncio.Server
    protocols: list[Any]

    def drop_all(self) -> None:
        """Close every connection from the server side, without a goodbye."""
        for protocol in self.protocols:
            if protocol.transport is not None:
                protocol.transport.close()


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    running: list[Running] = []
    loop = asyncio.get_running_loop()

    async def start(
        handler: Handler,
        *,
        lmtp: bool = False,
        implicit_tls: ssl.SSLContext | None = None,
        **kw: Any,
    ) -> Running:
        protocols: list[Any] = []
        kw.setdefault("authenticator", handler.authenticate)

        def factory() -> SMTP:
            protocol = (LMTP if lmtp else SMTP)(handler, loop=loop, hostname="mail.test", **kw)
            protocols.append(protocol)
            return protocol

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=implicit_tls)
        run = Running(server.sockets[0].getsockname()[1], server, protocols)
        running.append(run)
        return run

    yield start
    for run in running:
        run.server.close()
        run.drop_all()
        await run.server.wait_closed()
    await asyncio.sleep(0)


@pytest.fixture
async def fake_server() -> AsyncIterator[Callable[..., Awaitable[FakeMailServer]]]:
    servers: list[FakeMailServer] = []

    async def start(**kw: Any) -> FakeMailServer:
        server = FakeMailServer(**kw)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


class Dialer:
    """The client's ``open_connection`` seam: counts connections, records writes."""

    def __init__(self) -> None:
        self.connections = 0
        self.writes: list[bytes] = []

    async def __call__(self, host: str, port: int, **kwargs: Any):
        self.connections += 1
        reader, writer = await asyncio.open_connection(host, port, **kwargs)
        real_write = writer.write

        def write(data: bytes | bytearray | memoryview) -> None:
            self.writes.append(bytes(data))
            real_write(data)

        writer.write = write  # type: ignore[method-assign]
        return reader, writer

    @property
    def sent(self) -> bytes:
        return b"".join(self.writes)


@pytest.fixture
def dialer() -> Dialer:
    return Dialer()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_pem(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "office-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def spool(tmp_path: Path) -> Callable[[bytes], Path]:
    counter = iter(range(1_000_000))

    def write(content: bytes) -> Path:
        path = tmp_path / f"spooled-{next(counter)}.eml"
        path.write_bytes(content)
        return path

    return write
