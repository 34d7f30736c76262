"""Property tests: extraction and routing never raise on any header bytes, and never
yield a recipient outside the local domains except a map target or the postmaster."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postbridge.engine.routing.decision import ROUTED
from postbridge.engine.routing.recipients import (
    domain_of,
    message_id,
    parse_addresses,
    parse_header_block,
    received_for,
    split_header_block,
)
from postbridge.engine.routing.router import RouteDecision, route
from tests.engine.routing.helpers import USER, mailbox

# Fast by default, more thorough in CI.
EXAMPLES = 1000 if os.environ.get("CI") == "true" else 100
PROFILE = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

BOX = mailbox(
    username="company@example.com",
    local_domains=["example.com", "example.net"],
    postmaster="admin@example.org",
    map={
        "sales@example.com": ["alice@example.com", "ext@partner.example.org"],
        "*@example.net": "catchall@elsewhere.example",
    },
)
ALLOWED_OUTSIDE = {"admin@example.org", "ext@partner.example.org", "catchall@elsewhere.example"}
NO_POSTMASTER = mailbox(local_domains=["example.com"], envelope_header="Delivered-To")

NAMES = [
    "To", "Cc", "Resent-To", "Resent-Cc", "Delivered-To", "X-Original-To", "Envelope-To",
    "X-Envelope-To", "X-Rcpt-To", "Received", "Message-ID", "X-Postbridge-Trace", "From",
    "Subject", "to", "DELIVERED-TO", "From ", "", " ", "\t",
]  # fmt: skip
PIECES = [
    "alice@example.com", "Bob@EXAMPLE.NET", "sales@example.com", "out@partner.example.org",
    "x@sub.example.com", "company@example.com", "<", ">", ",", ";", ":", "@", ".", '"', "(", ")",
    "\\", "[", "]", " ", "\t", "=?utf-8?q?a=40example.com?=", "undisclosed-recipients:;",
    "for", "for <a@example.com>", "\u00e9", "\ufffd", "@relay.example:",
]  # fmt: skip
ENDINGS = [b"\r\n", b"\n", b"\r", b"\r\n ", b"\n\t", b""]

values = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
fields = st.tuples(st.sampled_from(NAMES), values, st.sampled_from(ENDINGS)).map(
    lambda t: t[0].encode() + b": " + t[1].encode("utf-8") + t[2]
)
# Header-shaped bytes (most interesting) mixed with raw noise and 8-bit bytes.
heads = st.lists(st.one_of(fields, st.binary(max_size=40)), max_size=14).map(b"".join)


@PROFILE
@given(st.one_of(heads, st.binary(max_size=600)))
def test_extraction_never_raises(head: bytes) -> None:
    block, length = split_header_block(head)
    assert head[:length] == block
    parsed = parse_header_block(head)
    message_id(head)
    for field in parsed.fields:
        for address in [*parse_addresses(field.value), *received_for(field.value)]:
            assert "@" in address
            assert "\r" not in address and "\n" not in address


@PROFILE
@given(st.text(max_size=200))
def test_address_parsing_never_raises_on_any_text(value: str) -> None:
    for address in parse_addresses(value):
        local, _, domain = address.rpartition("@")
        assert local and domain == domain.lower()


def _routed_from_headers_are_local(decision: RouteDecision, local: set[str]) -> None:
    for candidate in decision.candidates:
        if candidate.outcome == ROUTED:
            assert domain_of(candidate.address) in local


@PROFILE
@given(heads)
def test_route_never_raises_and_never_relays(head: bytes) -> None:
    decision = route(BOX, head)
    assert decision.recipients or decision.quarantine
    assert decision.quarantine is None or "internal error" not in decision.quarantine
    for recipient in decision.recipients:
        assert domain_of(recipient) in BOX.local_domains or recipient in ALLOWED_OUTSIDE
    _routed_from_headers_are_local(decision, set(BOX.local_domains))
    assert len(set(decision.recipients)) == len(decision.recipients)
    assert "company@example.com" not in decision.recipients
    assert RouteDecision.from_json(decision.to_json()) == decision
    decision.explain()

    strict = route(NO_POSTMASTER, head)
    assert strict.quarantine is not None or strict.recipients
    assert all(domain_of(r) == "example.com" for r in strict.recipients)

    user = route(USER, head, loop_limit=10**6)
    assert user.recipients == ("alice@example.com",)


@PROFILE
@given(heads)
def test_delivered_to_rename_changes_only_field_names(head: bytes) -> None:
    before = parse_header_block(head)
    new = route(BOX, head).new_header_block
    if new is None:
        assert not before.prefix and not before.named("Delivered-To")
        return
    after = parse_header_block(new)
    assert after.prefix == 0
    renamed = len(before.named("Delivered-To"))
    assert len(new) == len(before.raw) - before.prefix + renamed * len("X-Postbridge-")
    assert not after.named("Delivered-To")
    assert [f.value for f in after.fields] == [f.value for f in before.fields]
    assert [f.name for f in after.fields] == [
        "X-Postbridge-Delivered-To" if f.key == "delivered-to" else f.name for f in before.fields
    ]
