"""The POP3 byte stream: framing, timeouts, TLS, and failures put into words.

:class:`Pop3Connection` knows how POP3 replies are framed (status lines,
dot-terminated bodies) but not what the commands mean; the session logic is
in :mod:`postbridge.engine.pop3.client`. Kept apart so each half stays small
and the rules about the stream live in one place:

* Every network wait has a timeout (``timeout`` seconds per read or write,
  not per command, so a large message on a slow line is not cut off).
* ``in_sync`` says whether every reply to every command sent has been read.
  :meth:`Pop3Connection.guard` drops the connection when a failure leaves it
  out of step: reading on would pair replies with the wrong commands, and a
  later QUIT would commit deletions nobody meant.
* Commands are logged (logger ``postbridge.pop3``, DEBUG) with passwords,
  APOP digests and SASL data replaced by ``**REDACTED**``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from ssl import SSLContext
from typing import Protocol

from postbridge.engine.errors import (
    MailboxBusy,
    NetworkError,
    PostbridgeError,
    ProtocolError,
    ServerPermanentError,
    ServerTemporaryError,
    TLSError,
)
from postbridge.engine.pop3.replies import CRLF, DotUnstuffer, Status, parse_status

__all__ = ["MAX_IN_MEMORY", "READ_SIZE", "REDACTED", "OpenConnection", "Pop3Connection"]

logger = logging.getLogger("postbridge.pop3")

READ_SIZE = 64 * 1024
# asyncio's stream stops reading the socket when twice its limit waits unread, and
# starts again once it is read: with its default 64 KiB a fast download of small
# messages stopped and restarted the socket every few messages (two epoll changes and
# a hop through the event loop each time). Up to 2 MiB now waits instead, which
# made 1,000 x 20 KB ~4% faster in the benchmark.
STREAM_LIMIT = 1024 * 1024
# RFC 2449 §4 limits a status line to 512 octets; we allow more for sloppy
# servers but not without bound, so garbage without a newline cannot eat memory.
MAX_STATUS_LINE = 8 * 1024
# CAPA, LIST, UIDL and TOP replies are collected in memory; this bounds them.
MAX_IN_MEMORY = 64 * 1024 * 1024
REDACTED = "**REDACTED**"


class OpenConnection(Protocol):
    """The connection seam: opens a stream pair, like :func:`asyncio.open_connection`.

    ``ssl`` is the context for implicit TLS (None for a plain connection);
    ``server_hostname`` is the name the certificate must match (None without TLS).
    """

    def __call__(
        self,
        host: str,
        port: int,
        *,
        ssl: SSLContext | None,
        server_hostname: str | None,
    ) -> Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]: ...


async def asyncio_open_connection(
    host: str, port: int, *, ssl: SSLContext | None, server_hostname: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The default seam: a real TCP connection."""
    return await asyncio.open_connection(
        host, port, ssl=ssl, server_hostname=server_hostname, limit=STREAM_LIMIT
    )


def redact(command: bytes) -> str:
    """The command as it may appear in a log: no passwords, digests or SASL data."""
    verb, _, arg = command.partition(b" ")
    upper = verb.upper()
    if upper == b"PASS":
        return f"PASS {REDACTED}"
    if upper == b"APOP":
        user = arg.split(b" ", 1)[0].decode("utf-8", "replace")
        return f"APOP {user} {REDACTED}"
    if upper == b"AUTH":
        mechanism, _, initial = arg.partition(b" ")
        shown = mechanism.decode("utf-8", "replace")
        return f"AUTH {shown} {REDACTED}" if initial else f"AUTH {shown}"
    return command.decode("utf-8", "replace")


class Pop3Connection:
    """One TCP (or TLS) stream to a POP3 server, read in chunks through our own buffer.

    The buffer is ours rather than StreamReader's because a pipelined read
    returns the end of one reply and the start of the next together, and the
    dot-unstuffer hands back what follows a body.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        label: str,
        timeout: float,
        open_connection: OpenConnection,
    ) -> None:
        self.host = host
        self.port = port
        self.label = label
        self.timeout = timeout
        self.in_sync = True
        self.encrypted = False
        self._open_connection = open_connection
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._dropped: asyncio.StreamWriter | None = None
        # Received, not yet consumed: self._rbuf[self._rpos:]. An offset rather than
        # slicing off what was read, so a pipelined 64 KB chunk holding several
        # messages is not copied again for each status line and body in it.
        self._rbuf = b""
        self._rpos = 0

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    # ------------------------------------------------------------ opening

    async def open(self, *, tls: SSLContext | None) -> None:
        """Connect; with ``tls``, TLS from the first byte (POP3S, port 995)."""
        if self._writer is not None:
            raise RuntimeError("Pop3Connection.open() called twice")
        where = f"Could not connect to {self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._open_connection(
                    self.host,
                    self.port,
                    ssl=tls,
                    server_hostname=self.host if tls is not None else None,
                )
        except TimeoutError:
            raise NetworkError(f"{where}: no answer after {self.timeout:g} seconds") from None
        except ssl.SSLError as error:
            raise self.tls_error(error) from None
        except socket.gaierror as error:
            raise NetworkError(
                f"{where}: the server name was not found "
                "(check its spelling and the Internet connection)",
                detail=str(error),
            ) from None
        except ConnectionRefusedError as error:
            raise NetworkError(
                f"{where}: the server refused the connection "
                "(check the port, or the server may be down)",
                detail=str(error),
            ) from None
        except OSError as error:
            raise NetworkError(
                f"{where}: the network could not reach it", detail=str(error)
            ) from None
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Commands are small and we wait for each reply: no Nagle delay.
            # (asyncio sets this too on most platforms; we do not rely on it.)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader, self._writer = reader, writer
        self.encrypted = tls is not None
        self.in_sync = False  # the greeting is still to come

    async def start_tls(self, context: SSLContext) -> None:
        """Upgrade to TLS after the server's +OK to STLS (RFC 2595 §4)."""
        if len(self._rbuf) > self._rpos:
            # Anything after "+OK" and before the handshake was not protected:
            # a man in the middle may have injected it (cf. CVE-2011-0411).
            raise ProtocolError(
                f"{self.host} sent unexpected data before encryption started",
                detail=repr(self._rbuf[self._rpos : self._rpos + 200]),
            )
        writer = self.require_writer()
        plain_transport = writer.transport
        self.in_sync = False
        try:
            async with asyncio.timeout(self.timeout):
                await writer.start_tls(context, server_hostname=self.host)
        except TimeoutError:
            raise self.stopped() from None
        except ssl.SSLError as error:
            raise self.tls_error(error) from None
        except OSError as error:
            raise self.lost(str(error)) from None
        except AttributeError:
            # CPython gh-105993: when the server hangs up during the handshake,
            # loop.start_tls() returns None and StreamWriter.start_tls() fails
            # here, leaving the writer without a transport (its __del__ would
            # then raise). Give it back the closed one and report a lost line.
            if writer.transport is not None:
                raise
            vars(writer)["_transport"] = plain_transport
            raise self.lost("the server closed the connection during the TLS handshake") from None
        self.in_sync = True
        self.encrypted = True

    # ------------------------------------------------------------ closing

    def require_writer(self) -> asyncio.StreamWriter:
        if self._writer is None:
            raise NetworkError(
                f"The connection to {self.host} for {self.label} is closed",
                detail="no open POP3 session (closed after an earlier failure?)",
            )
        return self._writer

    def drop(self) -> None:
        """Abort the transport at once (no QUIT); :meth:`close` waits for it to finish."""
        writer, self._writer, self._reader = self._writer, None, None
        self._rbuf = b""
        self._rpos = 0
        self.in_sync = True
        if writer is not None:
            writer.transport.abort()
            self._dropped = writer

    async def close(self) -> None:
        """Drop the connection (if open) and wait briefly until the socket is closed."""
        self.drop()
        writer, self._dropped = self._dropped, None
        if writer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(min(self.timeout, 5.0)):
                    await writer.wait_closed()

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Drop the connection if a failure leaves a reply half-read."""
        self.require_writer()
        try:
            yield
        except BaseException:
            if not self.in_sync:
                logger.debug("%s: dropping the connection to %s", self.label, self.host)
                self.drop()
            raise

    # ------------------------------------------------------------ the wire

    async def send(self, *commands: bytes, secret: bool = False) -> None:
        """Send commands in one write (one TCP segment for a pipelined batch)."""
        writer = self.require_writer()
        if logger.isEnabledFor(logging.DEBUG):
            for command in commands:
                logger.debug("%s C: %s", self.label, REDACTED if secret else redact(command))
        self.in_sync = False
        writer.write(b"".join(command + CRLF for command in commands))
        try:
            async with asyncio.timeout(self.timeout):
                await writer.drain()
        except TimeoutError:
            raise self.stopped() from None
        except OSError as error:
            raise self.lost(str(error)) from None

    async def _read_chunk(self) -> bytes:
        reader = self._reader
        if reader is None:
            raise self.lost("the connection was closed")
        try:
            async with asyncio.timeout(self.timeout):
                data = await reader.read(READ_SIZE)
        except TimeoutError:
            raise self.stopped() from None
        except OSError as error:
            raise self.lost(str(error)) from None
        if not data:
            raise self.lost("the server closed the connection in the middle of a reply")
        return data

    async def readline(self) -> bytes:
        """One line without its line ending (LF or CRLF), bounded in length."""
        # Bounded: each turn adds at least one byte, and we stop at MAX_STATUS_LINE.
        while True:
            end = self._rbuf.find(b"\n", self._rpos)
            if end >= 0:
                line = self._rbuf[self._rpos : end]
                self._rpos = end + 1
                return line[:-1] if line.endswith(b"\r") else line
            pending = self._rbuf[self._rpos :]
            if len(pending) > MAX_STATUS_LINE:
                raise self.garbage(repr(pending[:200]))
            self._rbuf, self._rpos = pending + await self._read_chunk(), 0

    def parse_status(self, line: bytes) -> Status:
        try:
            status = parse_status(line)
        except ProtocolError as error:
            raise self.garbage(error.detail) from None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s S: %s", self.label, status.describe())
        return status

    async def read_status(self) -> Status:
        return self.parse_status(await self.readline())

    async def read_body(self, write: Callable[[bytes], object]) -> int:
        """Stream one multi-line body into ``write``; keep what follows it buffered."""
        decoder = DotUnstuffer()
        data, start = self._rbuf, self._rpos
        self._rbuf, self._rpos = b"", 0
        total = 0
        # Bounded by the reply: every turn consumes a non-empty chunk, and EOF
        # or a silent server (timeout) ends it with an error.
        while True:
            body, rest = decoder.feed_at(data, start)
            if body:
                write(body)
                total += len(body)
            if rest >= 0:
                self._rbuf, self._rpos = data, rest
                return total
            data, start = await self._read_chunk(), 0

    async def simple(self, command: bytes) -> Status:
        """A single-line command: send it, read the status line."""
        await self.send(command)
        status = await self.read_status()
        self.in_sync = True
        return status

    async def multi(self, command: bytes) -> tuple[Status, bytes | None]:
        """A multi-line command whose reply is small enough to keep in memory."""
        await self.send(command)
        reply = await self.read_multi(command)
        self.in_sync = True
        return reply

    async def read_multi(self, command: bytes) -> tuple[Status, bytes | None]:
        """The reply to a multi-line ``command`` already sent: its status, and its body
        when the status is +OK (bounded, kept in memory). Leaves ``in_sync`` alone: a
        pipelined batch is in sync only after its last reply."""
        status = await self.read_status()
        if not status.ok:
            return status, None
        parts: list[bytes] = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > MAX_IN_MEMORY:
                raise ProtocolError(
                    f"{self.host} sent a reply to {command.split()[0].decode()} that is "
                    "far too long",
                    detail=f"more than {MAX_IN_MEMORY} bytes",
                )
            parts.append(data)

        await self.read_body(collect)
        return status, b"".join(parts)

    # ------------------------------------------------------------ failures

    def stopped(self) -> NetworkError:
        return NetworkError(
            f"{self.host} stopped answering; Postbridge gave up on {self.label} "
            f"after {self.timeout:g} seconds",
            detail=f"no data for {self.timeout:g} s",
        )

    def lost(self, detail: str) -> NetworkError:
        return NetworkError(
            f"The connection to {self.host} was lost while reading {self.label}; "
            "Postbridge will try again at the next poll",
            detail=detail,
        )

    def garbage(self, detail: str | None) -> ProtocolError:
        return ProtocolError(
            f"{self.host} sent a reply Postbridge does not understand", detail=detail
        )

    def tls_error(self, error: ssl.SSLError) -> TLSError:
        if isinstance(error, ssl.SSLCertVerificationError):
            return TLSError(
                f"The certificate of {self.host} is not trusted, so Postbridge did not "
                f"log in to {self.label}. If the ISP changed its certificate, check the "
                "server name and the certificate before trusting it",
                detail=error.verify_message or str(error),
            )
        return TLSError(
            f"The secure (TLS) connection to {self.host} failed for {self.label}",
            detail=str(error),
        )

    def status_error(self, status: Status, *, default: PostbridgeError) -> PostbridgeError:
        """Map RFC 2449 §8 / RFC 3206 response codes to errors; ``default`` if none."""
        detail = f"{self.host}: {status.describe()}"
        if status.has_code("IN-USE"):
            return MailboxBusy(
                f"Another program is reading the mailbox {self.label} on {self.host} "
                "right now; Postbridge will try again later",
                detail=detail,
            )
        if status.has_code("LOGIN-DELAY"):
            return MailboxBusy(
                f"{self.host} does not allow logging in to {self.label} again so soon; "
                "Postbridge will try again later",
                detail=detail,
            )
        if status.has_code("SYS", "TEMP"):
            return ServerTemporaryError(
                f"{self.host} has a temporary problem with the mailbox {self.label}; "
                "Postbridge will try again later",
                detail=detail,
            )
        if status.has_code("SYS"):
            return ServerPermanentError(
                f"{self.host} reports a lasting problem with the mailbox {self.label}; "
                "the ISP has to fix it",
                detail=detail,
            )
        return default

    def refused(self, status: Status, verb: str) -> PostbridgeError:
        """The error for a -ERR to ``verb``: a response code's meaning, else a ProtocolError."""
        return self.status_error(
            status,
            default=ProtocolError(
                f"{self.host} refused the {verb} command for {self.label}",
                detail=f"{self.host}: {status.describe()}",
            ),
        )
