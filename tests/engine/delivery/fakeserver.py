"""A scripted SMTP/LMTP server for fault injection (drops, stalls, odd replies).

Shaped like CPython's ``test_poplib`` fake server: one ``cmd_<VERB>`` method
per command. Real protocol behaviour is tested against aiosmtpd (and later
Postfix/Dovecot); this one exists to misbehave on purpose.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Session:
    sender: str | None = None
    rcpts: list[str] = field(default_factory=list)


class Hangup(Exception):
    """Raised by a command to drop the connection abruptly."""


class FakeMailServer:
    def __init__(
        self,
        *,
        lmtp: bool = False,
        extensions: tuple[str, ...] = ("PIPELINING", "SIZE 1000000", "8BITMIME"),
        silent: bool = False,
        drop_mid_data: bool = False,
        drop_before_final_reply: bool = False,
        rcpt_replies: dict[str, str] | None = None,
        final_replies: dict[str, str] | None = None,
        drop_after_final_replies: int | None = None,
        stall_final_reply_once: bool = False,
        keep_messages: bool = True,
        hang_up_on: tuple[str, int] | None = None,
        rcpt_delay: float = 0.0,
    ) -> None:
        self.lmtp = lmtp
        self.extensions = extensions
        self.silent = silent  # never greet (timeout tests)
        self.drop_mid_data = drop_mid_data
        self.drop_before_final_reply = drop_before_final_reply
        self.rcpt_replies = rcpt_replies or {}
        self.final_replies = final_replies or {}
        self.drop_after_final_replies = drop_after_final_replies
        self.stall_final_reply_once = stall_final_reply_once
        self.keep_messages = keep_messages  # False: count bytes only (memory tests)
        # ("MAIL", 2): close the connection, unanswered, when the 2nd MAIL of this server
        # arrives (counted over all connections).
        self.hang_up_on = hang_up_on
        self.rcpt_delay = rcpt_delay  # seconds before each RCPT reply (one write each)
        self._verb_counts: dict[str, int] = {}
        self.received_bytes = 0
        self.connections = 0
        self.commands: list[str] = []
        self.messages: list[tuple[str, list[str], bytes]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.close()
        self.hang_up_all()
        await self._server.wait_closed()
        # Let the handlers see the hang-up and finish, rather than be cancelled
        # when the loop closes (asyncio logs that as an error).
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=2)

    def hang_up_all(self) -> None:
        for writer in self._writers:
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.append(task)
        session = Session()
        try:
            if self.silent:
                await asyncio.wait_for(reader.read(1), 10)
                return
            writer.write(b"220 fake.test ESMTP\r\n")
            for _ in range(1000):
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    return
                text = line.decode("utf-8").rstrip("\r\n")
                self.commands.append(text)
                verb, _, arg = text.partition(" ")
                verb = verb.upper()
                self._verb_counts[verb] = count = self._verb_counts.get(verb, 0) + 1
                if self.hang_up_on == (verb, count):
                    # A clean close (FIN): what was answered before still reaches the client.
                    await writer.drain()
                    writer.close()
                    return
                command = getattr(self, f"cmd_{verb}", None)
                if command is None:
                    writer.write(b"502 5.5.2 Command not recognized\r\n")
                    continue
                if await command(session, arg, reader, writer) is False:
                    return
                await writer.drain()
        except (Hangup, ConnectionError, TimeoutError):
            return
        finally:
            writer.transport.abort()

    async def cmd_EHLO(self, session: Session, arg: str, reader, writer) -> None:
        lines = ["fake.test", *self.extensions]
        out = [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]
        writer.write("".join(f"{x}\r\n" for x in out).encode())

    cmd_LHLO = cmd_EHLO

    async def cmd_MAIL(self, session: Session, arg: str, reader, writer) -> None:
        session.sender = arg.split(">", 1)[0].split("<", 1)[1]
        writer.write(b"250 2.1.0 Ok\r\n")

    async def cmd_RCPT(self, session: Session, arg: str, reader, writer) -> None:
        rcpt = arg.split(">", 1)[0].split("<", 1)[1]
        if self.rcpt_delay:
            await writer.drain()
            await asyncio.sleep(self.rcpt_delay)
        if rcpt in self.rcpt_replies:
            writer.write(f"{self.rcpt_replies[rcpt]}\r\n".encode())
            return
        session.rcpts.append(rcpt)
        writer.write(b"250 2.1.5 Ok\r\n")

    async def cmd_RSET(self, session: Session, arg: str, reader, writer) -> None:
        session.sender, session.rcpts = None, []
        writer.write(b"250 2.0.0 Ok\r\n")

    async def cmd_NOOP(self, session: Session, arg: str, reader, writer) -> None:
        writer.write(b"250 2.0.0 Ok\r\n")

    async def cmd_QUIT(self, session: Session, arg: str, reader, writer) -> bool:
        writer.write(b"221 2.0.0 Bye\r\n")
        await writer.drain()
        return False

    async def cmd_DATA(self, session: Session, arg: str, reader, writer) -> bool:
        writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        await writer.drain()
        if not self.keep_messages:
            return await self._sink(session, reader, writer)
        lines: list[bytes] = []
        for _ in range(1_000_000):
            line = await asyncio.wait_for(reader.readline(), 10)
            if not line:
                return False
            if self.drop_mid_data and len(lines) == 2:
                raise Hangup
            if line == b".\r\n":
                break
            self.received_bytes += len(line)
            lines.append(line[1:] if line.startswith(b".") else line)
        if self.drop_before_final_reply:
            raise Hangup
        if self.stall_final_reply_once:
            self.stall_final_reply_once = False
            await asyncio.wait_for(reader.read(1), 10)  # until the client gives up
            return False
        assert session.sender is not None
        self.messages.append((session.sender, list(session.rcpts), b"".join(lines)))
        if not self.lmtp:
            writer.write(f"{self.final_replies.get('*', '250 2.0.0 Ok: queued')}\r\n".encode())
        else:
            for count, rcpt in enumerate(session.rcpts):
                if count == self.drop_after_final_replies:
                    await writer.drain()
                    raise Hangup
                reply = self.final_replies.get(rcpt, f"250 2.0.0 <{rcpt}> delivered")
                writer.write(f"{reply}\r\n".encode())
        session.sender, session.rcpts = None, []
        return True

    async def _sink(self, session: Session, reader, writer) -> bool:
        """Swallow DATA in big reads, counting bytes (for memory tests: fast, small)."""
        tail = b"\r\n"
        for _ in range(1_000_000):
            chunk = await asyncio.wait_for(reader.read(1 << 16), 10)
            if not chunk:
                return False
            self.received_bytes += len(chunk)
            if (tail + chunk).endswith(b"\r\n.\r\n"):
                break
            tail = chunk[-4:]
        writer.write(b"250 2.0.0 Ok: swallowed\r\n")
        session.sender, session.rcpts = None, []
        return True
