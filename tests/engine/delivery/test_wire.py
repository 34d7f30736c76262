"""SMTP wire format: reply parsing and DATA encoding, as pure functions."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postbridge.engine.delivery.wire import (
    DataEncoder,
    Reply,
    ReplyAssembler,
    auth_mechanisms,
    check_address,
    parse_ehlo,
    parse_reply_line,
)
from postbridge.engine.errors import ProtocolError

# Pieces that make every dot-stuffing and line-ending corner likely.
_pieces = st.sampled_from([b"\r\n", b".", b"\r", b"\n", b"a", b"..", b"\r\n.\r\n", b"\xff"])
messages = st.lists(_pieces, max_size=60).map(b"".join)
crlf_messages = st.lists(
    st.sampled_from([b"\r\n", b".", b"a", b"..", b"\r\n.\r\n", b" ", b"\xc3\xa9"]), max_size=60
).map(b"".join)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def encode(chunks: list[bytes]) -> bytes:
    encoder = DataEncoder()
    return b"".join(encoder.feed(c) for c in chunks) + encoder.finish()


def decode(wire: bytes) -> bytes:
    """What a server stores: strip the terminator and undo dot-stuffing (RFC 5321 §4.5.2)."""
    assert wire.endswith(b".\r\n")
    body = wire[: -len(b".\r\n")]
    assert body == b"" or body.endswith(b"\r\n")
    lines = body.split(b"\r\n")[:-1] if body else []
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def test_reply_line_forms():
    assert parse_reply_line(b"250-PIPELINING\r\n") == (250, False, "PIPELINING")
    assert parse_reply_line(b"550 5.1.1 User unknown\r\n") == (550, True, "5.1.1 User unknown")
    assert parse_reply_line(b"250\r\n") == (250, True, "")


@pytest.mark.parametrize("line", [b"hello\r\n", b"25\r\n", b"2500 x\r\n", b"650 x\r\n", b""])
def test_garbage_reply_is_a_protocol_error_in_words(line: bytes):
    with pytest.raises(ProtocolError, match="does not understand"):
        parse_reply_line(line)


def test_multiline_reply_and_ehlo_keywords():
    assembler = ReplyAssembler()
    lines = [b"250-mail.example.com hi\r\n", b"250-SIZE 1000\r\n", b"250-auth plain LOGIN\r\n"]
    assert all(assembler.feed(line) is None for line in lines)
    reply = assembler.feed(b"250 PIPELINING\r\n")
    assert reply == Reply(
        250, ("mail.example.com hi", "SIZE 1000", "auth plain LOGIN", "PIPELINING")
    )
    extensions = parse_ehlo(reply)
    assert extensions == {"SIZE": "1000", "AUTH": "plain LOGIN", "PIPELINING": ""}
    assert auth_mechanisms(extensions) == {"PLAIN", "LOGIN"}


def test_reply_text_keeps_enhanced_code():
    reply = Reply(550, ("5.1.1 <bob@example.com>: Recipient address rejected",))
    assert str(reply) == "550 5.1.1 <bob@example.com>: Recipient address rejected"


def test_code_change_inside_a_reply_is_refused():
    assembler = ReplyAssembler()
    assembler.feed(b"250-first\r\n")
    with pytest.raises(ProtocolError):
        assembler.feed(b"550 second\r\n")


@pytest.mark.parametrize("address", ["a\r\nRCPT TO:<x@y>", "a>b@x", "a<b", "nul\x00@x", "tab\t@x"])
def test_addresses_that_could_inject_commands_are_refused(address: str):
    with pytest.raises(ValueError):
        check_address(address)


@given(crlf_messages, st.lists(st.integers(min_value=0), max_size=8))
def test_data_round_trip_is_byte_exact(message: bytes, cuts: list[int]):
    wire = encode(split(message, cuts))
    expected = message if message == b"" or message.endswith(b"\r\n") else message + b"\r\n"
    assert decode(wire) == expected
    # The end-of-data line appears exactly once, at the end.
    assert (b"\r\n" + wire).count(b"\r\n.\r\n") == 1


@given(messages, st.lists(st.integers(min_value=0), max_size=8))
def test_chunking_does_not_change_the_wire_bytes(message: bytes, cuts: list[int]):
    assert encode(split(message, cuts)) == encode([message])


@given(messages, st.lists(st.integers(min_value=0), max_size=8))
def test_no_bare_line_feed_reaches_the_server(message: bytes, cuts: list[int]):
    wire = encode(split(message, cuts))
    assert wire.count(b"\n") == wire.count(b"\r\n")
    assert (b"\r\n" + wire).count(b"\r\n.\r\n") == 1


def test_known_encodings():
    assert encode([b".hidden\r\n"]) == b"..hidden\r\n.\r\n"
    assert encode([b"a\r", b"\n.b"]) == b"a\r\n..b\r\n.\r\n"
    assert encode([b"a\r\n", b".\r\n"]) == b"a\r\n..\r\n.\r\n"
    assert encode([b"no newline"]) == b"no newline\r\n.\r\n"
    assert encode([b"bare\n.lf\n"]) == b"bare\r\n..lf\r\n.\r\n"
    assert encode([]) == b".\r\n"
