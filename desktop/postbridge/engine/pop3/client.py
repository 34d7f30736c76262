"""An asyncio POP3 client that streams messages and never holds one whole.

Why not :mod:`poplib`: it blocks (so one stalled ISP would freeze the poll
cycle, and several mailboxes could not be read at once), ``retr()`` returns a
message as a list of lines held in memory (a 100 MB message would make the
process 100 MB bigger), it has no PIPELINING (RFC 2449 §6.6), so every message
costs a network round trip, and it cannot hand a message to the spool while it
is still arriving. This client does all of that: replies are parsed by the pure
functions of :mod:`postbridge.engine.pop3.replies`, bodies are dot-unstuffed
chunk by chunk straight into a caller-supplied sink, and RETR/DELE commands are
pipelined when the server allows it.

Safety rules this module keeps:

* A password is never sent unencrypted unless the account explicitly allows it
  (APOP, which sends only an MD5 digest, is the exception), and never logged:
  the ``postbridge.pop3`` logger shows PASS, APOP and AUTH arguments as
  ``**REDACTED**``.
* Deletions are committed only by a confirmed QUIT (RFC 1939 §6). Leaving an
  ``async with`` block, :meth:`Pop3Client.close` and every failure drop the
  connection without QUIT, so nothing is deleted unless the caller asked.
* After any failure that may leave a reply half-read (timeout, lost line,
  garbage, an exception in a callback mid-message), the connection is dropped:
  reading on would pair replies with the wrong commands.
* Every read and write has a timeout (``timeout`` seconds per network wait,
  not per command, so a large message on a slow line is not cut off).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import inspect
import itertools
import logging
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from ssl import SSLContext
from types import TracebackType
from typing import Literal, Protocol, Self, TypeVar

from postbridge.engine.errors import (
    AuthError,
    InsecureLoginRefused,
    MailboxBusy,
    NetworkError,
    PostbridgeError,
    ProtocolError,
    ServerPermanentError,
    ServerTemporaryError,
    TLSError,
)
from postbridge.engine.pop3.replies import (
    CRLF,
    Capabilities,
    DotUnstuffer,
    Status,
    greeting_timestamp,
    is_continuation,
    parse_capa,
    parse_list_body,
    parse_stat,
    parse_status,
    parse_uidl_body,
)

__all__ = ["LoginMethod", "OpenConnection", "Pop3Client", "Security", "Sink"]

logger = logging.getLogger("postbridge.pop3")

Security = Literal["tls", "starttls", "none"]
LoginMethod = Literal["auto", "user", "apop", "plain"]

READ_SIZE = 64 * 1024
# RFC 2449 §4 limits a status line to 512 octets; we allow more for sloppy
# servers but not without bound, so garbage without a newline cannot eat memory.
MAX_STATUS_LINE = 8 * 1024
# CAPA, LIST, UIDL and TOP replies are collected in memory; this bounds them.
MAX_IN_MEMORY = 64 * 1024 * 1024
DEFAULT_RETR_WINDOW = 16
DEFAULT_DELE_WINDOW = 64
# RFC 5034 §4: the AUTH command line is at most 255 octets; a longer initial
# response is sent after an empty "+ " continuation instead.
MAX_AUTH_LINE = 255
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


class Sink(Protocol):
    """Where a message's bytes go: a spool file, a hash, a BytesIO in tests."""

    def write(self, data: bytes, /) -> object: ...


SinkT = TypeVar("SinkT", bound=Sink)


async def _asyncio_open_connection(
    host: str, port: int, *, ssl: SSLContext | None, server_hostname: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, ssl=ssl, server_hostname=server_hostname)


def _redact(command: bytes) -> str:
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


def _check_msgnum(msgnum: int) -> bytes:
    # RFC 1939 §5: message numbers start at 1. A bad one is a bug in the caller.
    if not isinstance(msgnum, int) or isinstance(msgnum, bool) or msgnum < 1:
        raise ValueError(f"POP3 message numbers start at 1, got {msgnum!r}")
    return str(msgnum).encode("ascii")


class Pop3Client:
    """One POP3 session with one ISP mailbox.

    Typical use::

        async with Pop3Client(host=..., port=995, security="tls", label="office") as pop:
            await pop.login(user, password)
            sizes = await pop.list_all()
            await pop.retr_many(sizes, open_sink=..., on_complete=...)
            await pop.dele_many(done)
            await pop.quit()        # only a confirmed QUIT commits the deletions

    Failures are :class:`PostbridgeError` subclasses whose text names the server
    and mailbox in plain words; the server's own words are in ``detail``.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: Security = "tls",
        ssl_context: SSLContext | None = None,
        timeout: float = 60.0,
        allow_plaintext_login: bool = False,
        open_connection: OpenConnection | None = None,
        label: str | None = None,
    ) -> None:
        if security not in ("tls", "starttls", "none"):
            raise ValueError(f"security must be 'tls', 'starttls' or 'none', not {security!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.host = host
        self.port = port
        self.security: Security = security
        self.timeout = timeout
        self.allow_plaintext_login = allow_plaintext_login
        self.label = label or host
        self._ssl_context = ssl_context
        self._open_connection: OpenConnection = open_connection or _asyncio_open_connection
        if security == "none" and allow_plaintext_login:
            # Built insecurely on purpose: say so once, where it is configured.
            logger.warning(
                "%s: passwords may be sent unencrypted to %s (plaintext login allowed)",
                self.label,
                host,
            )

        self.capabilities = Capabilities.none()
        self.greeting: str | None = None
        self.apop_timestamp: str | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._dropped: asyncio.StreamWriter | None = None
        self._rbuf = b""
        self._in_sync = True
        self._encrypted = False
        self._capa_supported = False
        self._authenticated = False

    # ----------------------------------------------------------------- state

    @property
    def connected(self) -> bool:
        """Whether a session is open (it may still be before login)."""
        return self._writer is not None

    @property
    def authenticated(self) -> bool:
        """Whether login succeeded (the session is in the TRANSACTION state)."""
        return self._authenticated

    @property
    def encrypted(self) -> bool:
        """Whether the connection is protected by TLS (implicit or after STLS)."""
        return self._encrypted

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Never QUIT implicitly: a QUIT commits deletions (RFC 1939 §6), and
        # only the caller knows whether the messages are safe.
        await self.close()

    # ------------------------------------------------------------ connecting

    def _context(self) -> SSLContext:
        if self._ssl_context is None:
            # Certificate and host name verification on, system trust store.
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def connect(self) -> None:
        """Open the connection, read the greeting, negotiate TLS, learn capabilities."""
        if self._writer is not None:
            raise RuntimeError("Pop3Client.connect() called twice")
        implicit = self.security == "tls"
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._open_connection(
                    self.host,
                    self.port,
                    ssl=self._context() if implicit else None,
                    server_hostname=self.host if implicit else None,
                )
        except TimeoutError:
            raise NetworkError(
                f"Could not connect to {self.host}:{self.port}: "
                f"no answer after {self.timeout:g} seconds",
            ) from None
        except ssl.SSLError as error:
            raise self._tls_error(error) from None
        except socket.gaierror as error:
            raise NetworkError(
                f"Could not connect to {self.host}:{self.port}: the server name was not found "
                "(check its spelling and the Internet connection)",
                detail=str(error),
            ) from None
        except ConnectionRefusedError as error:
            raise NetworkError(
                f"Could not connect to {self.host}:{self.port}: the server refused the "
                "connection (check the port, or the server may be down)",
                detail=str(error),
            ) from None
        except OSError as error:
            raise NetworkError(
                f"Could not connect to {self.host}:{self.port}: the network could not reach it",
                detail=str(error),
            ) from None

        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Commands are small and we wait for each reply: no Nagle delay.
            # (asyncio sets this too on most platforms; we do not rely on it.)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader, self._writer = reader, writer
        self._encrypted = implicit
        self._in_sync = False  # the greeting is still to come
        try:
            await self._handshake()
        except BaseException:
            self._drop()
            raise

    async def _handshake(self) -> None:
        greeting = await self._read_status()
        if not greeting.ok:
            raise self._status_error(
                greeting,
                default=ServerTemporaryError(
                    f"{self.host} refused to open a session for {self.label}; "
                    "Postbridge will try again later",
                    detail=greeting.describe(),
                ),
            )
        self._in_sync = True
        self.greeting = greeting.text
        self.apop_timestamp = greeting_timestamp(greeting.text)
        await self._refresh_capabilities()
        if self.security == "starttls":
            await self._starttls()
            # RFC 2595 §4: capabilities learned before TLS must be discarded.
            await self._refresh_capabilities()

    async def _starttls(self) -> None:
        # We try STLS even if CAPA did not list it (old servers without CAPA
        # may still support it); the server's -ERR is what "not offered" means.
        status = await self._simple(b"STLS")
        if not status.ok:
            raise TLSError(
                f"{self.host} does not offer encryption (STLS) for {self.label}, and "
                "Postbridge will not continue unencrypted. Choose another security "
                "setting or port for this mailbox",
                detail=status.describe(),
            )
        if self._rbuf:
            # Anything after "+OK" and before the handshake was not protected:
            # a man in the middle may have injected it (cf. CVE-2011-0411).
            raise ProtocolError(
                f"{self.host} sent unexpected data before encryption started",
                detail=repr(self._rbuf[:200]),
            )
        writer = self._require_writer()
        plain_transport = writer.transport
        self._in_sync = False
        try:
            async with asyncio.timeout(self.timeout):
                await writer.start_tls(self._context(), server_hostname=self.host)
        except TimeoutError:
            raise self._stopped() from None
        except ssl.SSLError as error:
            raise self._tls_error(error) from None
        except OSError as error:
            raise self._lost(str(error)) from None
        except AttributeError:
            # CPython gh-105993: when the server hangs up during the handshake,
            # loop.start_tls() returns None and StreamWriter.start_tls() fails
            # here, leaving the writer without a transport (its __del__ would
            # then raise). Give it back the closed one and report a lost line.
            if writer.transport is not None:
                raise
            vars(writer)["_transport"] = plain_transport
            raise self._lost("the server closed the connection during the TLS handshake") from None
        self._in_sync = True
        self._encrypted = True
        self.capabilities = Capabilities.none()

    async def _refresh_capabilities(self) -> None:
        status, body = await self._multi(b"CAPA")
        if not status.ok or body is None:
            # RFC 1939-only server: no extensions assumed, everything still works.
            self._capa_supported = False
            self.capabilities = Capabilities.none()
            return
        self._capa_supported = True
        self.capabilities = parse_capa(body)

    # --------------------------------------------------------------- login

    def choose_login_method(self, method: LoginMethod = "auto") -> Literal["user", "apop", "plain"]:
        """The login method :meth:`login` would use, or the refusal it would raise.

        Order for ``auto``:

        * Encrypted connection: SASL PLAIN if advertised (one round trip, the
          password travels inside TLS); else USER/PASS if advertised or if the
          server has no CAPA (nothing is known); else APOP if the greeting had
          a timestamp; else USER/PASS anyway and let the server answer.
        * Unencrypted connection: APOP if the greeting had a timestamp (MD5 is
          weak, but the password itself is not sent); else, only if plaintext
          login is allowed for this account, PLAIN or USER/PASS as above; else
          :class:`InsecureLoginRefused`.
        """
        caps = self.capabilities
        if method == "auto":
            if not self._encrypted and self.apop_timestamp is not None:
                return "apop"
            if "PLAIN" in caps.sasl:
                chosen: Literal["user", "apop", "plain"] = "plain"
            elif caps.user or not self._capa_supported:
                chosen = "user"
            elif self.apop_timestamp is not None:
                return "apop"
            else:
                chosen = "user"
        elif method in ("user", "apop", "plain"):
            chosen = method
        else:
            raise ValueError(f"unknown POP3 login method {method!r}")
        if chosen == "apop" and self.apop_timestamp is None:
            raise AuthError(
                f"{self.host} does not offer APOP login (its greeting has no timestamp); "
                f"choose another login method for {self.label}",
                detail=self.greeting,
            )
        if chosen != "apop" and not self._encrypted and not self.allow_plaintext_login:
            raise InsecureLoginRefused(
                f"Postbridge did not send the password for {self.label} to {self.host}, "
                "because the connection is not encrypted. Choose TLS or STARTTLS for this "
                "mailbox, or explicitly allow unencrypted login for it",
            )
        return chosen

    async def login(self, username: str, password: str, *, method: LoginMethod = "auto") -> None:
        """Authenticate (RFC 1939 USER/PASS or APOP, RFC 5034 AUTH PLAIN).

        See :meth:`choose_login_method` for the order ``auto`` follows.
        """
        self._require_writer()
        chosen = self.choose_login_method(method)
        async with self._guard():
            if chosen == "plain":
                await self._login_plain(username, password)
            elif chosen == "apop":
                await self._login_apop(username, password)
            else:
                await self._login_user(username, password)
            self._authenticated = True
            if self._capa_supported:
                # RFC 2449 §6.5/6.7: EXPIRE and LOGIN-DELAY may be per user
                # ("USER" argument) and are only exact after login.
                before = self.capabilities
                await self._refresh_capabilities()
                if not self._capa_supported:
                    self._capa_supported, self.capabilities = True, before

    def _check_line_safe(self, value: str, what: str) -> None:
        if any(char in value for char in "\r\n\0"):
            raise AuthError(
                f"The {what} for {self.label} contains a line break, which POP3 cannot send"
            )

    async def _login_user(self, username: str, password: str) -> None:
        self._check_line_safe(username, "user name")
        self._check_line_safe(password, "password")
        status = await self._simple(b"USER " + username.encode("utf-8"))
        if not status.ok:
            raise self._login_error(
                status,
                default=AuthError(
                    f"The ISP rejected the user name {username}",
                    detail=f"{self.host}: {status.describe()}",
                ),
            )
        status = await self._simple(b"PASS " + password.encode("utf-8"))
        if not status.ok:
            raise self._login_error(status, default=self._wrong_password(username, status))

    async def _login_apop(self, username: str, password: str) -> None:
        self._check_line_safe(username, "user name")
        assert self.apop_timestamp is not None
        # RFC 1939 §7: digest = MD5(timestamp + shared secret), lower-case hex.
        digest = hashlib.md5(
            (self.apop_timestamp + password).encode("utf-8"), usedforsecurity=False
        ).hexdigest()
        status = await self._simple(f"APOP {username} {digest}".encode())
        if not status.ok:
            raise self._login_error(status, default=self._wrong_password(username, status))

    async def _login_plain(self, username: str, password: str) -> None:
        # RFC 4616: authzid NUL authcid NUL passwd; empty authzid.
        token = base64.b64encode(
            b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8")
        )
        command = b"AUTH PLAIN " + token
        if len(command) + len(CRLF) <= MAX_AUTH_LINE:
            await self._send(command)
        else:
            await self._send(b"AUTH PLAIN")
            line = await self._readline()
            if not is_continuation(line):
                status = self._parse_status(line)
                self._in_sync = True
                raise self._login_error(status, default=self._wrong_password(username, status))
            await self._send(token, secret=True)
        line = await self._readline()
        if is_continuation(line):
            # PLAIN is one step; a further challenge means the exchange went
            # wrong. RFC 5034 §4: "*" cancels, and the server answers -ERR.
            await self._send(b"*")
            line = await self._readline()
        status = self._parse_status(line)
        self._in_sync = True
        if not status.ok:
            raise self._login_error(status, default=self._wrong_password(username, status))

    def _wrong_password(self, username: str, status: Status) -> AuthError:
        return AuthError(
            f"The ISP rejected the password for {username}",
            detail=f"{self.host}: {status.describe()}",
        )

    def _login_error(self, status: Status, *, default: PostbridgeError) -> PostbridgeError:
        # RFC 3206 §4: [AUTH] means the credentials; a login -ERR without a
        # code is, in practice, also a wrong password.
        return self._status_error(status, default=default)

    # ------------------------------------------------------------ commands

    async def stat(self) -> tuple[int, int]:
        """(number of messages, total octets) of the maildrop (RFC 1939 §5)."""
        async with self._guard():
            status = await self._simple(b"STAT")
        self._raise_unless_ok(status, "STAT")
        try:
            return parse_stat(status.text)
        except ProtocolError as error:
            raise self._garbage(error) from None

    async def list_all(self) -> dict[int, int]:
        """{message number: size in octets} for every message not marked deleted."""
        async with self._guard():
            status, body = await self._multi(b"LIST")
        self._raise_unless_ok(status, "LIST")
        assert body is not None
        try:
            return parse_list_body(body)
        except ProtocolError as error:
            raise self._garbage(error) from None

    async def uidl_all(self) -> dict[int, str] | None:
        """{message number: unique id}, or None if the server has no UIDL (it is optional)."""
        async with self._guard():
            status, body = await self._multi(b"UIDL")
        if not status.ok:
            if status.code:
                # [SYS/TEMP], [IN-USE]...: a real problem, not a missing command.
                self._raise_unless_ok(status, "UIDL")
            return None
        assert body is not None
        try:
            return parse_uidl_body(body)
        except ProtocolError as error:
            raise self._garbage(error) from None

    async def top(self, msgnum: int, lines: int) -> bytes:
        """Headers, blank line and the first ``lines`` body lines (RFC 1939 §7), in memory."""
        number = _check_msgnum(msgnum)
        if lines < 0:
            raise ValueError(f"TOP needs a line count >= 0, got {lines}")
        async with self._guard():
            status, body = await self._multi(b"TOP " + number + b" %d" % lines)
        self._raise_unless_ok(status, "TOP")
        assert body is not None
        return body

    async def noop(self) -> None:
        """Keep the session alive, check the server still answers."""
        async with self._guard():
            status = await self._simple(b"NOOP")
        self._raise_unless_ok(status, "NOOP")

    async def rset(self) -> None:
        """Unmark every message marked for deletion in this session."""
        async with self._guard():
            status = await self._simple(b"RSET")
        self._raise_unless_ok(status, "RSET")

    async def retr(self, msgnum: int, sink: Sink) -> int:
        """Stream one message into ``sink``, unpipelined; return the bytes written."""
        number = _check_msgnum(msgnum)
        async with self._guard():
            await self._send(b"RETR " + number)
            status = await self._read_status()
            if not status.ok:
                self._in_sync = True
                raise self._retr_error(status, msgnum)
            written = await self._read_body(sink.write)
            self._in_sync = True
        return written

    async def retr_many(
        self,
        msgnums: Iterable[int],
        *,
        open_sink: Callable[[int], SinkT],
        on_complete: Callable[[int, SinkT], Awaitable[object]],
        on_error: Callable[[int, PostbridgeError], object] | None = None,
        window: int = DEFAULT_RETR_WINDOW,
    ) -> int:
        """Stream many messages, pipelined if the server allows; return how many completed.

        For each message, after the server's +OK: ``open_sink(msgnum)`` gives
        a sink, the body is written to it in chunks (dot-unstuffed, line
        endings as on the wire, terminator removed), then
        ``await on_complete(msgnum, sink)``. Messages complete in the order given.

        With PIPELINING (RFC 2449 §6.6) up to ``window`` RETR commands are in
        flight, sent in one write and topped up as replies complete; without
        it, one at a time.

        A ``-ERR`` to a RETR (the message vanished, say) calls
        ``on_error(msgnum, error)`` (which may be async) and carries on. With
        no ``on_error``, the commands already sent are still read to the end
        (their messages complete normally), nothing more is sent, and the
        first error is raised: the session stays usable.

        If anything else fails (the line drops, a callback raises while a
        reply is unread), the connection is dropped without QUIT; the sink
        of the message in progress never reached ``on_complete`` and holds a
        partial message that the caller must discard.
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        depth = window if self.capabilities.pipelining else 1
        todo = iter(msgnums)
        pending: deque[int] = deque()
        completed = 0
        first_error: PostbridgeError | None = None
        async with self._guard():
            # Bounded: each turn consumes one reply for one command sent, and
            # commands are sent only for the finite ``msgnums``.
            while True:
                if first_error is None and len(pending) <= depth // 2:
                    batch = list(itertools.islice(todo, depth - len(pending)))
                    if batch:
                        numbers = [_check_msgnum(n) for n in batch]
                        await self._send(*(b"RETR " + n for n in numbers))
                        pending.extend(batch)
                if not pending:
                    break
                msgnum = pending.popleft()
                status = await self._read_status()
                if not status.ok:
                    self._in_sync = not pending
                    error = self._retr_error(status, msgnum)
                    if on_error is None:
                        first_error = first_error or error
                        continue
                    result = on_error(msgnum, error)
                    if inspect.isawaitable(result):
                        await result
                    continue
                sink = open_sink(msgnum)
                await self._read_body(sink.write)
                self._in_sync = not pending
                await on_complete(msgnum, sink)
                completed += 1
        if first_error is not None:
            raise first_error
        return completed

    async def dele(self, msgnum: int) -> None:
        """Mark one message for deletion; it goes only when QUIT is confirmed."""
        number = _check_msgnum(msgnum)
        async with self._guard():
            status = await self._simple(b"DELE " + number)
        self._raise_unless_ok(status, "DELE")

    async def dele_many(
        self, msgnums: Iterable[int], *, window: int = DEFAULT_DELE_WINDOW
    ) -> list[int]:
        """Mark messages for deletion, pipelined if allowed; return those the server accepted.

        A ``-ERR`` for one message (already deleted, say) is logged and that
        number left out of the result; the others are still marked. Nothing is
        deleted until :meth:`quit` returns True.
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        depth = window if self.capabilities.pipelining else 1
        todo = iter(msgnums)
        accepted: list[int] = []
        async with self._guard():
            # Bounded by the finite ``msgnums``; each batch is one write.
            while batch := list(itertools.islice(todo, depth)):
                numbers = [_check_msgnum(n) for n in batch]
                await self._send(*(b"DELE " + n for n in numbers))
                for msgnum in batch:
                    status = await self._read_status()
                    if status.ok:
                        accepted.append(msgnum)
                    elif status.has_code("SYS") or status.has_code("IN-USE"):
                        self._in_sync = msgnum == batch[-1]
                        self._raise_unless_ok(status, "DELE")
                    else:
                        logger.warning(
                            "%s: %s did not mark message %d for deletion: %s",
                            self.label,
                            self.host,
                            msgnum,
                            status.describe(),
                        )
                self._in_sync = True
        return accepted

    async def quit(self) -> bool:
        """End the session; True means the server confirmed, so deletions are committed.

        RFC 1939 §6: the server deletes the marked messages only when it
        answers +OK to QUIT. A -ERR raises :class:`ServerTemporaryError` (the
        messages stay on the server); a lost line raises :class:`NetworkError`
        (whether they were deleted is unknown). Returns False if the
        connection was already closed: nothing was committed.
        """
        if self._writer is None:
            return False
        try:
            async with self._guard():
                status = await self._simple(b"QUIT")
        except NetworkError as error:
            raise NetworkError(
                f"{self.host} did not confirm the end of the session of {self.label} "
                "(the line was lost or it stopped answering); messages marked for "
                "deletion may still be on the server",
                detail=error.describe(),
            ) from None
        finally:
            await self.close()
        if not status.ok:
            raise ServerTemporaryError(
                f"{self.host} did not confirm the end of the session of {self.label}, "
                "so the messages marked for deletion stay on the server",
                detail=status.describe(),
            )
        return True

    async def close(self) -> None:
        """Drop the connection without QUIT: deletions of this session are NOT committed."""
        self._drop()
        writer, self._dropped = self._dropped, None
        if writer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(min(self.timeout, 5.0)):
                    await writer.wait_closed()

    # ---------------------------------------------------------------- wire

    def _require_writer(self) -> asyncio.StreamWriter:
        if self._writer is None:
            raise NetworkError(
                f"The connection to {self.host} for {self.label} is closed",
                detail="no open POP3 session (closed after an earlier failure?)",
            )
        return self._writer

    def _drop(self) -> None:
        """Abort the transport at once (no QUIT); close() waits for it to finish."""
        writer, self._writer, self._reader = self._writer, None, None
        self._rbuf = b""
        self._in_sync = True
        self._authenticated = False
        if writer is not None:
            writer.transport.abort()
            self._dropped = writer

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Drop the connection if a failure leaves a reply half-read."""
        self._require_writer()
        try:
            yield
        except BaseException:
            if not self._in_sync:
                logger.debug("%s: dropping the connection to %s", self.label, self.host)
                self._drop()
            raise

    async def _send(self, *commands: bytes, secret: bool = False) -> None:
        """Send commands in one write (one TCP segment for a pipelined batch)."""
        writer = self._require_writer()
        if logger.isEnabledFor(logging.DEBUG):
            for command in commands:
                shown = REDACTED if secret else _redact(command)
                logger.debug("%s C: %s", self.label, shown)
        self._in_sync = False
        writer.write(b"".join(command + CRLF for command in commands))
        try:
            async with asyncio.timeout(self.timeout):
                await writer.drain()
        except TimeoutError:
            raise self._stopped() from None
        except OSError as error:
            raise self._lost(str(error)) from None

    async def _read_chunk(self) -> bytes:
        reader = self._reader
        if reader is None:
            raise self._lost("the connection was closed")
        try:
            async with asyncio.timeout(self.timeout):
                data = await reader.read(READ_SIZE)
        except TimeoutError:
            raise self._stopped() from None
        except OSError as error:
            raise self._lost(str(error)) from None
        if not data:
            raise self._lost("the server closed the connection in the middle of a reply")
        return data

    async def _readline(self) -> bytes:
        """One line without its line ending (LF or CRLF), bounded in length."""
        # Bounded: each turn adds at least one byte, and we stop at MAX_STATUS_LINE.
        while True:
            end = self._rbuf.find(b"\n")
            if end >= 0:
                line = self._rbuf[:end]
                self._rbuf = self._rbuf[end + 1 :]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._rbuf) > MAX_STATUS_LINE:
                raise ProtocolError(
                    f"{self.host} sent a reply Postbridge does not understand",
                    detail=repr(self._rbuf[:200]),
                )
            self._rbuf += await self._read_chunk()

    def _parse_status(self, line: bytes) -> Status:
        try:
            status = parse_status(line)
        except ProtocolError as error:
            raise self._garbage(error) from None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s S: %s", self.label, status.describe())
        return status

    async def _read_status(self) -> Status:
        return self._parse_status(await self._readline())

    async def _read_body(self, write: Callable[[bytes], object]) -> int:
        """Stream one multi-line body into ``write``; keep what follows it buffered."""
        decoder = DotUnstuffer()
        data, self._rbuf = self._rbuf, b""
        total = 0
        # Bounded by the reply: every turn consumes a non-empty chunk, and EOF
        # or a silent server (timeout) ends it with an error.
        while True:
            body, done, leftover = decoder.feed(data)
            if body:
                write(body)
                total += len(body)
            if done:
                self._rbuf = leftover
                return total
            data = await self._read_chunk()

    async def _simple(self, command: bytes) -> Status:
        """A single-line command: send it, read the status line."""
        await self._send(command)
        status = await self._read_status()
        self._in_sync = True
        return status

    async def _multi(self, command: bytes) -> tuple[Status, bytes | None]:
        """A multi-line command whose reply is small enough to keep in memory."""
        await self._send(command)
        status = await self._read_status()
        if not status.ok:
            self._in_sync = True
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

        await self._read_body(collect)
        self._in_sync = True
        return status, b"".join(parts)

    # -------------------------------------------------------------- errors

    def _stopped(self) -> NetworkError:
        return NetworkError(
            f"{self.host} stopped answering; Postbridge gave up on {self.label} "
            f"after {self.timeout:g} seconds",
            detail=f"no data for {self.timeout:g} s",
        )

    def _lost(self, detail: str) -> NetworkError:
        return NetworkError(
            f"The connection to {self.host} was lost while reading {self.label}; "
            "Postbridge will try again at the next poll",
            detail=detail,
        )

    def _garbage(self, error: ProtocolError) -> ProtocolError:
        return ProtocolError(
            f"{self.host} sent a reply Postbridge does not understand", detail=error.detail
        )

    def _tls_error(self, error: ssl.SSLError) -> TLSError:
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

    def _status_error(self, status: Status, *, default: PostbridgeError) -> PostbridgeError:
        """Map RFC 2449/3206 response codes to errors; ``default`` when there is none."""
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

    def _raise_unless_ok(self, status: Status, verb: str) -> None:
        if status.ok:
            return
        raise self._status_error(
            status,
            default=ProtocolError(
                f"{self.host} refused the {verb} command for {self.label}",
                detail=f"{self.host}: {status.describe()}",
            ),
        )

    def _retr_error(self, status: Status, msgnum: int) -> PostbridgeError:
        return self._status_error(
            status,
            default=ProtocolError(
                f"{self.host} did not send message {msgnum} of {self.label}",
                detail=f"{self.host}: {status.describe()}",
            ),
        )
