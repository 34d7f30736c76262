"""A fake POP3 server on 127.0.0.1 for fault injection, shaped like CPython's test_poplib.

Real-server behaviour is tested against Dovecot (tests/interop); this fake exists
for what a real server will not do on request: drop the line in the middle of a
RETR, answer garbage, stall, report [IN-USE], lack CAPA or UIDL, refuse QUIT.

Shape: one :class:`FakePop3Session` per connection with one ``cmd_<verb>``
coroutine per command (subclass it and pass ``session_class=`` to change one),
and a :class:`FakePop3Server` holding the maildrop and the fault knobs. Knobs are
plain attributes, read at the moment a command arrives, so a test may change
them between sessions. Like a real server, deletions happen only at a QUIT in
the TRANSACTION state, and only one session at a time may hold the maildrop.

Use it as ``async with FakePop3Server([...]) as server:`` in async tests, or
:func:`run_in_thread` for tests that drive a synchronous CLI.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import itertools
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field

from postbridge.engine.pop3.replies import dot_stuff
from tests.fakes.base import LoopbackServer, run_in_thread

__all__ = ["FakeMessage", "FakePop3Server", "FakePop3Session", "run_in_thread"]

AUTH_FAILED = "-ERR [AUTH] Authentication failed."
IN_USE = "-ERR [IN-USE] Mailbox is locked by another POP3 session"
UNKNOWN = "-ERR Unknown command"
NO_SUCH_MESSAGE = "-ERR There's no message {}."
NOT_LOGGED_IN = "-ERR Not logged in."
# How long a stalled session waits for the client to give up before it ends
# by itself; tests use client timeouts far below this.
STALL_LIMIT = 30.0

_uid_counter = itertools.count(1)


@functools.lru_cache(maxsize=256)
def _stuffed(data: bytes) -> bytes:
    # Cached so that a benchmark with thousands of equal messages measures the client.
    return dot_stuff(data)


@dataclass
class FakeMessage:
    """One message in the fake maildrop, with the unique id UIDL reports."""

    data: bytes
    uid: str = field(default_factory=lambda: f"uid{next(_uid_counter):06d}")

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def stuffed(self) -> bytes:
        """The RETR body as sent on the wire (dot-stuffed, terminator included)."""
        return _stuffed(self.data)


class FakePop3Session:
    """One connection. Override ``cmd_<verb>`` in a subclass to inject new faults."""

    def __init__(
        self,
        server: FakePop3Server,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.state = "AUTHORIZATION"
        self.user: str | None = None
        self.tls = server.tls_context is not None
        self.closed = False
        self.timestamp = f"<{os.getpid()}.{next(_uid_counter)}@fake.invalid>"
        self.maildrop: list[FakeMessage] = []
        self.deleted: set[int] = set()

    # ------------------------------------------------------------ plumbing

    def push(self, line: str | bytes) -> None:
        """Send one line (CRLF added)."""
        data = line.encode() if isinstance(line, str) else line
        self.writer.write(data + b"\r\n")

    def push_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def readline(self) -> str | None:
        """The next command line, or None at EOF."""
        while b"\n" not in self.buffer:
            chunk = await self.reader.read(65536)
            if not chunk:
                return None
            # How many commands arrived in one read: shows pipelining.
            self.server.command_batches.append(chunk.count(b"\n"))
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    async def hang(self) -> None:
        """Stop answering: read and ignore until the client gives up (or STALL_LIMIT)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STALL_LIMIT):
                while await self.reader.read(65536):
                    pass
        self.closed = True

    async def run(self) -> None:
        greeting = self.server.greeting or "+OK Fake POP3 server ready."
        if self.server.apop:
            greeting = f"{greeting} {self.timestamp}"
        self.push(greeting)
        # Bounded by the client: each turn consumes one line, EOF ends it.
        while not self.closed:
            await self.writer.drain()
            line = await self.readline()
            if line is None:
                break
            await self.dispatch(line)
        with contextlib.suppress(Exception):
            await self.writer.drain()

    async def dispatch(self, line: str) -> None:
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        self.server.commands.append(line)
        if verb in self.server.stall:
            await self.hang()
            return
        if verb in self.server.garbage:
            self.push(self.server.garbage[verb])
            return
        handler = getattr(self, f"cmd_{verb.lower()}", None)
        if handler is None:
            self.push(UNKNOWN)
            return
        await handler(arg)

    def message(self, arg: str) -> tuple[int, FakeMessage] | None:
        """The live message numbered ``arg``, or None after sending -ERR."""
        if self.state != "TRANSACTION":
            self.push(NOT_LOGGED_IN)
            return None
        try:
            number = int(arg.split()[0])
        except (ValueError, IndexError):
            self.push("-ERR Invalid message number.")
            return None
        if not 1 <= number <= len(self.maildrop) or number in self.deleted:
            self.push(NO_SUCH_MESSAGE.format(number))
            return None
        return number, self.maildrop[number - 1]

    def live(self) -> list[tuple[int, FakeMessage]]:
        return [
            (number, message)
            for number, message in enumerate(self.maildrop, start=1)
            if number not in self.deleted
        ]

    def logged_in(self) -> bool:
        if self.state != "TRANSACTION":
            self.push(NOT_LOGGED_IN)
            return False
        return True

    def authenticate(self, username: str, ok: bool) -> None:
        """Finish a login attempt: credentials checked, now the lock and fault knobs."""
        server = self.server
        if not ok:
            self.push(AUTH_FAILED)
            return
        if server.in_use or server.locked_by is not None:
            self.push(IN_USE)
            return
        if server.login_error is not None:
            self.push(f"-ERR {server.login_error}")
            return
        self.user = username
        self.state = "TRANSACTION"
        server.locked_by = self
        self.maildrop = list(server.messages)
        self.push(f"+OK Logged in, {len(self.maildrop)} messages.")

    def release(self) -> None:
        if self.server.locked_by is self:
            self.server.locked_by = None

    # ------------------------------------------------------------ commands

    async def cmd_capa(self, arg: str) -> None:
        server = self.server
        if not server.capa:
            self.push("-ERR Unknown command")
            return
        lines = ["+OK Capability list follows", "TOP" if server.top else "", "RESP-CODES"]
        if server.uidl:
            lines.append("UIDL")
        if server.pipelining:
            lines.append("PIPELINING")
        if server.user_login:
            lines.append("USER")
        if server.sasl:
            lines.append("SASL " + " ".join(server.sasl))
        if server.stls_context is not None and not self.tls and self.state == "AUTHORIZATION":
            lines.append("STLS")
        if server.expire is not None:
            lines.append(f"EXPIRE {server.expire}")
        if server.login_delay is not None:
            lines.append(f"LOGIN-DELAY {server.login_delay}")
        lines += ["AUTH-RESP-CODE", "IMPLEMENTATION Postbridge-Fake", "."]
        self.push("\r\n".join(line for line in lines if line))

    async def cmd_stls(self, arg: str) -> None:
        context = self.server.stls_context
        if context is None or self.tls or self.state != "AUTHORIZATION":
            self.push("-ERR STLS not available")
            return
        self.push("+OK Begin TLS negotiation now.")
        await self.writer.drain()
        plain_transport = self.writer.transport
        try:
            await self.writer.start_tls(context)
        except (ssl.SSLError, OSError, AttributeError):
            # AttributeError: CPython gh-105993, the client hung up during the
            # handshake (say, it did not trust our certificate) and the writer
            # lost its transport; give it back so closing it works.
            if self.writer.transport is None:
                vars(self.writer)["_transport"] = plain_transport
            self.closed = True
            return
        self.tls = True

    async def cmd_user(self, arg: str) -> None:
        if not self.server.user_login or self.state != "AUTHORIZATION":
            self.push("-ERR USER not allowed")
            return
        self.user = arg
        self.push("+OK")

    async def cmd_pass(self, arg: str) -> None:
        if self.state != "AUTHORIZATION" or self.user is None:
            self.push("-ERR USER first")
            return
        user = self.user
        self.authenticate(user, user == self.server.username and arg == self.server.password)

    async def cmd_apop(self, arg: str) -> None:
        if not self.server.apop or self.state != "AUTHORIZATION":
            self.push("-ERR APOP not available")
            return
        user, _, digest = arg.partition(" ")
        secret = (self.timestamp + self.server.password).encode()
        expected = hashlib.md5(secret, usedforsecurity=False).hexdigest()
        self.authenticate(user, user == self.server.username and digest == expected)

    async def cmd_auth(self, arg: str) -> None:
        mechanism, _, initial = arg.partition(" ")
        if mechanism.upper() not in self.server.sasl or mechanism.upper() != "PLAIN":
            self.push("-ERR Unsupported authentication mechanism.")
            return
        if not initial:
            self.push("+ ")
            await self.writer.drain()
            response = await self.readline()
            if response is None:
                self.closed = True
                return
            initial = response
        if initial == "*":
            self.push("-ERR Authentication aborted by client.")
            return
        try:
            _authzid, user, password = base64.b64decode(initial, validate=True).split(b"\0")
        except ValueError:
            self.push("-ERR Invalid base64 data in initial response")
            return
        username = user.decode("utf-8", "replace")
        ok = username == self.server.username and password == self.server.password.encode()
        self.authenticate(username, ok)

    async def cmd_stat(self, arg: str) -> None:
        if self.logged_in():
            live = self.live()
            self.push(f"+OK {len(live)} {sum(message.size for _, message in live)}")

    async def cmd_list(self, arg: str) -> None:
        if arg:
            found = self.message(arg)
            if found is not None:
                self.push(f"+OK {found[0]} {found[1].size}")
            return
        if self.logged_in():
            lines = [f"{number} {message.size}" for number, message in self.live()]
            self.push("\r\n".join(["+OK", *lines, "."]))

    async def cmd_uidl(self, arg: str) -> None:
        if not self.server.uidl:
            self.push(UNKNOWN)
            return
        if arg:
            found = self.message(arg)
            if found is not None:
                self.push(f"+OK {found[0]} {found[1].uid}")
            return
        if self.logged_in():
            lines = [f"{number} {message.uid}" for number, message in self.live()]
            self.push("\r\n".join(["+OK", *lines, "."]))

    async def cmd_top(self, arg: str) -> None:
        if not self.server.top:
            self.push(UNKNOWN)
            return
        found = self.message(arg)
        if found is None:
            return
        try:
            count = int(arg.split()[1])
        except (ValueError, IndexError):
            self.push("-ERR Invalid line count")
            return
        data = found[1].data
        head, sep, body = data.partition(b"\r\n\r\n")
        lines = body.split(b"\r\n")[:count] if sep else []
        text = head + sep + b"\r\n".join(lines)
        self.push(b"+OK\r\n" + dot_stuff(text)[:-2])

    async def cmd_retr(self, arg: str) -> None:
        server = self.server
        found = self.message(arg)
        if found is None:
            return
        number, message = found
        if number in server.retr_error:
            self.push(NO_SUCH_MESSAGE.format(number))
            return
        self.push(f"+OK {message.size} octets")
        payload = message.stuffed
        if number in server.drop_retr:
            self.push_raw(payload[: server.drop_retr[number]])
            await self.writer.drain()
            self.writer.close()
            self.closed = True
            return
        if number in server.stall_retr:
            self.push_raw(payload[: server.stall_retr[number]])
            await self.writer.drain()
            await self.hang()
            return
        self.push_raw(payload)

    async def cmd_dele(self, arg: str) -> None:
        found = self.message(arg)
        if found is not None:
            self.deleted.add(found[0])
            self.push("+OK Marked to be deleted.")

    async def cmd_rset(self, arg: str) -> None:
        if self.logged_in():
            self.deleted.clear()
            self.push("+OK")

    async def cmd_noop(self, arg: str) -> None:
        self.push("+OK")

    async def cmd_quit(self, arg: str) -> None:
        server = self.server
        self.closed = True
        if self.state != "TRANSACTION":
            self.push("+OK Logging out.")
            return
        if server.quit_error:
            self.release()
            self.push("-ERR [SYS/TEMP] Could not remove the deleted messages.")
            return
        # RFC 1939 §6, UPDATE state: only now do the deletions happen.
        gone = [self.maildrop[number - 1] for number in sorted(self.deleted)]
        gone_ids = {id(message) for message in gone}
        server.messages = [m for m in server.messages if id(m) not in gone_ids]
        server.committed.append([message.uid for message in gone])
        self.release()
        self.push("+OK Logging out, messages deleted.")


class FakePop3Server(LoopbackServer):
    """The fake server: a maildrop, credentials, capabilities and fault knobs.

    Fault knobs (attributes; change them any time):

    * ``in_use``: every login answers ``-ERR [IN-USE]``.
    * ``login_error``: text after ``-ERR `` for an otherwise good login,
      e.g. ``"[SYS/TEMP] maintenance"`` or ``"[LOGIN-DELAY] wait"``.
    * ``garbage``: ``{"STAT": b"HELLO"}`` sends that line instead of the reply.
    * ``stall``: ``{"LIST"}``: those commands are never answered.
    * ``drop_retr``: ``{2: 100}``: after 100 bytes of message 2's body, hang up.
    * ``stall_retr``: the same, but go silent instead of hanging up.
    * ``retr_error``: ``{3}``: RETR 3 answers -ERR (the message vanished).
    * ``quit_error``: QUIT answers -ERR and deletes nothing.

    Records: ``commands`` (every line received, passwords included: it is a
    fake), ``command_batches`` (commands per read: >1 means pipelined),
    ``committed`` (uids deleted at each confirmed QUIT), ``sessions``.
    """

    def __init__(
        self,
        messages: Iterable[bytes] = (),
        *,
        username: str = "alice",
        password: str = "secret",
        pipelining: bool = True,
        capa: bool = True,
        uidl: bool = True,
        top: bool = True,
        user_login: bool = True,
        apop: bool = True,
        sasl: Iterable[str] = ("PLAIN",),
        expire: str | None = None,
        login_delay: int | None = None,
        greeting: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        stls_context: ssl.SSLContext | None = None,
        session_class: type[FakePop3Session] = FakePop3Session,
    ) -> None:
        super().__init__()
        self.messages = [FakeMessage(data) for data in messages]
        self.username = username
        self.password = password
        self.pipelining = pipelining
        self.capa = capa
        self.uidl = uidl
        self.top = top
        self.user_login = user_login
        self.apop = apop
        self.sasl = tuple(mechanism.upper() for mechanism in sasl)
        self.expire = expire
        self.login_delay = login_delay
        self.greeting = greeting
        self.tls_context = tls_context
        self.stls_context = stls_context
        self.session_class = session_class

        self.in_use = False
        self.login_error: str | None = None
        self.garbage: dict[str, bytes] = {}
        self.stall: set[str] = set()
        self.drop_retr: dict[int, int] = {}
        self.stall_retr: dict[int, int] = {}
        self.retr_error: set[int] = set()
        self.quit_error = False

        self.commands: list[str] = []
        self.command_batches: list[int] = []
        self.committed: list[list[str]] = []
        self.locked_by: FakePop3Session | None = None

    @property
    def remaining(self) -> list[bytes]:
        """The messages still on the server (after the confirmed QUITs so far)."""
        return [message.data for message in self.messages]

    @property
    def remaining_uids(self) -> list[str]:
        return [message.uid for message in self.messages]

    def hang_up_at_quit(self) -> None:
        """The logged-in session closes the line when QUIT arrives, before answering."""
        session = self.locked_by
        assert session is not None, "log in first"

        async def hang_up(arg: str) -> None:
            session.writer.close()
            session.closed = True

        session.cmd_quit = hang_up  # type: ignore[method-assign]

    def server_ssl(self) -> ssl.SSLContext | None:
        return self.tls_context

    async def handle_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        session = self.session_class(self, reader, writer)
        try:
            await session.run()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the client went away: normal in fault tests
        except asyncio.CancelledError:
            # Stopped by stop(). This is the top of the session's own task, and
            # asyncio.start_server logs a cancelled handler task as an error.
            pass
        finally:
            session.release()
            writer.transport.abort()
