"""A small asyncio SMTP/LMTP client of our own, for delivering spooled messages.

Why not ``smtplib`` or ``aiosmtplib``: both take the message as one ``bytes``
object, so a 100 MB message would make the process 100 MB bigger; we stream
``DATA`` from the spool file instead, dot-stuffing whole chunks. And for LMTP,
``smtplib.LMTP`` reads only one reply after ``DATA`` although RFC 2033 §4.2
sends one per accepted recipient (a long-open CPython bug), which would lose
exactly the per-recipient outcome LMTP exists for. Our client reads them all.

What it does: EHLO/LHLO, STARTTLS (RFC 3207) or implicit TLS with certificate
verification, AUTH PLAIN/LOGIN/CRAM-MD5 (never over plain text unless allowed), ESMTP
PIPELINING (RFC 2920: MAIL, all RCPTs and DATA in one write), SIZE (RFC 1870),
BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), multi-line replies, a timeout
on every wait for the server, and one connection kept open across messages.
The connection comes from a factory (``open_connection``), so tests can hand
in their own, as imapclient does with ``_create_IMAP4()``.

Round trips are what a message costs here (the poll cycle delivers one at a
time), so with PIPELINING a message takes two: the envelope with DATA, then
the content. TCP_NODELAY is on and each group is one write, so neither waits
for Nagle's algorithm and the server's delayed ACK (fetchmail's 44 ms per
message). RSET goes out only after a transaction that did not end with the
server taking the message (RFC 5321 §4.1.4), pipelined in front of the next
MAIL. On a kept-open connection the first answer to a message's commands is
what shows the connection alive: a failure before it is "stale" (see
:class:`ConnectionLost`), because nothing of the message was acknowledged.

Passwords never reach the log: the ``postbridge.smtp`` logger shows AUTH
exchanges as ``**REDACTED**``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Literal

from postbridge.engine.delivery.base import unique
from postbridge.engine.delivery.wire import (
    DataEncoder,
    Reply,
    ReplyAssembler,
    auth_mechanisms,
    check_address,
    parse_ehlo,
)
from postbridge.engine.errors import (
    AuthError,
    InsecureLoginRefused,
    NetworkError,
    PostbridgeError,
    ProtocolError,
    ServerPermanentError,
    ServerTemporaryError,
    StorageError,
    TLSError,
)
from postbridge.engine.tls import client_context

log = logging.getLogger("postbridge.smtp")

Security = Literal["none", "starttls", "tls"]
Stage = Literal["mail", "rcpt", "data", "message"]
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
OpenConnection = Callable[..., Awaitable[Streams]]

CHUNK_SIZE = 1 << 20
LINE_LIMIT = 64 * 1024  # longest reply line we accept (RFC 5321 says 512)
MAX_REPLY_LINES = 1000  # bound on a multi-line reply (EHLO lists are ~20 lines)
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Verdict:
    """The server's final word on one recipient, and at which step it came."""

    stage: Stage
    reply: Reply


class ConnectionLost(NetworkError):
    """The connection failed during a transaction.

    ``verdicts`` holds the final answers that did arrive (RCPT refusals, LMTP
    per-recipient replies read before the drop): those are real outcomes.
    ``stale`` means nothing of this transaction was acknowledged on a
    connection kept open from an earlier message, so trying again on a fresh
    connection cannot deliver anything twice.
    """

    def __init__(
        self,
        message: str,
        *,
        detail: str | None = None,
        verdicts: dict[str, Verdict] | None = None,
        stale: bool = False,
    ) -> None:
        super().__init__(message, detail=detail)
        self.verdicts = dict(verdicts or {})
        self.stale = stale


async def _default_open(host: str, port: int, **kwargs: Any) -> Streams:
    if host.startswith("/"):
        # LMTP over a unix socket (Dovecot's /run/dovecot/lmtp); POSIX only.
        kwargs.pop("server_hostname", None)
        return await asyncio.open_unix_connection(host, **kwargs)
    return await asyncio.open_connection(host, port, **kwargs)


def _default_helo_name() -> str:
    # RFC 5321 §4.1.4: EHLO takes a fully qualified name or an address literal.
    # getfqdn() may block on DNS, so settle for the host name when it looks
    # qualified and fall back to the literal from the socket otherwise.
    name = socket.gethostname()
    if "." in name and re.fullmatch(r"[A-Za-z0-9.-]+", name):
        return name
    return ""


def _address_literal(sockname: object) -> str:
    if isinstance(sockname, tuple) and sockname and isinstance(sockname[0], str):
        address = sockname[0]
        return f"[IPv6:{address}]" if ":" in address else f"[{address}]"
    return "localhost"


def _file_chunks(prepend: bytes, source: BinaryIO) -> Iterator[bytes]:
    # The prepended header goes out with the first chunk, not as a write of its own.
    yield prepend + source.read(CHUNK_SIZE)
    yield from iter(partial(source.read, CHUNK_SIZE), b"")


def _line_waiting(reader: asyncio.StreamReader) -> bool:
    """Whether a whole reply line is already buffered (reading it cannot block)."""
    # StreamReader has no public peek; without its buffer, assume a wait.
    return b"\n" in getattr(reader, "_buffer", b"")


class SmtpClient:
    """One SMTP or LMTP connection, opened on demand and kept for the next message."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: Security = "none",
        lmtp: bool = False,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        allow_plaintext_login: bool = False,
        timeout: float = 60.0,
        helo_name: str | None = None,
        server_words: str | None = None,
        open_connection: OpenConnection | None = None,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"security must be none, starttls or tls, not {security!r}")
        self.host = host
        self.port = port
        self.security: Security = security
        self.lmtp = lmtp
        self.timeout = timeout
        self._username = username
        self._password = password
        self._ca_file = ca_file
        self._ssl_context = ssl_context
        self._allow_plaintext_login = allow_plaintext_login
        self._helo_name = helo_name or _default_helo_name()
        self._open = open_connection or _default_open
        self.where = host if host.startswith("/") else f"{host}:{port}"
        self.server = server_words or ("LMTP server" if lmtp else "office mail server")
        self.extensions: dict[str, str] = {}
        self.tls_version: str | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._used = False  # a transaction already ran on this connection
        self._needs_reset = False  # the last transaction did not end with the message taken
        self._acknowledged = False  # the server has answered within this transaction
        if username and security == "none":
            if allow_plaintext_login:
                log.warning(
                    "The password for %s will be sent unencrypted to %s %s",
                    username,
                    self.server,
                    self.where,
                )
            else:
                log.warning(
                    "Login to %s %s is configured without TLS; it will be refused",
                    self.server,
                    self.where,
                )

    @property
    def is_connected(self) -> bool:
        # A server that hung up while we were idle shows as EOF on the reader.
        return (
            self._writer is not None
            and not self._writer.is_closing()
            and self._reader is not None
            and not self._reader.at_eof()
        )

    # -- connection ------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # Verification on (CERT_REQUIRED, hostname check); a ca_file is how
            # an office trusts its own server's self-made certificate.
            self._ssl_context = client_context(self._ca_file, used_for=f"the {self.server}")
        return self._ssl_context

    def _tls_failure(self, error: BaseException) -> TLSError:
        if isinstance(error, ssl.SSLCertVerificationError):
            return TLSError(
                f"The certificate of the {self.server} at {self.where} is not trusted, "
                "so Postbridge did not send it any mail. If the server uses its own "
                "certificate, choose its CA file in the settings.",
                detail=str(error.verify_message or error),
            )
        return TLSError(
            f"A secure connection to the {self.server} at {self.where} could not be set up.",
            detail=str(error),
        )

    def _network_failure(self, error: BaseException, doing: str) -> NetworkError:
        if isinstance(error, TimeoutError):
            message = (
                f"The {self.server} at {self.where} did not answer within "
                f"{self.timeout:g} seconds ({doing})."
            )
        else:
            if isinstance(error, ConnectionRefusedError):
                words = "the connection was refused; is the server running?"
            elif isinstance(error, asyncio.IncompleteReadError | EOFError):
                words = "the server closed the connection"
            elif isinstance(error, OSError) and error.strerror:
                words = error.strerror.lower()
            else:
                words = str(error) or type(error).__name__
            if doing == "connecting":
                message = f"The {self.server} at {self.where} could not be reached ({words})."
            else:
                message = (
                    f"The connection to the {self.server} at {self.where} was lost "
                    f"({doing}: {words})."
                )
        return NetworkError(message, detail=repr(error))

    async def connect(self) -> None:
        """Open, greet, secure and log in, unless a connection is already open."""
        if self.is_connected:
            return
        await self.abort()
        tls = self.security == "tls"
        context = self._context() if self.security != "none" else None
        try:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await self._open(
                    self.host,
                    self.port,
                    limit=LINE_LIMIT,
                    ssl=context if tls else None,
                    server_hostname=self.host if tls else None,
                )
        except ssl.SSLError as error:  # also covers SSLCertVerificationError
            raise self._tls_failure(error) from error
        except (OSError, TimeoutError) as error:
            raise self._network_failure(error, "connecting") from error
        self._used = False
        self._needs_reset = False
        self.extensions = {}
        self.tls_version = None
        sock = self._writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets it too; be explicit: commands go out as whole writes
            # and must not wait for Nagle's algorithm.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            self.tls_version = self._writer.get_extra_info("ssl_object").version()
        try:
            greeting = await self._read_reply()
            if greeting.code != 220:
                raise self._refusal(greeting, "greeted Postbridge with a refusal")
            await self._hello()
            if self.security == "starttls":
                await self._starttls()
                await self._hello()
            if self._username:
                await self._login(self._username, self._password or "")
        except BaseException:
            self.drop()
            raise

    def _refusal(self, reply: Reply, what: str) -> PostbridgeError:
        message = f"The {self.server} at {self.where} {what}: {reply}"
        if reply.is_temporary:
            return ServerTemporaryError(message, detail=str(reply))
        return ServerPermanentError(message, detail=str(reply))

    async def _hello(self) -> None:
        literal = _address_literal(self._writer.get_extra_info("sockname") if self._writer else "")
        name = self._helo_name or literal
        reply = await self._command(f"{'LHLO' if self.lmtp else 'EHLO'} {name}")
        if reply.code == 250:
            self.extensions = parse_ehlo(reply)
            return
        if not self.lmtp and reply.code in (500, 502):
            # A pre-ESMTP server (RFC 5321 §3.2): plain HELO, no extensions.
            reply = await self._command(f"HELO {name}")
            if reply.code == 250:
                self.extensions = {}
                return
        raise self._refusal(reply, "refused Postbridge's greeting")

    async def _starttls(self) -> None:
        if "STARTTLS" not in self.extensions:
            raise TLSError(
                f"The {self.server} at {self.where} does not offer STARTTLS, so Postbridge "
                "did not send it any mail unencrypted. Check the security setting.",
                detail=f"EHLO keywords: {' '.join(sorted(self.extensions)) or '(none)'}",
            )
        reply = await self._command("STARTTLS")
        if reply.code != 220:
            raise TLSError(
                f"The {self.server} at {self.where} refused to start encryption: {reply}",
                detail=str(reply),
            )
        assert self._reader is not None and self._writer is not None
        # Anything the server sent after its 220 would be read as if it had
        # come over TLS (the CVE-2011-0411 "STARTTLS command injection").
        if getattr(self._reader, "_buffer", b""):
            raise TLSError(
                f"The {self.server} at {self.where} sent unexpected data when starting "
                "encryption; Postbridge stopped for safety.",
                detail="data after the STARTTLS reply",
            )
        try:
            async with asyncio.timeout(self.timeout):
                await self._writer.start_tls(self._context(), server_hostname=self.host)
        except ssl.SSLError as error:
            raise self._tls_failure(error) from error
        except (OSError, TimeoutError) as error:
            raise self._network_failure(error, "starting encryption") from error
        ssl_object = self._writer.get_extra_info("ssl_object")
        self.tls_version = ssl_object.version() if ssl_object is not None else "TLS"
        # RFC 3207 §4.2: forget what was learnt before TLS; EHLO again.
        self.extensions = {}

    async def _login(self, username: str, password: str) -> None:
        if self.tls_version is None and not self._allow_plaintext_login:
            raise InsecureLoginRefused(
                f"Postbridge did not send the password for {username} to the {self.server} "
                f"at {self.where} because the connection is not encrypted. Choose STARTTLS "
                "or TLS, or explicitly allow an unencrypted login for this server.",
            )
        offered = auth_mechanisms(self.extensions)
        user, secret = username.encode("utf-8"), password.encode("utf-8")
        if "CRAM-MD5" in offered and (self.tls_version is None or not {"PLAIN", "LOGIN"} & offered):
            # RFC 2195: only a keyed digest of the server's challenge goes over the line,
            # so it comes first on an unencrypted connection.
            reply = await self._command("AUTH CRAM-MD5", secret=True)
            if reply.code == 334:
                try:
                    challenge = base64.b64decode(reply.text.encode("ascii"))
                except (ValueError, UnicodeEncodeError) as error:
                    await self._command("*", secret=True)  # RFC 4954 §4: cancel
                    raise ProtocolError(
                        f"The {self.server} at {self.where} sent a CRAM-MD5 challenge "
                        "Postbridge does not understand.",
                        detail=str(error),
                    ) from error
                digest = hmac.new(secret, challenge, "md5").hexdigest().encode("ascii")
                token = base64.b64encode(user + b" " + digest).decode("ascii")
                reply = await self._command(token, secret=True)
        elif "PLAIN" in offered:
            # RFC 4616: authzid NUL authcid NUL passwd, as an initial response (RFC 4954 §4).
            token = base64.b64encode(b"\0" + user + b"\0" + secret).decode("ascii")
            reply = await self._command(f"AUTH PLAIN {token}", secret=True)
            if reply.code == 334:
                reply = await self._command(token, secret=True)
        elif "LOGIN" in offered:
            reply = await self._command("AUTH LOGIN", secret=True)
            for value in (user, secret):
                if reply.code != 334:
                    break
                reply = await self._command(base64.b64encode(value).decode("ascii"), secret=True)
        else:
            raise AuthError(
                f"The {self.server} at {self.where} does not offer a login method Postbridge "
                "supports (PLAIN, LOGIN or CRAM-MD5).",
                detail=f"AUTH {self.extensions.get('AUTH', '(not offered)')}",
            )
        if reply.code == 235:
            return
        if reply.code == 334:
            await self._command("*", secret=True)  # RFC 4954 §4: cancel the exchange
        if reply.is_temporary:
            raise ServerTemporaryError(
                f"The {self.server} at {self.where} could not check the login right now: {reply}",
                detail=str(reply),
            )
        raise AuthError(
            f"The {self.server} at {self.where} rejected the user name or password "
            f"for {username}: {reply}",
            detail=str(reply),
        )

    async def quit(self) -> None:
        """Say goodbye (QUIT) and close; never raises."""
        if self.is_connected:
            with contextlib.suppress(PostbridgeError):
                await self._command("QUIT")
        await self.abort()

    async def abort(self) -> None:
        """Close the connection without a goodbye; never raises."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        try:
            async with asyncio.timeout(min(self.timeout, CLOSE_TIMEOUT)):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            writer.transport.abort()

    def drop(self) -> None:
        """Cut the connection at once (no await: usable while being cancelled)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    def detach(self) -> tuple[asyncio.StreamWriter, bytes]:
        """Hand the open connection over; returns its writer and the bytes read but unused.

        For ATRN (RFC 2645), where the roles reverse on the same (TLS) connection:
        the caller sets its own protocol on ``writer.transport``, and must keep
        the writer referenced until that transport is closed (a StreamWriter
        closes its transport when garbage-collected). This client forgets both.
        """
        reader, writer = self._reader, self._writer
        if reader is None or writer is None or writer.is_closing():
            raise NetworkError(f"The connection to the {self.server} at {self.where} is closed.")
        self._reader, self._writer = None, None
        return writer, bytes(getattr(reader, "_buffer", b""))

    # -- I/O -------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            raise NetworkError(f"The connection to the {self.server} at {self.where} is closed.")
        try:
            writer.write(data)
            # The transport hands the bytes to the kernel at once when it can; only
            # what the kernel did not take (a big message, a slow server) is waited
            # for. A connection lost meanwhile shows at the next read.
            if writer.transport.get_write_buffer_size():
                async with asyncio.timeout(self.timeout):
                    await writer.drain()
        except (OSError, TimeoutError) as error:
            raise self._network_failure(error, "sending") from error

    async def _send_lines(self, lines: list[str], *, secret: bool = False) -> None:
        if log.isEnabledFor(logging.DEBUG):
            for line in lines:
                shown = line
                if secret:  # keep "AUTH PLAIN", hide what follows and every answer
                    verb = line.split(" ", 2)[:2] if line.startswith("AUTH ") else []
                    shown = " ".join([*verb, "**REDACTED**"])
                log.debug("%s >> %s", self.where, shown)
        await self._write("".join(f"{line}\r\n" for line in lines).encode("utf-8"))

    async def _read_reply(self) -> Reply:
        return (await self._read_replies(1))[0]

    async def _read_replies(
        self, count: int, into: list[Reply] | None = None, *, closing: bool = False
    ) -> list[Reply]:
        """Read ``count`` replies (a pipelined group's) into ``into``, which keeps those
        that arrived if a later one fails; ``closing``: a 421 among them is a NetworkError.

        The server gets ``timeout`` seconds for every answer: the clock restarts for each
        reply that is not already waiting in the buffer (a group usually arrives at once).
        """
        reader = self._reader
        if reader is None:
            raise NetworkError(f"The connection to the {self.server} at {self.where} is closed.")
        replies: list[Reply] = [] if into is None else into
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                for index in range(count):
                    if index and not _line_waiting(reader):
                        deadline.reschedule(asyncio.get_running_loop().time() + self.timeout)
                    reply = await self._next_reply(reader)
                    if closing:
                        self._closing_check(reply)
                    replies.append(reply)
        except (OSError, TimeoutError, EOFError) as error:
            raise self._network_failure(error, "waiting for an answer") from error
        except ValueError as error:  # line longer than LINE_LIMIT
            raise ProtocolError(
                f"The {self.server} at {self.where} sent an over-long answer.",
                detail=str(error),
            ) from error
        return replies

    async def _next_reply(self, reader: asyncio.StreamReader) -> Reply:
        assembler = ReplyAssembler()
        for _ in range(MAX_REPLY_LINES):
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise EOFError("connection closed")
            reply = assembler.feed(line)
            if reply is not None:
                log.debug("%s << %s", self.where, reply)
                return reply
        raise ProtocolError(
            f"The {self.server} at {self.where} sent an endless answer.",
            detail=f"more than {MAX_REPLY_LINES} reply lines",
        )

    async def login(self, username: str, password: str) -> None:
        """AUTH on the open connection, for callers that first look at the EHLO keywords.

        (:meth:`connect` logs in by itself when the client was given a username.)
        """
        try:
            await self._login(username, password)
        except BaseException:
            self.drop()
            raise

    async def command(self, line: str) -> Reply:
        """Send one command line on the open connection and read its reply (ETRN, ATRN)."""
        return await self._command(line)

    async def _command(self, line: str, *, secret: bool = False) -> Reply:
        await self._send_lines([line], secret=secret)
        return await self._read_reply()

    # -- one transaction ---------------------------------------------------------

    def _mail_command(self, sender: str, recipients: list[str], size: int) -> str:
        params = []
        if "SIZE" in self.extensions:
            params.append(f"SIZE={size}")  # RFC 1870: an estimate is fine
        if "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")
        if "SMTPUTF8" in self.extensions and not all(a.isascii() for a in (sender, *recipients)):
            params.append("SMTPUTF8")
        return " ".join([f"MAIL FROM:<{sender}>", *params])

    async def send(
        self,
        *,
        sender: str,
        recipients: list[str] | tuple[str, ...],
        path: Path | None = None,
        data: bytes | None = None,
        prepend: bytes = b"",
        skip: int = 0,
    ) -> dict[str, Verdict]:
        """Send ``prepend`` + the file (or ``data``) from byte ``skip``; return the verdicts.

        Raises StorageError if the spool file cannot be read (before anything
        is sent, or mid-DATA: then the connection is dropped rather than the
        terminator sent, so a truncated message is never delivered),
        ConnectionLost if the connection fails, and what :meth:`connect` raises.
        """
        check_address(sender)
        rcpts = unique(recipients)
        for rcpt in rcpts:
            check_address(rcpt)
        source: BinaryIO | None = None
        if data is not None:
            size = len(prepend) + max(0, len(data) - skip)
            # One piece: the message goes out in a single write with its terminator.
            chunks: Iterator[bytes] = iter((b"".join((prepend, memoryview(data)[skip:])),))
        elif path is not None:
            try:
                # Spool reads are local and short (DESIGN: such blocking work may run
                # inline); a thread hop per 1 MiB chunk would cost more than it saves.
                source = open(path, "rb")  # noqa: SIM115, ASYNC230 - closed by the with below
                size = len(prepend) + max(0, os.fstat(source.fileno()).st_size - skip)
                source.seek(skip)
            except OSError as error:
                if source is not None:
                    source.close()
                raise StorageError(
                    f"Could not read the spooled message {path}.", detail=str(error)
                ) from error
            chunks = _file_chunks(prepend, source)
        else:
            raise ValueError("send needs a path or data")
        with source or contextlib.nullcontext():
            await self.connect()
            verdicts: dict[str, Verdict] = {}
            # On a connection kept from an earlier message, nothing of this one is
            # acknowledged until the server answers its first command (RSET or
            # MAIL): that answer also shows the connection is still alive. A
            # failure before it is "stale", safe to retry on a fresh connection.
            self._acknowledged = not self._used
            try:
                await self._transaction(sender, rcpts, chunks, size, verdicts)
            except PostbridgeError as error:
                self.drop()
                if isinstance(error, StorageError | TLSError | AuthError | InsecureLoginRefused):
                    raise
                raise ConnectionLost(
                    error.message,
                    detail=error.detail,
                    verdicts=verdicts,
                    stale=not self._acknowledged,
                ) from error
            except BaseException:
                # Cancelled (the user quit) or a bug, maybe in the middle of DATA:
                # this connection's state is unknown, and the next MAIL must never
                # land inside a half-sent message.
                self.drop()
                raise
            self._used = True
            return verdicts

    async def _transaction(
        self,
        sender: str,
        rcpts: list[str],
        chunks: Iterator[bytes],
        size: int,
        verdicts: dict[str, Verdict],
    ) -> None:
        # RFC 5321 §4.1.4: MAIL may follow a transaction that ended with a successful
        # DATA; after anything else (a refusal at any step), RSET goes first, in the
        # same write as MAIL where pipelining allows, so it costs no round trip.
        reset = self._needs_reset
        self._needs_reset = True  # until the server has taken this message
        pipelining = "PIPELINING" in self.extensions
        mail = self._mail_command(sender, rcpts, size)
        rcpt_lines = [f"RCPT TO:<{r}>" for r in rcpts]
        rcpt_replies: list[Reply] = []
        data_reply: Reply | None = None
        if pipelining:
            # RFC 2920 §3.1: RSET, MAIL, every RCPT and DATA (which must come last)
            # in one group, one write; the server answers them together.
            group = ["RSET"] * reset + [mail, *rcpt_lines, "DATA"]
            await self._send_lines(group)
            replies: list[Reply] = []
            try:
                await self._read_replies(len(group), replies, closing=True)
            finally:
                if replies and (not reset or replies[0].code == 250):
                    self._acknowledged = True
            if reset:
                self._check_reset(replies.pop(0))
            mail_reply, *rcpt_replies, data_reply = replies
        else:
            if reset:
                await self._send_lines(["RSET"])
                self._check_reset(await self._read_reply())
            await self._send_lines([mail])
            mail_reply = self._closing_check(await self._read_reply())
            self._acknowledged = True
            if mail_reply.code == 250:
                for line in rcpt_lines:
                    await self._send_lines([line])
                    rcpt_replies.append(self._closing_check(await self._read_reply()))
        accepted: list[str] = []
        if mail_reply.code != 250:
            verdicts.update((r, Verdict("mail", mail_reply)) for r in rcpts)
        else:
            for rcpt, reply in zip(rcpts, rcpt_replies, strict=True):
                if reply.code in (250, 251, 252):
                    accepted.append(rcpt)
                else:
                    verdicts[rcpt] = Verdict("rcpt", reply)
        if not accepted:
            if data_reply is not None and data_reply.code == 354:
                # RFC 2920 §3.1: DATA was accepted with nobody to take the message;
                # end it with a lone dot. What the server makes of that is its own
                # affair: hang up rather than guess how many replies follow.
                await self._write(b".\r\n")
                await self.abort()
            return
        if data_reply is None:
            data_reply = self._closing_check(await self._command("DATA"))
        if data_reply.code != 354:
            verdicts.update((r, Verdict("data", data_reply)) for r in accepted)
            return
        await self._send_data(chunks)
        if self.lmtp:
            # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order. Those
            # that arrived stand even if the line drops before the rest.
            finals: list[Reply] = []
            try:
                await self._read_replies(len(accepted), finals, closing=True)
            finally:
                verdicts.update(
                    (rcpt, Verdict("message", reply))
                    for rcpt, reply in zip(accepted, finals, strict=False)
                )
        else:
            finals = [self._closing_check(await self._read_reply())]
            verdicts.update((r, Verdict("message", finals[0])) for r in accepted)
        self._needs_reset = not all(200 <= reply.code < 300 for reply in finals)

    def _closing_check(self, reply: Reply) -> Reply:
        # RFC 5321 §3.8: 421 means the server is closing the connection now.
        if reply.code == 421:
            raise NetworkError(
                f"The {self.server} at {self.where} closed the connection: {reply}",
                detail=str(reply),
            )
        return reply

    def _check_reset(self, reply: Reply) -> None:
        if reply.code != 250:  # typically "421 timeout" from an idle server
            raise self._network_failure(EOFError(str(reply)), "resetting")
        self._acknowledged = True

    async def _send_data(self, chunks: Iterator[bytes]) -> None:
        encoder = DataEncoder()
        held = b""  # the last piece is written together with the terminator
        sent = 0
        while True:  # bounded by the file size / CHUNK_SIZE
            try:
                chunk = next(chunks, None)
            except OSError as error:
                raise StorageError(
                    "Could not read the spooled message while sending it.", detail=str(error)
                ) from error
            if chunk is None:
                break
            if held:
                await self._write(held)
                sent += len(held)
            held = encoder.feed(chunk)
        tail = held + encoder.finish()
        await self._write(tail)
        log.debug("%s >> [message, %d bytes]", self.where, sent + len(tail))
