"""Property test of the client's reading: replies cut into arbitrary chunks.

A real network cuts replies wherever it likes: inside a status line, between
"\\r" and "\\n", inside the terminator, between one pipelined reply and the
next. A scripted connection handed in through the ``open_connection`` seam
lets hypothesis choose every cut, which a loopback socket would not.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from postbridge.engine.errors import PostbridgeError
from postbridge.engine.pop3.client import Pop3Client
from postbridge.engine.pop3.replies import dot_stuff


class ScriptedTransport:
    def __init__(self) -> None:
        self.closed = False

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class ScriptedReader:
    """Hands out the server's bytes in exactly the chunks given."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def read(self, limit: int) -> bytes:
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if len(chunk) > limit:
            self.chunks.insert(0, chunk[limit:])
            chunk = chunk[:limit]
        return chunk


class ScriptedWriter:
    """Records what the client sends."""

    def __init__(self) -> None:
        self.transport = ScriptedTransport()
        self.sent = bytearray()

    def write(self, data: bytes) -> None:
        self.sent += data

    async def drain(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    async def wait_closed(self) -> None:
        return None


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, sorted)."""
    offsets = sorted({point % (len(data) + 1) for point in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(offsets) if b > a]


line = st.lists(st.sampled_from([b".", b"..", b"\r", b"\n", b"x", b"\r\n.", b" "]), max_size=6).map(
    b"".join
)
bodies = st.lists(line, max_size=8).map(
    lambda lines: b"".join(part.replace(b"\r\n", b"\n") + b"\r\n" for part in lines)
)


@given(
    messages=st.lists(st.one_of(bodies, st.none()), min_size=1, max_size=6),
    pipelining=st.booleans(),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
)
def test_any_chunking_gives_the_same_messages(
    messages: list[bytes | None], pipelining: bool, points: list[int]
) -> None:
    """``None`` stands for a message the server answers -ERR to."""
    capa = b"+OK\r\nPIPELINING\r\n.\r\n" if pipelining else b"-ERR no CAPA\r\n"
    script = b"+OK ready <1.2@x>\r\n" + capa
    for body in messages:
        script += b"-ERR gone\r\n" if body is None else b"+OK\r\n" + dot_stuff(body)
    script += b"+OK\r\n"  # the NOOP at the end: the stream must still be in step
    reader, writer = ScriptedReader(cut(script, points)), ScriptedWriter()

    async def scripted_open(*args: Any, **kwargs: Any) -> Any:
        return reader, writer

    async def run() -> tuple[dict[int, bytes], list[int]]:
        client = Pop3Client(
            host="pop.example", port=110, security="none", open_connection=scripted_open
        )
        done: dict[int, bytes] = {}
        failed: list[int] = []

        async def on_complete(msgnum: int, sink: io.BytesIO) -> None:
            done[msgnum] = sink.getvalue()

        def on_error(msgnum: int, error: PostbridgeError) -> None:
            failed.append(msgnum)

        async with client:
            assert client.capabilities.pipelining is pipelining
            await client.retr_many(
                range(1, len(messages) + 1),
                open_sink=lambda n: io.BytesIO(),
                on_complete=on_complete,
                on_error=on_error,
                window=3,
            )
            await client.noop()
        return done, failed

    done, failed = asyncio.run(run())
    assert done == {n: body for n, body in enumerate(messages, 1) if body is not None}
    assert failed == [n for n, body in enumerate(messages, 1) if body is None]
    sent = bytes(writer.sent).split(b"\r\n")
    assert sent.count(b"RETR 1") == 1
