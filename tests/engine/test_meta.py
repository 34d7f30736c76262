"""What the Activity window shows of a message: sender, subject, Message-ID, Return-Path.

meta.extract takes two short cuts: a value without "=?" skips
email.header.decode_header (which would return it unchanged), and each
name's first field is found with one dict built in C. The property test holds
it to the plain way: every field in order, every value through decode_header.
"""

from __future__ import annotations

import email.errors
import email.header
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postbridge.engine.meta import extract
from postbridge.engine.routing.recipients import parse_header_block

EXAMPLES = 1000 if os.environ.get("CI") == "true" else 150
PROFILE = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_reads_the_first_of_each_field() -> None:
    head = (
        b"Return-Path: <bounce@lists.example>\r\n"
        b"From: Alice <alice@example.com>\r\n"
        b"Subject:   hello\r\n   world  \r\n"
        b"Message-ID: <1@example.com>\r\n"
        b"Subject: second subject\r\n"
        b"From: second@example.com\r\n"
        b"\r\n"
        b"Subject: in the body\r\n"
    )
    assert extract(head) == {
        "message_id": "<1@example.com>",
        "sender": "Alice <alice@example.com>",
        "subject": "hello world",
        "envelope_from": "bounce@lists.example",
    }


def test_decodes_encoded_words_and_keeps_plain_text() -> None:
    head = (
        b"From: =?iso-8859-1?q?J=F6rg?= <joerg@example.com>\r\n"
        b"Subject: =?utf-8?b?Q2Fmw6k=?= au lait, plain =? not a word\r\n\r\n"
    )
    meta = extract(head)
    assert meta["sender"] == "J\u00f6rg <joerg@example.com>"
    assert meta["subject"] == "Caf\u00e9 au lait, plain =? not a word"


def test_long_values_are_cut_and_missing_ones_are_empty() -> None:
    meta = extract(b"Subject: " + b"word " * 300 + b"\r\n\r\n")
    assert meta["subject"] == "word " * 100  # 500 characters
    assert meta["sender"] == ""
    assert meta["message_id"] is None
    assert meta["envelope_from"] == ""


def test_return_path_forms() -> None:
    def envelope(value: bytes) -> str | None:
        return extract(b"Return-Path: " + value + b"\r\n\r\n")["envelope_from"]

    assert envelope(b"<>") == ""
    assert envelope(b"<a@b.example>") == "a@b.example"
    assert envelope(b"<@relay.example:a@b.example>") == "a@b.example"
    assert envelope(b"a@b.example (comment)") == "a@b.example"
    assert envelope(b"<not an address>") == ""


def reference(head: bytes) -> tuple[str | None, str | None, str | None]:
    """(Message-ID, sender, subject) as extract() reads them, without its short cuts."""

    def decode(value: str | None) -> str:
        if value is None:
            return ""
        text = value
        try:
            parts = email.header.decode_header(text)
            text = "".join(
                chunk.decode(charset or "ascii", errors="replace")
                if isinstance(chunk, bytes)
                else chunk
                for chunk, charset in parts
            )
        except (LookupError, ValueError, AssertionError, TypeError, email.errors.HeaderParseError):
            pass
        return " ".join(text.split())[:500]

    first: dict[str, str] = {}
    for field in parse_header_block(head).fields:
        first.setdefault(field.name.lower(), field.value)
    mid = first.get("message-id")
    message_id = " ".join(mid.split())[:998] if mid else None
    return message_id, decode(first.get("from")), decode(first.get("subject"))


_names = st.sampled_from([b"Subject", b"subject", b"From", b"FROM", b"Message-ID", b"X-Other"])
_values = st.lists(
    st.sampled_from(
        [
            b"plain",
            b" ",
            b"\t",
            b"=?utf-8?q?caf=C3=A9?=",
            b"=?utf-8?b?w6k=?=",
            b"=?bogus-charset?q?x?=",
            b"=?utf-8?b?!!!?=",
            b"=?",
            b"?=",
            b"\xe9",
            b"<id@example.com>",
        ]
    ),
    max_size=6,
).map(b"".join)
_heads = st.lists(
    st.tuples(_names, _values).map(lambda t: t[0] + b": " + t[1] + b"\r\n"), max_size=6
).map(b"".join)


@PROFILE
@given(_heads)
def test_agrees_with_decoding_every_field_the_plain_way(head: bytes) -> None:
    got = extract(head)
    assert (got["message_id"], got["sender"], got["subject"]) == reference(head)


def test_a_broken_encoded_subject_hides_neither_sender_nor_envelope() -> None:
    head = (
        b"Return-Path: <ann@isp.example>\r\nFrom: Ann <ann@isp.example>\r\n"
        b"Subject: =?utf-8?b?a?=\r\n\r\n"  # one base64 character: a HeaderParseError
    )
    meta = extract(head)
    assert meta["envelope_from"] == "ann@isp.example"  # the envelope sender of the delivery
    assert meta["sender"] == "Ann <ann@isp.example>"
    assert meta["subject"] == "=?utf-8?b?a?="
