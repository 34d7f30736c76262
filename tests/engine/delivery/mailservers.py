"""aiosmtpd handler, connection seam and reply constants for the delivery tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import AuthResult, LoginPassword

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
