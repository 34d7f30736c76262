"""The pure POP3 reply parsers, with byte fixtures and hypothesis."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postbridge.engine.errors import ProtocolError
from postbridge.engine.pop3.replies import (
    Capabilities,
    DotUnstuffer,
    dot_stuff,
    greeting_timestamp,
    is_continuation,
    parse_capa,
    parse_list_body,
    parse_list_line,
    parse_stat,
    parse_status,
    parse_uidl_body,
    parse_uidl_line,
)

# ---------------------------------------------------------------- status lines


def test_ok_and_err_lines() -> None:
    ok = parse_status(b"+OK 2 messages (320 octets)")
    assert ok.ok and ok.text == "2 messages (320 octets)" and ok.code == ()
    err = parse_status(b"-ERR no such message")
    assert not err.ok and err.text == "no such message"
    assert parse_status(b"+OK").text == ""
    assert parse_status(b"+ok lower case\r\n").ok


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"-ERR [IN-USE] Mailbox is locked", ("IN-USE",)),
        (b"-ERR [SYS/TEMP] Try again later", ("SYS", "TEMP")),
        (b"-ERR [sys/perm] broken", ("SYS", "PERM")),
        (b"-ERR [AUTH] Authentication failed.", ("AUTH",)),
        (b"-ERR [LOGIN-DELAY] wait", ("LOGIN-DELAY",)),
        (b"-ERR [SYS/TEMP/DISK] deep", ("SYS", "TEMP", "DISK")),
        (b"-ERR [not a code because of space] x", ()),
        (b"-ERR text [IN-USE] later", ()),
    ],
)
def test_response_codes(line: bytes, code: tuple[str, ...]) -> None:
    status = parse_status(line)
    assert status.code == code


def test_hierarchical_code_matching() -> None:
    status = parse_status(b"-ERR [SYS/TEMP/DISK] full")
    assert status.has_code("SYS")
    assert status.has_code("sys", "temp")
    assert not status.has_code("SYS", "PERM")
    assert not status.has_code("IN-USE")
    assert status.describe() == "-ERR [SYS/TEMP/DISK] full"


@pytest.mark.parametrize(
    "line", [b"", b"HELLO", b"+OKAY", b"-ERROR", b"OK", b"* OK imap", b"\xff\xfe"]
)
def test_garbage_status_is_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_status(line)
    assert caught.value.detail == repr(line[:200])


def test_continuation() -> None:
    assert is_continuation(b"+ ")
    assert is_continuation(b"+")
    assert is_continuation(b"+ aGVsbG8=")
    assert not is_continuation(b"+OK")


def test_greeting_timestamp() -> None:
    text = "POP3 server ready <1896.697170952@dbc.mtview.ca.us>"
    assert greeting_timestamp(text) == "<1896.697170952@dbc.mtview.ca.us>"
    assert greeting_timestamp("Dovecot ready.") is None
    assert greeting_timestamp("odd <> brackets") is None


# ---------------------------------------------------------------- CAPA

DOVECOT_CAPA = (
    b"CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
    b"STLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n"
)


def test_capa_of_dovecot() -> None:
    caps = parse_capa(DOVECOT_CAPA)
    assert caps.pipelining and caps.uidl and caps.top and caps.user and caps.stls
    assert caps.resp_codes and caps.auth_resp_code
    assert caps.sasl == frozenset({"PLAIN", "LOGIN"})
    assert caps.expire is None and caps.login_delay is None
    assert "CAPA" in caps.names


def test_capa_expire_login_delay_implementation() -> None:
    caps = parse_capa(
        b"EXPIRE 0\r\nLOGIN-DELAY 900 USER\r\nIMPLEMENTATION Shlemazle Plus 3\r\nsasl plain\r\n"
    )
    assert caps.expire == "0"
    assert caps.login_delay == 900
    assert caps.implementation == "Shlemazle Plus 3"
    assert caps.sasl == frozenset({"PLAIN"})
    assert parse_capa(b"EXPIRE never\r\n").expire == "NEVER"
    assert parse_capa(b"EXPIRE 30 USER\r\n").expire == "30"
    assert parse_capa(b"LOGIN-DELAY soon\r\n").login_delay is None


def test_no_capa_means_nothing_assumed() -> None:
    assert Capabilities.none() == parse_capa(b"")
    assert not Capabilities.none().pipelining


# ---------------------------------------------------------------- listings


def test_stat_list_uidl() -> None:
    assert parse_stat("2 320") == (2, 320)
    assert parse_list_line(b"1 120") == (1, 120)
    assert parse_list_line(b"3 200 extra info") == (3, 200)
    assert parse_uidl_line(b"1 whqtswO00WBw418f9t5JxYwZ") == (1, "whqtswO00WBw418f9t5JxYwZ")
    assert parse_list_body(b"1 120\r\n2 200\r\n") == {1: 120, 2: 200}
    assert parse_uidl_body(b"1 a\r\n2 b\r\n") == {1: "a", 2: "b"}
    assert parse_list_body(b"") == {}


@pytest.mark.parametrize("line", [b"", b"1", b"x 2", b"1 -5", b"1 2e3", b"9" * 30 + b" 1"])
def test_bad_listing_lines(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_list_line(line)


@pytest.mark.parametrize("line", [b"1", b"one abc", b"1 \xc3\xa9t\xc3\xa9"])
def test_bad_uidl_lines(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_uidl_line(line)


def test_bad_stat() -> None:
    with pytest.raises(ProtocolError):
        parse_stat("two messages")


# ---------------------------------------------------------------- dot stuffing

TRICKY_BODIES = [
    b"",
    b"\r\n",
    b".\r\n",
    b"..\r\n",
    b"...\r\n",
    b".starts with a dot\r\n",
    b"Subject: x\r\n\r\n.\r\nlone dot above\r\n",
    b"a line\r\n.\r\n..\r\n.\r\n",
    b"bare\nLF\n.\nkept\r\n",
    b"no final newline",
    b"x" * 200_000 + b"\r\n",
]


def unstuff_in_chunks(wire: bytes, sizes: list[int]) -> tuple[bytes, bytes]:
    """Feed ``wire`` cut at ``sizes`` (cycled); return (body, leftover after terminator)."""
    decoder = DotUnstuffer()
    out: list[bytes] = []
    position = 0
    turn = 0
    while position < len(wire):
        size = sizes[turn % len(sizes)] if sizes else len(wire)
        turn += 1
        body, done, leftover = decoder.feed(wire[position : position + size])
        position += size
        out.append(body)
        if done:
            return b"".join(out), leftover + wire[position:]
    raise AssertionError("terminator never found")


@pytest.mark.parametrize("body", TRICKY_BODIES)
@pytest.mark.parametrize("sizes", [[], [1], [2], [3], [4], [5], [7, 1, 3]])
def test_unstuff_tricky_bodies(body: bytes, sizes: list[int]) -> None:
    if len(body) > 1000 and sizes:
        sizes = [4093, *sizes]  # the big body in realistic chunks, cut unevenly
    expected = body if body == b"" or body.endswith(b"\r\n") else body + b"\r\n"
    decoded, leftover = unstuff_in_chunks(dot_stuff(body) + b"+OK next", sizes)
    assert decoded == expected
    assert leftover == b"+OK next"


def test_stuffing_on_the_wire() -> None:
    assert dot_stuff(b"") == b".\r\n"
    assert dot_stuff(b".\r\n") == b"..\r\n.\r\n"
    assert dot_stuff(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    # A lone dot inside a line, and after a bare LF, is not at a line start.
    assert dot_stuff(b"a.b\n.c\r\n") == b"a.b\n.c\r\n.\r\n"


def test_unstuffer_after_done_returns_everything_as_leftover() -> None:
    decoder = DotUnstuffer()
    assert decoder.feed(b".\r\nrest") == (b"", True, b"rest")
    assert decoder.done
    assert decoder.feed(b"more") == (b"", True, b"more")


def test_unstuffer_holds_back_at_most_four_bytes() -> None:
    decoder = DotUnstuffer()
    body, done, _ = decoder.feed(b"hello\r\n.")
    assert (body, done) == (b"hello", False)
    body, done, _ = decoder.feed(b".x\r\n.\r\n")
    assert (body, done) == (b"\r\n.x\r\n", True)


# Bodies made of CRLF-terminated lines, biased towards dots, CR, LF.
_line_bytes = st.binary(max_size=40) | st.lists(
    st.sampled_from([b".", b"..", b"\r", b"\n", b"a", b"\r\n."]), max_size=8
).map(b"".join)
bodies = st.lists(_line_bytes, max_size=20).map(
    lambda lines: b"".join(line.replace(b"\r\n", b"\n") + b"\r\n" for line in lines)
)


@given(body=bodies, sizes=st.lists(st.integers(min_value=1, max_value=64), max_size=10))
def test_stuff_then_unstuff_is_identity(body: bytes, sizes: list[int]) -> None:
    decoded, leftover = unstuff_in_chunks(dot_stuff(body) + b"-ERR after", sizes)
    assert decoded == body
    assert leftover == b"-ERR after"


@given(data=st.binary(max_size=300), sizes=st.lists(st.integers(1, 50), max_size=10))
def test_unstuffer_never_raises_and_never_grows(data: bytes, sizes: list[int]) -> None:
    decoder = DotUnstuffer()
    produced = 0
    position = 0
    for size in sizes or [len(data) or 1]:
        body, done, leftover = decoder.feed(data[position : position + size])
        position += size
        produced += len(body) + len(leftover)
        if done:
            break
    # Output is never more than input: unstuffing only removes bytes.
    assert produced <= len(data)


@given(st.binary(max_size=300))
def test_parsers_raise_only_protocol_error(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    parse_capa(data)
    greeting_timestamp(text)
    for parse in (
        lambda: parse_status(data),
        lambda: parse_list_line(data),
        lambda: parse_uidl_line(data),
        lambda: parse_list_body(data),
        lambda: parse_uidl_body(data),
        lambda: parse_stat(text),
    ):
        with contextlib.suppress(ProtocolError):
            parse()
