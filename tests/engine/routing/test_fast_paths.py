"""The routing parser's fast paths against slow references, on random input.

``parse_header_block`` reads a whole field (continuation lines included) with
one regex match; the reference below walks the lines one by one, as RFC 5322
§2.2 reads. ``parse_addresses`` reads the common shapes of an address list
with one regex per item; the general tokenizer must agree on every value the
fast path accepts. The tokenizer skips plain comments, quoted strings and
atoms with ``str.find`` and a regex; the reference walks every character.
``RouteDecision.to_json`` writes its JSON itself; json.dumps is the reference.
And the per-head cache must never hand one head's block to another.
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postbridge.engine.routing.decision import Candidate, RouteDecision
from postbridge.engine.routing.recipients import (
    MAX_HEADER_BYTES,
    Field,
    HeaderBlock,
    _simple_addresses,
    _tokenize,
    _tokenized_addresses,
    clear_cache,
    parse_addresses,
    parse_header_block,
)

EXAMPLES = 2000 if os.environ.get("CI") == "true" else 200
PROFILE = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def reference_block(head: bytes) -> HeaderBlock:
    """The header block, line by line: CRLF, LF and CR each end a line."""
    data = head[:MAX_HEADER_BYTES]
    line = re.compile(rb"([^\r\n]*)(\r\n|\n|\r|$)")
    prefix = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    if data.startswith(b"From ", prefix) and not _NAME.match(data, prefix):
        prefix = line.match(data, prefix).end()  # type: ignore[union-attr]
    lines: list[tuple[int, bytes, bytes]] = []  # offset, content, line end
    for found in line.finditer(data, prefix):
        if found.start() == len(data):
            break
        lines.append((found.start(), found.group(1), found.group(2)))
    fields: list[Field] = []
    current: list[Any] = []  # [start, name_end, name, pieces]
    length = len(data)

    def close(end: int) -> None:
        if current:
            start, name_end, name, pieces = current
            value = b"".join(pieces).decode("utf-8", "replace").strip()
            fields.append(Field(name, value, start, name_end, end, name.lower()))
            current.clear()

    for offset, content, end in lines:
        if not content:  # the empty line ends the block, and belongs to it
            close(offset)
            length = offset + len(end)
            break
        if content[:1] in (b" ", b"\t"):
            if current:
                current[3].append(content)  # unfolding drops the line break only
            continue
        m = _NAME.match(content)
        if m is None:  # neither a field nor a continuation: the body starts here
            close(offset)
            length = offset
            break
        close(offset)
        name = m.group(1).decode("ascii")
        current[:] = [offset, offset + len(m.group(1)), name, [content[m.end() :]]]
    else:
        close(length)
    return HeaderBlock(raw=data[:length], length=length, prefix=prefix, fields=tuple(fields))


_lines = st.sampled_from(
    [
        b"To: a@example.com",
        b"Subject: =?utf-8?q?caf=C3=A9?=",
        b"Received: from x by y; Mon, 1 Jan 2024",
        b"X-Empty:",
        b"Name : value",
        b" continued",
        b"\tcontinued",
        b" ",
        b"",
        b"not a field",
        b"From someone Mon Jan 1",
        b":no name",
        b"\xc3\xa9: 8-bit name",
        b"X-Latin: caf\xe9",
        b"\xef\xbb\xbfTo: bom@example.com",
    ]
)
_ends = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r", b""])
heads = st.lists(
    st.tuples(_lines | st.binary(max_size=12), _ends).map(lambda t: t[0] + t[1]), max_size=16
).map(b"".join)


@PROFILE
@given(st.sampled_from([b"", b"\xef\xbb\xbf", b"From a@b Mon Jan 1\r\n"]), heads)
def test_header_block_agrees_with_the_line_by_line_reference(lead: bytes, body: bytes) -> None:
    head = lead + body
    clear_cache()
    assert parse_header_block(head) == reference_block(head)


def test_a_long_field_and_the_limit_agree_with_the_reference() -> None:
    head = b"To: a@x\r\nX-Long: " + b"y " * MAX_HEADER_BYTES + b"\r\n\r\nbody"
    assert parse_header_block(head) == reference_block(head)


def test_the_cache_tells_equal_heads_apart_from_the_same_head() -> None:
    first = b"To: a@example.com\r\n\r\n"
    block = parse_header_block(first)
    assert parse_header_block(first) is block  # the same object: cached
    second = bytes(bytearray(first))  # equal bytes, another object: parsed again, equal
    assert parse_header_block(second) == block
    changing = bytearray(b"To: a@example.com\r\n\r\n")
    assert parse_header_block(changing) == block  # type: ignore[arg-type]
    changing[4:5] = b"b"
    assert parse_header_block(changing).fields[0].value == "b@example.com"  # type: ignore[arg-type]
    for i in range(20):  # more heads than the cache holds: every answer still right
        head = b"To: u%d@example.com\r\n\r\n" % i
        assert parse_header_block(head).fields[0].value == f"u{i}@example.com"


_local = st.sampled_from(
    ["alice", "Bob.Smith", "a+tag", "x" * 257, "jd\u00f6e", "bad\ufffd", "o'neil", "a.b.c"]
)
_domain = st.sampled_from(
    ["example.com", "EXAMPLE.NET", "m\u00e4chine.example", "sub.example.com", "bad\ufffd.example"]
)
_address = st.builds(lambda local, domain: f"{local}@{domain}", _local, _domain)
_name = st.sampled_from(
    ["", "Alice", "Alice Smith ", '"Doe, John" ', '"a@b <c>" ', "J. Q. Public ", "x", '"" ']
)
_item = st.one_of(
    _address,
    st.builds(lambda name, address: f"{name}<{address}>", _name, _address),
)
_space = st.sampled_from(["", " ", "\t", "  "])
_lists = st.lists(st.tuples(_space, _item, _space).map("".join), min_size=1, max_size=5).map(
    ",".join
)
_noise = st.sampled_from(
    ["", ",", ";", ":", "(c)", "\\", "[1.2.3.4]", "<", ">", "@", ".", '"', "\r\n", "\u00a0", "x"]
)


@PROFILE
@given(_lists, _noise, st.integers(min_value=0, max_value=60))
def test_simple_address_lists_read_as_the_tokenizer_reads_them(
    value: str, noise: str, at: int
) -> None:
    for text in (value, value[:at] + noise + value[at:]):
        simple = _simple_addresses(text)
        if simple is not None:
            assert simple == _tokenized_addresses(text), text
        assert parse_addresses(text) == _tokenized_addresses(text), text


def test_the_fast_path_takes_the_common_shapes() -> None:
    for value in (
        "alice@example.com",
        "Alice <alice@example.com>",
        '"Doe, John" <john@example.com>, bob@example.net',
    ):
        assert _simple_addresses(value) is not None, value


def reference_tokenize(value: str) -> list[tuple[str, str, bool]]:
    """RFC 5322 §3.2 tokens, one character at a time (comments dropped)."""
    tokens: list[tuple[str, str, bool]] = []
    i, n, space = 0, len(value), False
    while i < n:
        c = value[i]
        if c in " \t\r\n":
            space, i = True, i + 1
        elif c == "(":  # nested, escaped, maybe unterminated
            depth = 0
            while i < n:
                if value[i] == "\\":
                    i += 1
                elif value[i] == "(":
                    depth += 1
                elif value[i] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i, space = i + 1, True
        elif c == '"':
            i += 1
            chars: list[str] = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            tokens.append(("quoted", "".join(chars), space))
            i, space = i + 1, False
        elif c == "[":
            end = value.find("]", i)
            end = n if end < 0 else end + 1
            tokens.append(("literal", value[i:end], space))
            i, space = end, False
        elif c in "<>,;:@.":
            tokens.append(("special", c, space))
            i, space = i + 1, False
        else:
            start = i
            while i < n and value[i] not in ' \t\r\n<>,;:@."()[':
                i += 1
            if i == start:  # a stray ")"
                i, space = i + 1, True
                continue
            tokens.append(("atom", value[start:i], space))
            space = False
    return tokens


_token_text = st.lists(
    st.sampled_from(
        [
            *["(", ")", '"', "\\", "[", "]", "<", ">", ",", ";", ":", "@", ".", " ", "\t", "\r\n"],
            *["a", "bob", "example.com", "=?utf-8?q?x?=", "\u00e9", "\ufffd", "(c)", '"q"'],
        ]
    ),
    max_size=30,
).map("".join)


@PROFILE
@given(_token_text | st.text(max_size=40))
def test_tokenizer_agrees_with_the_character_by_character_reference(value: str) -> None:
    assert _tokenize(value) == reference_tokenize(value)


# Any text, surrogates and control characters included: what json escapes.
_text = st.text(st.characters(blacklist_categories=()), max_size=12) | st.sampled_from(
    ['"', "\\", "\x00\x1f\x7f", "\u2028", "caf\u00e9", "\ud800", ""]
)
_texts = st.lists(_text, max_size=3).map(tuple)
_decisions = st.builds(
    RouteDecision,
    recipients=_texts,
    envelope_header=st.none() | _text,
    candidates=st.lists(st.builds(Candidate, _text, _text, _text, _text, _texts), max_size=3).map(
        tuple
    ),
    to_postmaster=st.booleans(),
    quarantine=st.none() | _text,
    new_header_block=st.none() | st.binary(max_size=20),
    trace_headers=st.binary(max_size=20),
    notes=_texts,
)


@PROFILE
@given(_decisions)
def test_to_json_writes_what_json_dumps_writes(decision: RouteDecision) -> None:
    def b64(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode("ascii")

    data = {
        "version": 1,
        "recipients": list(decision.recipients),
        "envelope_header": decision.envelope_header,
        "candidates": [
            [c.address, c.source, c.outcome, c.rule, list(c.targets)] for c in decision.candidates
        ],
        "to_postmaster": decision.to_postmaster,
        "quarantine": decision.quarantine,
        "new_header_block": b64(decision.new_header_block),
        "trace_headers": b64(decision.trace_headers),
        "notes": list(decision.notes),
    }
    assert decision.to_json() == json.dumps(data, ensure_ascii=False)
    assert RouteDecision.from_json(decision.to_json()) == decision
