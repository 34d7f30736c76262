"""A fake ODMR server (RFC 2645, "ATRN") on 127.0.0.1, written for the tests.

No Debian package provides an On-Demand Mail Relay server (Postfix answers ATRN with
``500``), so this one follows the RFC closely enough to test Postbridge against it:

* Before the turn it is an SMTP server: ``220`` greeting, EHLO advertising ``ATRN``,
  ``STARTTLS`` and ``AUTH`` (only after TLS, by default), AUTH PLAIN / LOGIN / CRAM-MD5,
  and ``ATRN domain,...``, refused with ``530`` until authenticated (RFC 2645 §4.2),
  answered ``453 You have no mail`` when nothing is queued for those domains, and
  ``250`` otherwise.
* After ``250`` the roles reverse on the same connection (§4.4): it waits for the
  customer's ``220``, says EHLO and sends each queued message with MAIL / RCPT / DATA,
  then QUIT. A message leaves the queue only when its DATA got ``250``, as an ISP
  would keep it otherwise; a recipient refused with 5xx is dropped from it.

Shape: one ``cmd_<verb>`` coroutine per command, as in the other fakes. Knobs (plain
attributes, read when used): ``password``, ``mechanisms``, ``no_mail_code``,
``atrn_reply`` (answer ATRN with this line instead), ``advertise_atrn``,
``drop_in_data`` (index of the message, within one session, whose DATA is cut
half-way by closing the connection), ``stall_after_turn``, ``ignore_domains``
(send every queued message, whatever domains were asked for: a misbehaving ISP).

Records: ``commands`` (lines received before the turn), ``replies`` (what the customer
answered to each command after the turn, in order), ``acknowledged`` (messages whose
DATA got 250), ``sessions``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field

from postbridge.engine.delivery.wire import DataEncoder
from tests.fakes.base import LoopbackServer, run_in_thread

__all__ = ["FakeOdmrServer", "QueuedMessage", "run_in_thread"]

LIMIT = 30.0  # longest wait for the customer; tests use far shorter client timeouts
_ids = itertools.count(1)


@dataclass
class QueuedMessage:
    """One message the ISP holds for the customer."""

    sender: str
    recipients: list[str]
    data: bytes
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def domains(self) -> set[str]:
        return {r.rpartition("@")[2].lower() for r in self.recipients}


class Hangup(Exception):
    """End the session at once."""


class OdmrSession:
    """One connection: SMTP server until ATRN is accepted, SMTP client afterwards."""

    def __init__(
        self, server: FakeOdmrServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.tls = False
        self.user: str | None = None
        self.done = False

    # -- plumbing ------------------------------------------------------------------------

    def push(self, *lines: str) -> None:
        self.writer.write("".join(f"{line}\r\n" for line in lines).encode())

    async def readline(self) -> str:
        line = await asyncio.wait_for(self.reader.readline(), LIMIT)
        if not line:
            raise Hangup
        return line.decode("utf-8", "replace").rstrip("\r\n")

    async def read_reply(self) -> str:
        """One (possibly multi-line) reply from the customer, as its last line."""
        for _ in range(100):
            line = await self.readline()
            if line[3:4] != "-":
                self.server.replies.append(line)
                return line
        raise Hangup

    async def run(self) -> None:
        self.push(f"220 {self.server.hostname} ESMTP fake ODMR")
        for _ in range(1000):  # bounded: the customer has no reason for more commands
            await self.writer.drain()
            if self.done:
                return
            line = await self.readline()
            self.server.commands.append(line)
            verb, _, arg = line.partition(" ")
            handler = getattr(self, f"cmd_{verb.lower()}", None)
            if handler is None:
                self.push("502 5.5.2 Error: command not recognized")
                continue
            await handler(arg)

    # -- commands before the turn ----------------------------------------------------------

    async def cmd_ehlo(self, arg: str) -> None:
        server = self.server
        lines = [server.hostname, "PIPELINING", "8BITMIME"]
        if server.tls_context is not None and not self.tls:
            lines.append("STARTTLS")
        if self.tls or not server.require_tls:
            lines.append("AUTH " + " ".join(server.mechanisms))
        if server.advertise_atrn:
            lines.append("ATRN")
        self.push(*[f"250-{x}" for x in lines[:-1]], f"250 {lines[-1]}")

    async def cmd_starttls(self, arg: str) -> None:
        if self.server.tls_context is None or self.tls:
            self.push("454 4.7.0 TLS not available")
            return
        self.push("220 2.0.0 Ready to start TLS")
        await self.writer.drain()
        await self.writer.start_tls(self.server.tls_context)
        self.tls = True

    async def cmd_auth(self, arg: str) -> None:
        server = self.server
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if self.user is not None:
            self.push("503 5.5.1 Error: already authenticated")
            return
        if (server.require_tls and not self.tls) or mechanism not in server.mechanisms:
            self.push("504 5.5.4 Unrecognized authentication type")
            return
        if mechanism == "PLAIN":
            if not initial:
                self.push("334 ")
                await self.writer.drain()
                initial = await self.readline()
            _authzid, user, password = base64.b64decode(initial).split(b"\0")
            ok = user.decode() == server.username and password.decode() == server.password
        elif mechanism == "LOGIN":
            self.push("334 " + base64.b64encode(b"Username:").decode())
            await self.writer.drain()
            user = base64.b64decode(await self.readline())
            self.push("334 " + base64.b64encode(b"Password:").decode())
            await self.writer.drain()
            password = base64.b64decode(await self.readline())
            ok = user.decode() == server.username and password.decode() == server.password
        else:  # CRAM-MD5, RFC 2195
            challenge = f"<{next(_ids)}.fake@{server.hostname}>".encode()
            self.push("334 " + base64.b64encode(challenge).decode())
            await self.writer.drain()
            user, _, digest = base64.b64decode(await self.readline()).partition(b" ")
            expected = hmac.new(server.password.encode(), challenge, hashlib.md5).hexdigest()
            ok = user.decode() == server.username and digest.decode() == expected
            server.used_cram_md5 = server.used_cram_md5 or ok
        if not ok:
            self.push("535 5.7.8 Error: authentication failed")
            return
        self.user = user.decode()
        self.push("235 2.7.0 Authentication successful")

    async def cmd_atrn(self, arg: str) -> None:
        server = self.server
        if self.user is None:
            self.push("530 5.7.0 Authentication required")  # RFC 2645 §4.2
            return
        if server.atrn_reply is not None:
            self.push(server.atrn_reply)
            return
        wanted = {d.strip().lower() for d in arg.split(",") if d.strip()}
        server.requested.append(sorted(wanted))
        batch = [m for m in server.queue if server.ignore_domains or m.domains & wanted]
        if not batch:
            self.push(f"{server.no_mail_code} You have no mail")
            return
        self.push("250 OK now reversing the connection")
        await self.writer.drain()
        await self.turn(batch)
        self.done = True

    async def cmd_quit(self, arg: str) -> None:
        self.push("221 2.0.0 Bye")
        self.done = True

    async def cmd_noop(self, arg: str) -> None:
        self.push("250 2.0.0 Ok")

    # -- after the turn: the ISP is the client -----------------------------------------------

    async def turn(self, batch: list[QueuedMessage]) -> None:
        server = self.server
        greeting = await self.read_reply()
        if not greeting.startswith("220"):
            raise Hangup
        if server.stall_after_turn:
            await asyncio.wait_for(self.reader.read(1), LIMIT)
            raise Hangup
        self.push(f"EHLO {server.hostname}")
        await self.writer.drain()
        if not (await self.read_reply()).startswith("250"):
            raise Hangup
        for index, message in enumerate(batch):
            await self.send(index, message)
        self.push("QUIT")
        await self.writer.drain()
        await self.read_reply()

    async def command(self, line: str) -> str:
        self.push(line)
        await self.writer.drain()
        return await self.read_reply()

    async def send(self, index: int, message: QueuedMessage) -> None:
        server = self.server
        if not (await self.command(f"MAIL FROM:<{message.sender}>")).startswith("250"):
            await self.command("RSET")
            return
        accepted: list[str] = []
        for rcpt in list(message.recipients):
            reply = await self.command(f"RCPT TO:<{rcpt}>")
            if reply.startswith("250"):
                accepted.append(rcpt)
            elif reply.startswith("5"):
                message.recipients.remove(rcpt)  # bounced to the sender, in real life
        if not message.recipients:
            server.queue.remove(message)
        if not accepted:
            await self.command("RSET")
            return
        if not (await self.command("DATA")).startswith("354"):
            await self.command("RSET")
            return
        encoder = DataEncoder()
        payload = encoder.feed(message.data) + encoder.finish()
        if index == server.drop_in_data:
            self.writer.write(payload[: len(payload) // 2])
            await self.writer.drain()
            raise Hangup
        self.writer.write(payload)
        await self.writer.drain()
        reply = await self.read_reply()
        if reply.startswith("250"):
            server.acknowledged.append(message)
            message.recipients = [r for r in message.recipients if r not in accepted]
            if not message.recipients and message in server.queue:
                server.queue.remove(message)


class FakeOdmrServer(LoopbackServer):
    """The ISP's ODMR service: credentials, a queue of held mail, and fault knobs."""

    def __init__(
        self,
        messages: Iterable[QueuedMessage] = (),
        *,
        username: str = "example.com",
        password: str = "secret",
        tls_context: ssl.SSLContext | None = None,
        require_tls: bool = True,
        mechanisms: Iterable[str] = ("PLAIN", "LOGIN", "CRAM-MD5"),
        hostname: str = "odmr.isp.test",
    ) -> None:
        super().__init__()
        self.queue = list(messages)
        self.username = username
        self.password = password
        self.tls_context = tls_context
        self.require_tls = require_tls
        self.mechanisms = tuple(m.upper() for m in mechanisms)
        self.hostname = hostname

        self.no_mail_code = 453
        self.atrn_reply: str | None = None
        self.advertise_atrn = True
        self.drop_in_data: int | None = None
        self.stall_after_turn = False
        self.ignore_domains = False

        self.commands: list[str] = []
        self.replies: list[str] = []
        self.requested: list[list[str]] = []
        self.acknowledged: list[QueuedMessage] = []
        self.used_cram_md5 = False

    stop_grace = 2.0

    async def handle_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        plain_transport = writer.transport
        try:
            await OdmrSession(self, reader, writer).run()
        except (Hangup, OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the customer went away, or a knob said so: normal in these tests
        except asyncio.CancelledError:
            pass  # stopped by stop(); start_server would log a cancelled handler
        finally:
            if writer.transport is None:  # CPython gh-105993, a failed handshake
                vars(writer)["_transport"] = plain_transport
            writer.transport.abort()
