"""ATRN (RFC 2645, On-Demand Mail Relay): the ISP delivers held mail down our own connection.

Postbridge connects to the ISP's ODMR port (366), says EHLO, starts TLS, logs
in (AUTH is mandatory before ATRN, RFC 2645 §4) and sends ``ATRN d1,d2``. On
``250`` the roles reverse on the same connection (RFC 2645 §4.4): Postbridge
becomes the SMTP *server*, greets with 220, and the ISP sends MAIL, RCPT and
DATA for each held message, then QUIT. ``450``/``453`` ("you have no mail")
are a normal outcome, not an error.

The server half is aiosmtpd's protocol on the very transport the client half
opened (``transport.set_protocol`` + ``connection_made``), so it serves over
the TLS session already established and no hand-written SMTP server code is
needed. The handler here only decides and stores:

* RCPT is accepted only for the requested domains (others get 550): an ISP
  must not be able to use the office as a relay.
* DATA is answered ``250`` only after :meth:`Inbound.spool_inbound` has made
  the message durable (spool fsynced, ledger committed). A storage failure
  answers ``451``: the ISP keeps the message. So a dropped connection loses
  nothing that was acknowledged, and nothing is acknowledged that was not
  stored.

aiosmtpd holds one message in memory while it arrives (bounded by
``DATA_SIZE_LIMIT``); everything after the 250 goes through the spool.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP

from postbridge.engine.config import SignalConfig
from postbridge.engine.delivery.smtpclient import OpenConnection
from postbridge.engine.delivery.wire import Reply
from postbridge.engine.errors import AuthError, Cancelled, NetworkError, PostbridgeError
from postbridge.engine.events import EventSink, MessageSpooled
from postbridge.engine.signals.common import make_client, not_advertised, refusal
from postbridge.engine.signals.inbound import SESSION_LIMIT, SOURCE, Inbound

log = logging.getLogger("postbridge.signal")

DATA_SIZE_LIMIT = 64 * 1024 * 1024  # aiosmtpd's default is 32 MB; advertised as SIZE
LINE_LIMIT = 64 * 1024  # RFC 5321 says 1000 octets; held mail is accepted as it is
CLOSE_LIMIT = 5.0
NO_MAIL = (450, 453)  # RFC 2645 §4.4: 453 "You have no mail"
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


@dataclass
class AtrnResult:
    """How an ATRN session went. ``error`` is what ended it badly, after any arrivals."""

    reply: Reply
    no_mail: bool = False
    arrived: list[int] = field(default_factory=list)  # ledger ids, in arrival order
    refused: list[str] = field(default_factory=list)  # recipients outside our domains
    error: PostbridgeError | None = None


class _Handler:
    """aiosmtpd hooks: accept only our domains; acknowledge only what is stored."""

    def __init__(
        self, *, domains: Sequence[str], inbound: Inbound, events: EventSink, isp: str
    ) -> None:
        self.domains = {d.lower() for d in domains}
        self.inbound = inbound
        self.emit = events
        self.isp = isp
        self.arrived: list[int] = []
        self.refused: list[str] = []
        self.storage_error: PostbridgeError | None = None
        self.quit = False
        self.stopped = False

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.inbound.stop_requested:
            # The user is quitting: stop before the next message, not in the middle of one.
            self.stopped = True
            if server.transport is not None:
                asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.3.2 Postbridge is shutting down; please send the rest later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if "@" not in address or domain not in self.domains:
            # RFC 2645 §5: only mail for the domains named in ATRN; anything else would
            # make the office an open relay for the ISP.
            self.refused.append(address)
            log.warning("ATRN: refused recipient %s (not a requested domain)", address)
            return f"550 5.7.1 <{address}>: Postbridge asked for mail for " + ", ".join(
                sorted(self.domains)
            )
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        recipients = [r.lower() for r in envelope.rcpt_tos]
        data = _received(server, session, recipients) + bytes(envelope.original_content or b"")
        note = f"Arrived by ATRN from {self.isp} for " + ", ".join(recipients)
        try:
            ledger_id = self.inbound.spool_inbound(
                source=SOURCE,
                data=data,
                envelope_from=envelope.mail_from or "",
                recipients=recipients,
                route_note=note,
            )
        except PostbridgeError as error:
            log.error("ATRN: could not store a message: %s", error.describe())
            self.storage_error = error
            return "451 4.3.0 Postbridge could not store the message; please try again later"
        except Exception as error:  # a bug: never acknowledge what was not stored
            log.exception("ATRN: could not store a message")
            self.storage_error = PostbridgeError(
                f"Postbridge could not store a message that arrived by ATRN ({error!r}); "
                "the ISP keeps it. See the log file."
            )
            return "451 4.3.0 Postbridge could not store the message; please try again later"
        self.arrived.append(ledger_id)
        self.emit(MessageSpooled(SOURCE, ledger_id, len(data)))
        return f"250 2.0.0 OK: stored as message {ledger_id}"

    async def handle_QUIT(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.quit = True
        return "221 2.0.0 Bye"


def _received(server: SMTP, session: Any, recipients: Sequence[str]) -> bytes:
    """The trace field an SMTP server adds to what it accepts (RFC 5321 §4.4)."""
    helo = _UNPRINTABLE.sub("", str(session.host_name or "unknown"))[:200] or "unknown"
    peer = session.peer[0] if isinstance(session.peer, tuple) and session.peer else "unknown"
    transport = server.transport
    tls = transport is not None and transport.get_extra_info("ssl_object") is not None
    protocol = "ESMTPS" if tls else "ESMTP"
    where = f" for <{recipients[0]}>" if len(recipients) == 1 else ""
    date = email.utils.formatdate(localtime=True)
    return (
        f"Received: from {helo} ([{peer}])\r\n\tby postbridge (ATRN, RFC 2645) with "
        f"{protocol}{where};\r\n\t{date}\r\n"
    ).encode("utf-8", "replace")


class _ReversedSmtp(SMTP):
    """aiosmtpd's server protocol, told when the connection ends and kept alive by traffic."""

    line_length_limit = LINE_LIMIT

    def __init__(self, handler: _Handler, *, closed: asyncio.Future[None], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        # Not ``_closed``: asyncio.StreamReaderProtocol, aiosmtpd's base class, has a future of
        # that name and sets the connection's error on it (ConnectionResetError would then
        # surface here as a crash instead of an ordinary end of the session).
        self._session_closed = closed
        self.timed_out = False

    def data_received(self, data: bytes) -> None:
        # aiosmtpd restarts its idle timer per command only; a big message taking
        # longer than the timeout is still traffic, not silence.
        self._reset_timeout()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        self.timed_out = True
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            if not self._session_closed.done():
                self._session_closed.set_result(None)


async def _serve(
    writer: asyncio.StreamWriter,
    unread: bytes,
    handler: _Handler,
    *,
    cfg: SignalConfig,
    session_limit: float,
) -> _ReversedSmtp:
    """Serve the ISP as an SMTP server on the connection we opened; returns when it ends."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    protocol = _ReversedSmtp(
        handler,
        closed=closed,
        data_size_limit=DATA_SIZE_LIMIT,
        enable_SMTPUTF8=True,
        hostname=cfg.domains[0],  # the ISP is delivering to this domain now
        ident="Postbridge ODMR",
        timeout=cfg.timeout,
        loop=loop,
    )
    transport = writer.transport
    transport.set_protocol(protocol)
    protocol.connection_made(transport)  # greets the ISP with 220 (RFC 2645 §4.4)
    if unread:
        protocol.data_received(unread)
    try:
        async with asyncio.timeout(session_limit):
            await asyncio.shield(closed)
    except BaseException:
        transport.abort()
        async with asyncio.timeout(CLOSE_LIMIT):
            await asyncio.shield(closed)
        raise
    # ``writer`` stays referenced until here: its __del__ would close a live transport.
    return protocol


def _ending(
    protocol: _ReversedSmtp, handler: _Handler, cfg: SignalConfig, where: str
) -> PostbridgeError | None:
    """Why the reversed session ended, when that was not a QUIT."""
    if handler.stopped:
        return Cancelled("Stopped during ATRN; the rest of the mail stays at the ISP.")
    if handler.storage_error is not None:
        return handler.storage_error
    if handler.quit:
        return None
    envelope = protocol.envelope
    busy = envelope is not None and (envelope.mail_from is not None or envelope.rcpt_tos)
    if protocol.timed_out:
        return NetworkError(
            f"The ISP's ODMR server at {where} sent nothing for {cfg.timeout:g} seconds during "
            "ATRN; what it had not handed over stays at the ISP for next time."
        )
    if busy:
        return NetworkError(
            f"The connection to the ISP's ODMR server at {where} was lost while a message was "
            "arriving by ATRN. That message was not acknowledged, so the ISP still holds it "
            "and will send it again next time."
        )
    log.info("ATRN: %s closed the connection without QUIT between messages", where)
    return None


async def run_atrn(
    cfg: SignalConfig,
    *,
    password: str,
    inbound: Inbound,
    events: EventSink,
    open_connection: OpenConnection | None = None,
    session_limit: float = SESSION_LIMIT,
) -> AtrnResult:
    """Ask for the held mail with ATRN and receive it; stored messages are in the ledger.

    Raises what connecting raises (NetworkError, TLSError, AuthError, ...),
    SignalNotSupported and SignalRefused. Once mail has started arriving, a
    failure is returned in ``AtrnResult.error`` instead, next to what arrived.
    """
    client = make_client(cfg, password=None, open_connection=open_connection)
    try:
        await client.connect()
        # Looked at before AUTH: a server that cannot do ATRN never gets the password.
        if "ATRN" not in client.extensions:
            raise not_advertised(client, "ATRN")
        await client.login(cfg.username, password)
        reply = await client.command("ATRN " + ",".join(cfg.domains))
    except BaseException:
        await client.quit()
        raise
    if reply.code in NO_MAIL:
        await client.quit()
        return AtrnResult(reply, no_mail=True)
    if reply.code != 250:
        await client.quit()
        if reply.code == 530:  # RFC 2645 §4.2: AUTH first
            raise AuthError(
                f"The {client.server} at {client.where} wants a login before ATRN: {reply}",
                detail=str(reply),
            )
        raise refusal(client, reply, "ATRN")
    where = client.where
    writer, unread = client.detach()
    handler = _Handler(domains=cfg.domains, inbound=inbound, events=events, isp=where)
    result = AtrnResult(reply)
    try:
        protocol = await _serve(writer, unread, handler, cfg=cfg, session_limit=session_limit)
        result.error = _ending(protocol, handler, cfg, where)
    except TimeoutError:
        result.error = NetworkError(
            f"The ATRN session with {where} lasted longer than {session_limit / 60:g} minutes "
            "and was ended; what had not arrived stays at the ISP for next time."
        )
    result.arrived = list(handler.arrived)
    result.refused = list(handler.refused)
    return result
