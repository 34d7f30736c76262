"""Header-block splitting and address extraction, on byte fixtures."""

from __future__ import annotations

import pytest

from postbridge.engine.routing.recipients import (
    MAX_HEADER_BYTES,
    message_id,
    normalise_domain,
    parse_addresses,
    parse_header_block,
    received_for,
    split_header_block,
)

# --- the header block ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "block"),
    [
        (b"To: a@x\r\nSubject: s\r\n\r\nbody\r\n", b"To: a@x\r\nSubject: s\r\n\r\n"),
        (b"To: a@x\nSubject: s\n\nbody\n", b"To: a@x\nSubject: s\n\n"),
        (b"To: a@x\rSubject: s\r\rbody\r", b"To: a@x\rSubject: s\r\r"),
        (b"To: a@x\r\nSubject: s\n\r\nbody", b"To: a@x\r\nSubject: s\n\r\n"),
        (b"To: a@x\r\n\tfolded\r\n\r\nbody", b"To: a@x\r\n\tfolded\r\n\r\n"),
        # no blank line: the body starts at the first line that is no header field
        (b"To: a@x\r\nHello there\r\nCc: b@x\r\n", b"To: a@x\r\n"),
        (b"To: a@x\r\nSubject: s", b"To: a@x\r\nSubject: s"),
        (b"", b""),
        (b"\r\nbody only", b"\r\n"),
        (b"just text\r\n\r\n", b""),
        # a BOM and an mbox From line stay in the block (they precede the fields)
        (b"\xef\xbb\xbfTo: a@x\n\nb", b"\xef\xbb\xbfTo: a@x\n\n"),
        (
            b"From a@x Mon Jan  1 00:00:00 2024\nTo: a@x\n\nb",
            b"From a@x Mon Jan  1 00:00:00 2024\nTo: a@x\n\n",
        ),
    ],
)
def test_split_header_block(head: bytes, block: bytes) -> None:
    found, length = split_header_block(head)
    assert found == block
    assert length == len(block)
    assert head[:length] == found


def test_a_from_field_with_space_before_colon_is_a_field_not_an_mbox_line() -> None:
    block = parse_header_block(b"From : a@x\r\nTo: b@x\r\n\r\n")
    assert block.prefix == 0
    assert [f.name for f in block.fields] == ["From", "To"]


def test_the_header_block_is_cut_at_the_limit() -> None:
    head = b"To: a@x\r\n" + b"X-Filler: " + b"y" * (MAX_HEADER_BYTES * 2)
    block, length = split_header_block(head)
    assert length == MAX_HEADER_BYTES
    assert block == head[:MAX_HEADER_BYTES]


def test_fields_are_unfolded_and_located() -> None:
    head = b"Delivered-To:\r\n\tbob@example.com\r\nTo : a@x,\r\n  b@x\r\n\r\n"
    block = parse_header_block(head)
    dt, to = block.fields
    assert (dt.name, dt.value) == ("Delivered-To", "bob@example.com")
    assert head[dt.start : dt.name_end] == b"Delivered-To"
    assert head[dt.start : dt.end] == b"Delivered-To:\r\n\tbob@example.com\r\n"
    assert (to.name, to.value) == ("To", "a@x,  b@x")
    assert block.named("to") == [to]


def test_a_continuation_before_any_field_is_ignored() -> None:
    block = parse_header_block(b"  stray\r\nTo: a@x\r\n\r\n")
    assert [(f.name, f.value) for f in block.fields] == [("To", "a@x")]


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "addresses"),
    [
        ("alice@example.com", ["alice@example.com"]),
        ("Alice <Alice@EXAMPLE.COM>", ["Alice@example.com"]),
        ('"Smith, Alice" <alice@x.org>, "Jones, Bob" <bob@x.org>', ["alice@x.org", "bob@x.org"]),
        # RFC 5322 §3.4 groups
        ("undisclosed-recipients:;", []),
        ("unlisted-recipients:; (no To-header on input)", []),
        ("team: a@x.org, b@y.org;, c@z.org", ["a@x.org", "b@y.org", "c@z.org"]),
        ("a: b: c@x.org;;", ["c@x.org"]),
        # RFC 2047 §5: an encoded word is never (part of) an address
        ("=?utf-8?q?mallory=40x.org?= <bob@x.org>", ["bob@x.org"]),
        ("=?iso-8859-1?Q?M=FCller, Hans?= <hans@x.org>", ["hans@x.org"]),
        # comments (RFC 5322 §3.2.2), nested, and inside the address
        ("bob@x.org (Bob (the) Builder)", ["bob@x.org"]),
        ("(c) alice(at home)@x.org", ["alice@x.org"]),
        # obsolete syntax (RFC 5322 §4.4)
        ("<@relay.x.org,@gw.y.org:carol@x.org>", ["carol@x.org"]),
        ("bob . smith @ x . org", ["bob.smith@x.org"]),
        # quoted local parts
        ('"bob"@x.org', ["bob@x.org"]),
        ('"bob smith"@x.org', ['"bob smith"@x.org']),
        ('"a\\"b"@x.org', ['"a\\"b"@x.org']),
        # leniency
        ("John Smith bob@x.org", ["bob@x.org"]),
        ("a@x.org b@x.org", ["a@x.org", "b@x.org"]),
        ("<bob@x.org", ["bob@x.org"]),
        ('<<<bob@x.org>>>, ,,, "unterminated', ["bob@x.org"]),
        ("@@@, <>, alice@, @x.org, @", []),
        ("x@[192.0.2.1]", ["x@[192.0.2.1]"]),
        ("bob@x.org.", ["bob@x.org"]),
        ("Bücher <info@bücher.example>", ["info@xn--bcher-kva.example"]),
        ("jörg@x.org", ["jörg@x.org"]),
        ("\ufffdmallory@x.org, alice@x.org", ["alice@x.org"]),
        ("bob@exa\ufffdmple.org", []),
        ("", []),
    ],
)
def test_parse_addresses(value: str, addresses: list[str]) -> None:
    assert parse_addresses(value) == addresses


def test_headerregistry_breakers_do_not_break_us() -> None:
    # CPython's email.headerregistry raises AttributeError on the first of these.
    for value in ["unlisted-recipients:; (no To-header on input)", "a:;b", ":", ";", "<", ">"]:
        parse_addresses(value)


@pytest.mark.parametrize(
    ("domain", "normal"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("a..b", None),
        ("", None),
        ("[IPv6:2001:db8::1]", "[ipv6:2001:db8::1]"),
        ("x" * 300, None),
    ],
)
def test_normalise_domain(domain: str, normal: str | None) -> None:
    assert normalise_domain(domain) == normal


@pytest.mark.parametrize(
    ("value", "addresses"),
    [
        (
            "from mx.isp.example (mx [192.0.2.1]) by store.isp.example (Postfix) with ESMTP"
            " id 4F2A for <bob@example.com>; Tue, 2 Apr 2024 09:15:02 +0200",
            ["bob@example.com"],
        ),
        (
            "from a by b with LMTP id 1 (envelope-from <x@y.org>) for bob@example.com; date",
            ["bob@example.com"],
        ),
        ("from a by b id 1 for <a@x.org>, <b@x.org>; date", ["a@x.org", "b@x.org"]),
        ("from a (for <evil@example.com>) by b id 1; date", []),
        ("from a by b with ESMTP id 1; Tue, 2 Apr 2024 09:15:02 +0200", []),
        ("from for.example by b for; date", []),
        ("", []),
    ],
)
def test_received_for(value: str, addresses: list[str]) -> None:
    assert received_for(value) == addresses


@pytest.mark.parametrize(
    ("head", "mid"),
    [
        (b"Message-ID: <abc@x.org>\r\n\r\n", "<abc@x.org>"),
        (b"message-id:\r\n (comment) <abc@x.org> (more)\r\n\r\n", "<abc@x.org>"),
        (b"Message-ID: abc@x.org junk\r\n\r\n", "abc@x.org"),
        (b"Message-ID: \r\n\r\n", None),
        (b"Subject: none\r\n\r\nMessage-ID: <body@x.org>\r\n", None),
        (b"Message-ID: <first@x.org>\r\nMessage-ID: <second@x.org>\r\n\r\n", "<first@x.org>"),
        (b"\xff\xfe\x00", None),
    ],
)
def test_message_id(head: bytes, mid: str | None) -> None:
    assert message_id(head) == mid


def test_a_dot_atom_is_atext_or_non_ascii_between_single_dots() -> None:
    """The pattern names what atext is not (it compiles 30 times faster that way)."""
    import string

    from postbridge.engine.routing.recipients import _DOT_ATOM_RE

    atext = set(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
    for code in [*range(0x300), 0xFFFD, 0xFEFF, 0x10FFFF, 0x1F600]:
        char = chr(code)
        assert bool(_DOT_ATOM_RE.fullmatch(char)) is (char in atext or code >= 0x80), hex(code)
    assert _DOT_ATOM_RE.fullmatch("jörg.o'brien+tag")
    assert not _DOT_ATOM_RE.fullmatch("a..b") and not _DOT_ATOM_RE.fullmatch(".a")
