"""An asyncio POP3 client that streams messages and never holds one whole.

Why not :mod:`poplib`: it blocks (so one stalled ISP would freeze the poll
cycle, and several mailboxes could not be read at once), ``retr()`` returns a
message as a list of lines held in memory (a 100 MB message would make the
process 100 MB bigger), it has no PIPELINING (RFC 2449 §6.6), so every message
costs a network round trip, and it cannot hand a message to the spool while it
is still arriving. This client does all of that: replies are parsed by the pure
functions of :mod:`~postbridge.engine.pop3.replies`, bodies are dot-unstuffed
chunk by chunk straight into a caller-supplied sink, and RETR/DELE commands are
pipelined when the server allows it.

Layers: :mod:`~postbridge.engine.pop3.connection` moves and frames bytes
(timeouts, TLS, drop-when-out-of-step), :mod:`~postbridge.engine.pop3.auth`
logs in, and this module is the session a caller sees.

Safety rules:

* A password is never sent unencrypted unless the account explicitly allows it
  (APOP, which sends only an MD5 digest, is the exception), and never logged.
* Deletions are committed only by a confirmed QUIT (RFC 1939 §6). Leaving an
  ``async with`` block, :meth:`Pop3Client.close` and every failure drop the
  connection without QUIT, so nothing is deleted unless the caller asked.
"""

from __future__ import annotations

import inspect
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from ssl import SSLContext
from types import TracebackType
from typing import Literal, Protocol, Self, TypeVar

from postbridge.engine.errors import (
    NetworkError,
    PostbridgeError,
    ProtocolError,
    ServerTemporaryError,
    TLSError,
)
from postbridge.engine.pop3 import auth
from postbridge.engine.pop3.auth import LoginMethod, plain_command
from postbridge.engine.pop3.connection import (
    READ_SIZE,
    OpenConnection,
    Pop3Connection,
    asyncio_open_connection,
)
from postbridge.engine.pop3.replies import (
    Capabilities,
    Status,
    greeting_timestamp,
    parse_capa,
    parse_list_body,
    parse_stat,
    parse_uidl_body,
)

__all__ = ["READ_SIZE", "LoginMethod", "OpenConnection", "Pop3Client", "Security", "Sink"]

logger = logging.getLogger("postbridge.pop3")

Security = Literal["tls", "starttls", "none"]

_WARNED: set[tuple[str, str]] = set()

# Commands in flight with PIPELINING. They must cover a round trip's worth of
# replies: at 50 ms and ~3,700 small messages/s (what the download keeps up with
# on a fast machine) that is ~185 RETRs, and the window is topped up at half. A
# deep window costs nothing here (the commands are a few bytes each, replies are
# read as they come, and TCP flow control holds back what we have not read); a
# shallow one stalls a slow line once per top-up: 128 made 1,000 x 20 KB at 50 ms
# ~800 msg/s where 512 makes ~970. The benchmark (tests/bench/collect.py) measures both.
DEFAULT_RETR_WINDOW = 512
# retr_many's cue that its end is near (the next session's connection opens then):
# early enough to cover that connection's round trips, late enough that it does not
# sit idle through a long download (a server may close it).
NEARLY_DONE = 64
DEFAULT_DELE_WINDOW = 512


class Sink(Protocol):
    """Where a message's bytes go: a spool file, a hash, a BytesIO in tests."""

    def write(self, data: bytes, /) -> object: ...


SinkT = TypeVar("SinkT", bound=Sink)


def _msgnum(msgnum: int) -> bytes:
    # RFC 1939 §5: message numbers start at 1. A bad one is a bug in the caller.
    if not isinstance(msgnum, int) or isinstance(msgnum, bool) or msgnum < 1:
        raise ValueError(f"POP3 message numbers start at 1, got {msgnum!r}")
    return str(msgnum).encode("ascii")


class Pop3Client:
    """One POP3 session with one ISP mailbox.

    Typical use::

        async with Pop3Client(host=..., port=995, security="tls", label="office") as pop:
            sizes, uids = await pop.login_and_list(user, password)
            await pop.retr_many(sizes, open_sink=..., on_complete=...)
            await pop.delete_and_quit(done)  # only a confirmed QUIT commits them

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
        self._conn = Pop3Connection(
            host=host,
            port=port,
            label=self.label,
            timeout=timeout,
            open_connection=open_connection or asyncio_open_connection,
        )
        if security == "none" and allow_plaintext_login and (host, self.label) not in _WARNED:
            # Built insecurely on purpose: say so, once per mailbox and process
            # (a client is built for every poll).
            _WARNED.add((host, self.label))
            logger.warning(
                "%s: passwords may be sent unencrypted to %s (plaintext login allowed)",
                self.label,
                host,
            )
        self.capabilities = Capabilities.none()
        self.greeting: str | None = None
        self.apop_timestamp: str | None = None
        self._capa_supported = False
        self._authenticated = False
        # Whether the last login_and_list sent its commands along with AUTH PLAIN,
        # which the server accepted (what followed may still have gone unanswered).
        self.login_pipelined = False
        # CAPA goes out before the greeting is read (not with STLS); the caller turns
        # it off for a server that lost it. ``capa_sent_early``: it was, this time.
        self.capa_before_greeting = True
        self.capa_sent_early = False
        # RETRs sent with the login whose replies are still to be read (login_and_list).
        self.retr_in_flight: list[int] = []

    @property
    def connected(self) -> bool:
        """Whether a session is open (it may still be before login)."""
        return self._conn.is_open

    @property
    def authenticated(self) -> bool:
        """Whether login succeeded (the session is in the TRANSACTION state)."""
        return self._authenticated and self._conn.is_open

    @property
    def encrypted(self) -> bool:
        """Whether the connection is protected by TLS (implicit or after STLS)."""
        return self._conn.encrypted

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

    def _guard(self) -> AbstractAsyncContextManager[None]:
        """The connection's guard, refused while guessed RETRs' replies are unread."""
        if self.retr_in_flight:
            raise RuntimeError(
                f"replies to RETR {self.retr_in_flight} are unread: retr_many() or close() first"
            )
        return self._conn.guard()

    # ------------------------------------------------------------ connecting

    def _context(self) -> SSLContext:
        if self._ssl_context is None:
            # Certificate and host name verification on, system trust store.
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def connect(self) -> None:
        """Open the connection, read the greeting, negotiate TLS, learn capabilities."""
        await self._conn.open(tls=self._context() if self.security == "tls" else None)
        try:
            await self._handshake()
        except BaseException:
            self._conn.drop()
            raise

    async def _handshake(self) -> None:
        conn = self._conn
        # The greeting and the capabilities then arrive together: one round trip fewer
        # per connection (RFC 1939 has the client wait, but a server reads its input
        # only after greeting, so what came early simply waits for it).
        early = self.capa_before_greeting and self.security != "starttls"
        if early:
            await conn.send(b"CAPA")
            self.capa_sent_early = True
        greeting = await conn.read_status()
        conn.in_sync = not early
        if not greeting.ok:
            raise conn.status_error(
                greeting,
                default=ServerTemporaryError(
                    f"{self.host} refused to open a session for {self.label}; "
                    "Postbridge will try again later",
                    detail=greeting.describe(),
                ),
            )
        self.greeting = greeting.text
        self.apop_timestamp = greeting_timestamp(greeting.text)
        if early:
            self._take_capabilities(*await conn.read_multi(b"CAPA"))
            conn.in_sync = True
        else:
            await self._refresh_capabilities()
        if self.security == "starttls":
            # We try STLS even if CAPA did not list it (servers without CAPA
            # may still have it); the server's -ERR is what "not offered" means.
            status = await conn.simple(b"STLS")
            if not status.ok:
                raise TLSError(
                    f"{self.host} does not offer encryption (STLS) for {self.label}, and "
                    "Postbridge will not continue unencrypted. Choose another security "
                    "setting or port for this mailbox",
                    detail=status.describe(),
                )
            await conn.start_tls(self._context())
            # RFC 2595 §4: capabilities learned before TLS must be discarded.
            self.capabilities = Capabilities.none()
            await self._refresh_capabilities()

    async def _refresh_capabilities(self) -> None:
        self._take_capabilities(*await self._conn.multi(b"CAPA"))

    def _take_capabilities(self, status: Status, body: bytes | None) -> None:
        if not status.ok or body is None:
            # RFC 1939-only server: no extensions assumed, everything still works.
            self._capa_supported = False
            self.capabilities = Capabilities.none()
            return
        self._capa_supported = True
        self.capabilities = parse_capa(body)

    # ------------------------------------------------------------ login

    def choose_login_method(self, method: LoginMethod = "auto") -> auth.Method:
        """The method :meth:`login` would use, or the refusal it would raise.

        See :func:`postbridge.engine.pop3.auth.choose_method` for the order.
        """
        return auth.choose_method(
            method,
            capabilities=self.capabilities,
            capa_supported=self._capa_supported,
            encrypted=self.encrypted,
            apop_timestamp=self.apop_timestamp,
            allow_plaintext=self.allow_plaintext_login,
            host=self.host,
            label=self.label,
        )

    async def login(self, username: str, password: str, *, method: LoginMethod = "auto") -> None:
        """Authenticate (RFC 1939 USER/PASS or APOP, RFC 5034 AUTH PLAIN).

        Wrong credentials raise :class:`AuthError`; ``[IN-USE]`` and
        ``[LOGIN-DELAY]`` raise :class:`MailboxBusy`, ``[SYS/TEMP]``
        :class:`ServerTemporaryError`, ``[SYS/PERM]`` :class:`ServerPermanentError`.
        """
        await self._authenticate(username, password, self.choose_login_method(method))
        if self._capa_supported:
            # RFC 2449 §6.5/§6.7: EXPIRE and LOGIN-DELAY may be per user
            # ("USER" argument) and are exact only after login.
            async with self._guard():
                status, body = await self._conn.multi(b"CAPA")
            self._capabilities_after_login(status, body)

    async def login_and_list(
        self,
        username: str,
        password: str,
        *,
        method: LoginMethod = "auto",
        with_auth: bool = True,
        retr: Sequence[int] = (),
    ) -> tuple[dict[int, int], dict[int, str] | None]:
        """:meth:`login`, then :meth:`list_all` and :meth:`uidl_all`.

        With PIPELINING the capabilities after login, LIST and UIDL are asked in
        one round trip instead of three: at an ISP 50 ms away that is 0.1 s off
        every session. RFC 2449 lets them follow AUTH PLAIN in the same write;
        ``with_auth=False`` sends them only after its reply, for a server that
        loses what arrived with the login (:attr:`login_pipelined` says which).

        ``retr``: message numbers whose RETR goes out in the same write, a guess
        at what the caller will download (the first downloads then need no round
        trip of their own). Their replies are left unread, in
        :attr:`retr_in_flight`: the next call must be :meth:`retr_many` starting
        with exactly those numbers, or :meth:`close`. Without PIPELINING nothing
        is guessed.
        """
        self.login_pipelined = False
        if not self.capabilities.pipelining:
            await self.login(username, password, method=method)
            return await self.list_all(), await self.uidl_all()
        conn = self._conn
        conn.require_writer()
        # AUTH PLAIN is one line: it can lead the batch (one round trip for all four).
        # USER/PASS and APOP go first on their own: a password is never sent after a
        # refused user name.
        chosen = self.choose_login_method(method)
        plain = plain_command(username, password) if chosen == "plain" and with_auth else None
        if plain is None:
            await self._authenticate(username, password, chosen)
        async with self._guard():
            capa = self._capa_supported
            after = [*([b"CAPA"] if capa else []), b"LIST", b"UIDL"]
            after += [b"RETR " + _msgnum(n) for n in retr]
            if plain is not None:
                await conn.send(plain, *after, secret=True)
                await auth.plain_reply(conn, username)
                self._authenticated = True
                self.login_pipelined = True
            else:
                await conn.send(*after)
            if capa:
                self._capabilities_after_login(*await conn.read_multi(b"CAPA"))
            listed = await conn.read_multi(b"LIST")
            uids = await conn.read_multi(b"UIDL")
            self.retr_in_flight = list(retr)
            conn.in_sync = not retr
        return self._sizes(*listed), self._uids(*uids)

    async def _authenticate(self, username: str, password: str, chosen: auth.Method) -> None:
        self._conn.require_writer()
        async with self._guard():
            await auth.login(
                self._conn,
                chosen,
                username=username,
                password=password,
                apop_timestamp=self.apop_timestamp,
            )
            self._authenticated = True

    def _capabilities_after_login(self, status: Status, body: bytes | None) -> None:
        # A server that answered CAPA before login but not after keeps what it said then.
        if status.ok and body is not None:
            self.capabilities = parse_capa(body)

    # ------------------------------------------------------------ commands

    def _check(self, status: Status, verb: str) -> None:
        if not status.ok:
            raise self._conn.refused(status, verb)

    async def stat(self) -> tuple[int, int]:
        """(number of messages, total octets) of the maildrop (RFC 1939 §5)."""
        async with self._guard():
            status = await self._conn.simple(b"STAT")
        self._check(status, "STAT")
        try:
            return parse_stat(status.text)
        except ProtocolError as error:
            raise self._conn.garbage(error.detail) from None

    async def list_all(self) -> dict[int, int]:
        """{message number: size in octets} for every message not marked deleted."""
        async with self._guard():
            status, body = await self._conn.multi(b"LIST")
        return self._sizes(status, body)

    def _sizes(self, status: Status, body: bytes | None) -> dict[int, int]:
        self._check(status, "LIST")
        try:
            return parse_list_body(body or b"")
        except ProtocolError as error:
            raise self._conn.garbage(error.detail) from None

    async def uidl_all(self) -> dict[int, str] | None:
        """{message number: unique id}, or None if the server has no UIDL (it is optional)."""
        async with self._guard():
            status, body = await self._conn.multi(b"UIDL")
        return self._uids(status, body)

    def _uids(self, status: Status, body: bytes | None) -> dict[int, str] | None:
        if not status.ok:
            if status.code:
                # [SYS/TEMP], [IN-USE]...: a real problem, not a missing command.
                self._check(status, "UIDL")
            return None
        try:
            return parse_uidl_body(body or b"")
        except ProtocolError as error:
            raise self._conn.garbage(error.detail) from None

    async def top(self, msgnum: int, lines: int) -> bytes:
        """Headers, blank line and the first ``lines`` body lines (RFC 1939 §7), in memory."""
        number = _msgnum(msgnum)
        if lines < 0:
            raise ValueError(f"TOP needs a line count >= 0, got {lines}")
        async with self._guard():
            status, body = await self._conn.multi(b"TOP " + number + b" %d" % lines)
        self._check(status, "TOP")
        return body or b""

    async def noop(self) -> None:
        """Keep the session alive, check the server still answers."""
        async with self._guard():
            status = await self._conn.simple(b"NOOP")
        self._check(status, "NOOP")

    async def rset(self) -> None:
        """Unmark every message marked for deletion in this session."""
        async with self._guard():
            status = await self._conn.simple(b"RSET")
        self._check(status, "RSET")

    # ------------------------------------------------------------ retrieval

    def _retr_error(self, status: Status, msgnum: int) -> PostbridgeError:
        return self._conn.status_error(
            status,
            default=ProtocolError(
                f"{self.host} did not send message {msgnum} of {self.label}",
                detail=f"{self.host}: {status.describe()}",
            ),
        )

    async def retr(self, msgnum: int, sink: Sink) -> int:
        """Stream one message into ``sink``, unpipelined; return the bytes written."""
        number = _msgnum(msgnum)
        conn = self._conn
        async with self._guard():
            await conn.send(b"RETR " + number)
            status = await conn.read_status()
            if not status.ok:
                conn.in_sync = True
                raise self._retr_error(status, msgnum)
            written = await conn.read_body(sink.write)
            conn.in_sync = True
        return written

    async def retr_many(
        self,
        msgnums: Iterable[int],
        *,
        open_sink: Callable[[int], SinkT],
        on_complete: Callable[[int, SinkT], Awaitable[object]],
        on_error: Callable[[int, PostbridgeError], object] | None = None,
        window: int = DEFAULT_RETR_WINDOW,
        on_nearly_done: Callable[[], object] | None = None,
        nearly_done: int = NEARLY_DONE,
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
        ``on_error(msgnum, error)`` (which may be async) and carries on; no
        sink is opened for it. With no ``on_error``, the commands already sent
        are still read to the end (their messages complete normally), nothing
        more is sent, and the first error is raised: the session stays usable.

        If anything else fails (the line drops, a callback raises while a
        reply is unread), the connection is dropped without QUIT; the sink
        of the message in progress never reached ``on_complete`` and holds a
        partial message that the caller must discard.

        ``on_nearly_done()`` is called once, when the last RETR is on its way and
        at most ``nearly_done`` replies are still to come.
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        conn = self._conn
        depth = window if self.capabilities.pipelining else 1
        todo = list(msgnums)
        in_flight = self.retr_in_flight
        if todo[: len(in_flight)] != in_flight:  # nothing read: the caller may still close
            raise ValueError(f"RETR {in_flight} already sent; asked for {todo[: len(in_flight)]}")
        self.retr_in_flight = []
        sent = len(in_flight)
        pending: deque[int] = deque(in_flight)
        completed = 0
        first_error: PostbridgeError | None = None
        async with conn.guard():
            # Bounded: each turn reads one reply to one command sent, and
            # commands are sent only for the finite ``msgnums``.
            while True:
                if first_error is None and len(pending) <= depth // 2 and sent < len(todo):
                    batch = todo[sent : sent + depth - len(pending)]
                    await conn.send(*[b"RETR " + _msgnum(n) for n in batch])
                    pending.extend(batch)
                    sent += len(batch)
                if on_nearly_done and sent == len(todo) and len(pending) <= nearly_done:
                    on_nearly_done()
                    on_nearly_done = None
                if not pending:
                    break
                msgnum = pending.popleft()
                status = await conn.read_status()
                if not status.ok:
                    conn.in_sync = not pending
                    error = self._retr_error(status, msgnum)
                    if on_error is None:
                        first_error = first_error or error
                        continue
                    result = on_error(msgnum, error)
                    if inspect.isawaitable(result):
                        await result
                    continue
                sink = open_sink(msgnum)
                await conn.read_body(sink.write)
                conn.in_sync = not pending
                await on_complete(msgnum, sink)
                completed += 1
        if first_error is not None:
            raise first_error
        return completed

    # ------------------------------------------------------------ deletion

    async def dele(self, msgnum: int) -> None:
        """Mark one message for deletion; it goes only when QUIT is confirmed."""
        number = _msgnum(msgnum)
        async with self._guard():
            status = await self._conn.simple(b"DELE " + number)
        self._check(status, "DELE")

    async def dele_many(
        self, msgnums: Iterable[int], *, window: int = DEFAULT_DELE_WINDOW
    ) -> list[int]:
        """Mark messages for deletion, pipelined if allowed; return those the server accepted.

        A ``-ERR`` for one message (already deleted, say) is logged and that
        number left out of the result; the others are still marked. Nothing is
        deleted until :meth:`quit` returns True.
        """
        return await self._dele(list(msgnums), window=window, then_quit=False)

    async def delete_and_quit(
        self, msgnums: Iterable[int], *, window: int = DEFAULT_DELE_WINDOW
    ) -> list[int]:
        """:meth:`dele_many`, then :meth:`quit`; the numbers the server accepted.

        With PIPELINING the QUIT goes out with the last DELEs, one round trip
        fewer. Returning at all means the server confirmed the QUIT, so the
        accepted deletions are committed; the failures are those of :meth:`quit`.
        """
        numbers = list(msgnums)
        if not self.capabilities.pipelining or not numbers:
            accepted = await self._dele(numbers, window=window, then_quit=False)
            if not await self.quit():  # the connection was gone: nothing was committed
                raise NetworkError(
                    f"The connection to {self.host} for {self.label} was closed before the "
                    "end of the session; messages marked for deletion stay on the server"
                )
            return accepted
        return await self._dele(numbers, window=window, then_quit=True)

    async def _dele(self, numbers: list[int], *, window: int, then_quit: bool) -> list[int]:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        conn = self._conn
        depth = window if self.capabilities.pipelining else 1
        accepted: list[int] = []
        async with self._guard():
            # Bounded by the finite ``numbers``; each batch is one write.
            for start in range(0, len(numbers), depth):
                batch = numbers[start : start + depth]
                quitting = then_quit and start + depth >= len(numbers)
                commands = [b"DELE " + _msgnum(n) for n in batch]
                await conn.send(*commands, *([b"QUIT"] if quitting else []))
                for msgnum in batch:
                    status = await conn.read_status()
                    if status.ok:
                        accepted.append(msgnum)
                    elif status.has_code("SYS") or status.has_code("IN-USE"):
                        # RFC 3206: the session itself is in trouble, not this message.
                        conn.in_sync = msgnum == batch[-1] and not quitting
                        self._check(status, "DELE")
                    else:
                        logger.warning(
                            "%s: %s did not mark message %d for deletion: %s",
                            self.label,
                            self.host,
                            msgnum,
                            status.describe(),
                        )
                conn.in_sync = not quitting  # else the QUIT's reply is still to come
        if then_quit:
            await self._quit_reply(read_only=True)
        return accepted

    async def quit(self) -> bool:
        """End the session; True means the server confirmed, so deletions are committed.

        RFC 1939 §6: the server deletes the marked messages only when it
        answers +OK to QUIT. A -ERR raises :class:`ServerTemporaryError` (the
        messages stay on the server); a lost line or timeout raises
        :class:`NetworkError` (whether they were deleted is unknown). Returns
        False if the connection was already closed: nothing was committed.
        """
        if not self._conn.is_open:
            return False
        if self.retr_in_flight:  # replies to guessed RETRs still unread: a QUIT would be lost
            await self.close()
            return False
        return await self._quit_reply(read_only=False)

    async def _quit_reply(self, *, read_only: bool) -> bool:
        """Send QUIT (unless it already went out) and judge its reply; always closes.

        True, or an exception: a refused QUIT, or a lost line (see :meth:`quit`)."""
        try:
            async with self._guard():
                if read_only:
                    status = await self._conn.read_status()
                    self._conn.in_sync = True
                else:
                    status = await self._conn.simple(b"QUIT")
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
        self._authenticated = False
        self.retr_in_flight = []
        await self._conn.close()
