"""A small asyncio SMTP/LMTP client of our own, for delivering spooled messages.

Why not ``smtplib`` or ``aiosmtplib``: both take the message as one ``bytes``
object, so a 100 MB message would make the process 100 MB bigger; we stream
``DATA`` from the spool file instead, dot-stuffing whole chunks. And for LMTP,
``smtplib.LMTP`` reads only one reply after ``DATA`` although RFC 2033 §4.2
sends one per accepted recipient (a long-open CPython bug), which would lose
exactly the per-recipient outcome LMTP exists for. Our client reads them all.

What it does: EHLO/LHLO, STARTTLS (RFC 3207) or implicit TLS with certificate
verification, AUTH PLAIN/LOGIN/CRAM-MD5 (never over plain text unless allowed), ESMTP
PIPELINING (RFC 2920: MAIL and all RCPTs in one write), SIZE (RFC 1870),
BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), multi-line replies, a timeout
on every read and write, and one connection kept open across messages (RSET
between them). The connection comes from a factory (``open_connection``), so
tests can hand in their own, as imapclient does with ``_create_IMAP4()``.

Passwords never reach the log: the ``postbridge.smtp`` logger shows AUTH
exchanges as ``**REDACTED**``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
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
    if prepend:
        yield prepend
    yield from iter(partial(source.read, CHUNK_SIZE), b"")


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
        if self._writer is None:
            raise NetworkError(f"The connection to the {self.server} at {self.where} is closed.")
        try:
            self._writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self._writer.drain()
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
        if self._reader is None:
            raise NetworkError(f"The connection to the {self.server} at {self.where} is closed.")
        assembler = ReplyAssembler()
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(MAX_REPLY_LINES):
                    line = await self._reader.readline()
                    if not line.endswith(b"\n"):
                        raise EOFError("connection closed")
                    reply = assembler.feed(line)
                    if reply is not None:
                        log.debug("%s << %s", self.where, reply)
                        return reply
        except (OSError, TimeoutError, EOFError) as error:
            raise self._network_failure(error, "waiting for an answer") from error
        except ValueError as error:  # line longer than LINE_LIMIT
            raise ProtocolError(
                f"The {self.server} at {self.where} sent an over-long answer.",
                detail=str(error),
            ) from error
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
        try:
            # Spool reads are local and short (DESIGN: such blocking work may run
            # inline); a thread hop per 1 MiB chunk would cost more than it saves.
            source: BinaryIO
            if data is not None:
                source, total = io.BytesIO(data), len(data)
            elif path is not None:
                source = open(path, "rb")  # noqa: SIM115, ASYNC230 - closed by the with below
                total = os.fstat(source.fileno()).st_size
            else:
                raise ValueError("send needs a path or data")
        except OSError as error:
            raise StorageError(
                f"Could not read the spooled message {path}.", detail=str(error)
            ) from error
        with source:
            size = len(prepend) + max(0, total - skip)
            source.seek(skip)
            await self.connect()
            verdicts: dict[str, Verdict] = {}
            # On a connection kept from an earlier message, RSET goes first: it
            # ends whatever state that message left, and its reply shows whether
            # the connection is still alive. Until it arrives, nothing of this
            # message has been acknowledged: a failure is "stale", safe to retry.
            self._acknowledged = not self._used
            try:
                await self._transaction(sender, rcpts, source, size, prepend, verdicts)
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
                # this connection's state is unknown, and the next RSET must never
                # land inside a half-sent message.
                self.drop()
                raise
            self._used = True
            return verdicts

    async def _transaction(
        self,
        sender: str,
        rcpts: list[str],
        source: BinaryIO,
        size: int,
        prepend: bytes,
        verdicts: dict[str, Verdict],
    ) -> None:
        reset = [] if self._acknowledged else ["RSET"]
        commands = [self._mail_command(sender, rcpts, size)]
        commands += [f"RCPT TO:<{r}>" for r in rcpts]
        pipelining = "PIPELINING" in self.extensions
        if pipelining:
            # RFC 2920 §3.1: RSET, MAIL and RCPT may all go in one group, one write.
            await self._send_lines(reset + commands)
        if reset:
            if not pipelining:
                await self._send_lines(reset)
            reply = await self._read_reply()
            if reply.code != 250:  # typically "421 timeout" from an idle server
                raise self._network_failure(EOFError(str(reply)), "resetting")
            self._acknowledged = True
        replies: list[Reply] = []
        for index, command in enumerate(commands):
            if not pipelining:
                await self._send_lines([command])
            reply = self._closing_check(await self._read_reply())
            replies.append(reply)
            if index == 0 and reply.code != 250 and not pipelining:
                break  # sender refused: no point asking about recipients
        mail_reply = replies[0]
        if mail_reply.code != 250:
            verdicts.update((r, Verdict("mail", mail_reply)) for r in rcpts)
            await self._reset()
            return
        accepted: list[str] = []
        for rcpt, reply in zip(rcpts, replies[1:], strict=True):
            if reply.code in (250, 251, 252):
                accepted.append(rcpt)
            else:
                verdicts[rcpt] = Verdict("rcpt", reply)
        if not accepted:
            await self._reset()
            return
        reply = self._closing_check(await self._command("DATA"))
        if reply.code != 354:
            verdicts.update((r, Verdict("data", reply)) for r in accepted)
            await self._reset()
            return
        await self._send_data(source, prepend)
        if self.lmtp:
            # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
            for rcpt in accepted:
                verdicts[rcpt] = Verdict("message", self._closing_check(await self._read_reply()))
        else:
            reply = self._closing_check(await self._read_reply())
            verdicts.update((r, Verdict("message", reply)) for r in accepted)

    def _closing_check(self, reply: Reply) -> Reply:
        # RFC 5321 §3.8: 421 means the server is closing the connection now.
        if reply.code == 421:
            raise NetworkError(
                f"The {self.server} at {self.where} closed the connection: {reply}",
                detail=str(reply),
            )
        return reply

    async def _reset(self) -> None:
        reply = await self._command("RSET")
        if reply.code != 250:
            raise self._network_failure(EOFError(str(reply)), "resetting")

    async def _send_data(self, source: BinaryIO, prepend: bytes) -> None:
        encoder = DataEncoder()
        held = b""  # the last piece is written together with the terminator
        sent = 0
        chunks = _file_chunks(prepend, source)
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
