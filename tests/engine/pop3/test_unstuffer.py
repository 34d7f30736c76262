"""The dot-unstuffer against a naive line-by-line reference, on random chunkings.

DotUnstuffer jumps from one dotted line to the next with ``bytes.find`` and
switches to ``bytes.replace`` when a chunk holds many of them; the reference
below walks the lines one by one, as RFC 1939 §3 reads. Both must agree on
every stream, however the network cuts it, and through both entry points:
``feed`` (chunks as bytes) and ``feed_at`` (a buffer and an offset into it, as
Pop3Connection keeps them).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postbridge.engine.pop3.replies import DotUnstuffer, dot_stuff

EXAMPLES = 2000 if os.environ.get("CI") == "true" else 200
PROFILE = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def reference(stream: bytes) -> tuple[bytes, bytes] | None:
    """(body, what follows the terminator), or None when ``stream`` has no terminator.

    Lines end in CRLF only (a bare CR or LF is part of a line). A line "." is
    the terminator; a line starting ".." loses its first dot; any other line,
    a single-dot one included, is kept as it is.
    """
    body: list[bytes] = []
    pos = 0
    while True:
        end = stream.find(b"\r\n", pos)
        if end < 0:
            return None
        line = stream[pos : end + 2]
        if line == b".\r\n":
            return b"".join(body), stream[end + 2 :]
        body.append(line[1:] if line.startswith(b"..") else line)
        pos = end + 2


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in chunks of the given sizes (cycled); the empty chunk included if asked."""
    chunks: list[bytes] = []
    pos = 0
    turn = 0
    while pos < len(data):
        size = sizes[turn % len(sizes)] if sizes else len(data)
        turn += 1
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def decode_with_feed(chunks: list[bytes]) -> tuple[bytes, bytes] | None:
    decoder = DotUnstuffer()
    out: list[bytes] = []
    for i, chunk in enumerate(chunks):
        body, done, leftover = decoder.feed(chunk)
        out.append(body)
        if done:
            assert decoder.done
            return b"".join(out), leftover + b"".join(chunks[i + 1 :])
        assert leftover == b""
    assert not decoder.done
    return None


def decode_with_feed_at(chunks: list[bytes], junk: bytes) -> tuple[bytes, bytes] | None:
    """As decode_with_feed, each chunk inside a buffer after ``junk`` the decoder must skip."""
    decoder = DotUnstuffer()
    out: list[bytes] = []
    for i, chunk in enumerate(chunks):
        buffer = junk + chunk
        body, rest = decoder.feed_at(buffer, len(junk))
        out.append(body)
        if rest >= 0:
            assert len(junk) <= rest <= len(buffer)
            return b"".join(out), buffer[rest:] + b"".join(chunks[i + 1 :])
    return None


# Streams rich in what matters: CR, LF, dots at line starts, stuffing, terminators.
_pieces = st.sampled_from(
    [b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n..", b"\r\n.\r\n", b"x", b"line text"]
)
streams = st.lists(_pieces | st.binary(max_size=6), max_size=60).map(b"".join)
sizes = st.lists(st.integers(min_value=1, max_value=70), max_size=8)


@PROFILE
@given(stream=streams, sizes=sizes, junk=st.sampled_from([b"", b"+OK\r\n", b"\r\n.", b"\r"]))
def test_agrees_with_the_line_by_line_reference(
    stream: bytes, sizes: list[int], junk: bytes
) -> None:
    expected = reference(stream)
    chunks = cut(stream, sizes)
    assert decode_with_feed(chunks) == expected
    assert decode_with_feed_at(chunks, junk) == expected


# Bodies with many stuffed lines, in big chunks: past the point where the decoder
# stops finding dotted lines one by one and replaces over the rest of the chunk.
dotted_lines = st.lists(
    st.sampled_from([b".", b"..", b".x", b"text", b"", b"\r", b".\r", b"\n."]),
    min_size=1,
    max_size=4,
).map(b"".join)
dotted_bodies = st.lists(dotted_lines, min_size=30, max_size=150).map(
    lambda lines: b"".join(line + b"\r\n" for line in lines)
)


@PROFILE
@given(
    body=dotted_bodies,
    sizes=st.lists(st.integers(min_value=1, max_value=3000), max_size=4),
    after=st.sampled_from([b"", b"+OK next\r\n", b"\r\n.\r\n"]),
)
def test_many_dotted_lines_agree_with_the_reference(
    body: bytes, sizes: list[int], after: bytes
) -> None:
    stream = dot_stuff(body) + after
    assert reference(stream) == (body, after)
    chunks = cut(stream, sizes)
    assert decode_with_feed(chunks) == (body, after)
    assert decode_with_feed_at(chunks, b"junk\r\n.") == (body, after)


def test_a_body_without_dotted_lines_comes_back_in_one_piece() -> None:
    body = b"Subject: x\r\n\r\n" + b"plain text line\r\n" * 2000
    decoder = DotUnstuffer()
    out, rest = decoder.feed_at(b"+OK\r\n" + dot_stuff(body) + b"+OK next", 5)
    assert out == body
    assert rest == 5 + len(body) + 3


def test_the_terminator_alone_is_an_empty_body_even_split_at_every_byte() -> None:
    for stream in (b".\r\n+OK", b"..\r\n.\r\n+OK"):
        chunks = [stream[i : i + 1] for i in range(len(stream))]
        expected = reference(stream)
        assert expected is not None
        assert decode_with_feed([b"", *chunks]) == expected
