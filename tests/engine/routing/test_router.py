"""The router's rules, its trace headers, its words and its stored form."""

from __future__ import annotations

import logging

import pytest

from postbridge.engine.routing import router
from postbridge.engine.routing.decision import (
    DUPLICATE,
    NOT_LOCAL,
    OWN_ADDRESS,
    ROUTED,
    Candidate,
    RouteDecision,
)
from postbridge.engine.routing.router import (
    MAX_LISTED,
    route,
    suggest_envelope,
)
from tests.engine.routing.helpers import OFFICE, USER, mailbox

RECEIVED = b"Received: from mx.isp.example by store.isp.example; Tue, 2 Apr 2024 09:15:02 +0200\r\n"


def head(*lines: str, received: bool = False, top: tuple[str, ...] = ()) -> bytes:
    text = "".join(f"{line}\r\n" for line in top).encode()
    if received:
        text += RECEIVED
    return text + "".join(f"{line}\r\n" for line in lines).encode() + b"Subject: t\r\n\r\nbody\r\n"


# --- user mailbox ---------------------------------------------------------------------------


def test_user_mailbox_sends_everything_to_its_recipient_with_a_trace() -> None:
    decision = route(USER, head("To: someone@partner.example.org", "Cc: bob@example.com"))
    assert decision.recipients == ("alice@example.com",)
    assert decision.trace_headers == (
        b"X-Postbridge-Trace: alice\r\nX-Postbridge-Original-To: alice@isp.example\r\n"
    )
    assert decision.new_header_block is None  # the message itself is not rewritten
    assert decision.candidates == (
        Candidate("alice@isp.example", "mailbox", ROUTED, "user-mailbox", ("alice@example.com",)),
    )
    assert decision.explain().startswith(
        "Sent to alice@example.com because every message in the ISP mailbox alice@isp.example "
        "belongs to alice@example.com"
    )


def test_trace_values_cannot_inject_header_lines() -> None:
    box = mailbox(kind="user", username="alice\r\nBcc: mallory@evil.example", recipient="a@x.org")
    decision = route(box, head("To: a@x.org"))
    lines = decision.trace_headers.split(b"\r\n")
    assert all(not line.lower().startswith(b"bcc") for line in lines)
    assert decision.trace_headers.count(b"\r\n") == 2


def test_long_trace_values_are_folded() -> None:
    box = mailbox(kind="user", username="x" * 30 + " " + "y" * 60 + " z", recipient="a@x.org")
    trace = route(box, head("To: a@x.org")).trace_headers
    lines = trace.split(b"\r\n")[:-1]
    assert all(len(line) <= 78 for line in lines if b" " in line.strip())
    assert lines[2].startswith(b" ")


# --- envelope headers -----------------------------------------------------------------------


def test_the_brief_sentence_for_a_bcc_recipient() -> None:
    decision = route(OFFICE, head("To: alice@example.com", top=("Delivered-To: bob@example.com",)))
    assert decision.recipients == ("bob@example.com",)
    assert decision.explain().startswith(
        "Sent to bob@example.com because the ISP's Delivered-To header names bob@example.com "
        "(Bcc recipients are only visible there)."
    )


@pytest.mark.parametrize(
    ("top", "used", "recipient"),
    [
        (
            ("X-Original-To: carol@example.com", "Delivered-To: bob@example.com"),
            "X-Original-To",
            "carol@example.com",
        ),
        (
            ("Delivered-To: bob@example.com", "X-Original-To: carol@example.com"),
            "Delivered-To",
            "bob@example.com",
        ),
        (
            ("Delivered-To: company@isp.example", "Envelope-To: carol@example.com"),
            "Envelope-To",
            "carol@example.com",
        ),
    ],
)
def test_auto_uses_the_first_informative_envelope_header_from_the_top(
    top: tuple[str, ...], used: str, recipient: str
) -> None:
    decision = route(OFFICE, head("To: alice@example.com", received=True, top=top))
    assert (decision.envelope_header, decision.recipients) == (used, (recipient,))


def test_an_envelope_header_below_the_top_received_counts_when_configured() -> None:
    message = head("X-Envelope-To: carol@example.com", "To: alice@example.com", received=True)
    assert route(OFFICE, message).recipients == ("alice@example.com",)  # auto: not trusted
    configured = mailbox(**{**_office_settings(), "envelope_header": "X-Envelope-To"})
    assert route(configured, message).recipients == ("carol@example.com",)


def test_the_mailbox_own_address_is_skipped_only_above_a_received() -> None:
    own_then_hop = head(
        "Delivered-To: bob@example.com",
        "To: alice@example.com",
        received=True,
        top=("Delivered-To: company@isp.example",),
    )
    decision = route(OFFICE, own_then_hop)
    assert decision.envelope_header is None
    assert decision.recipients == ("alice@example.com",)


def test_envelope_none_uses_to_and_cc() -> None:
    box = mailbox(**{**_office_settings(), "envelope_header": "none"})
    decision = route(box, head("To: alice@example.com", top=("Delivered-To: bob@example.com",)))
    assert decision.recipients == ("alice@example.com",)
    assert decision.envelope_header is None
    assert "set to use no envelope header" in decision.explain()


# --- rules ------------------------------------------------------------------------------------


def _office_settings() -> dict[str, object]:
    return {
        "name": "office",
        "username": "company@isp.example",
        "local_domains": ["example.com", "example.net"],
        "postmaster": "admin@example.com",
        "map": {
            "sales@example.com": ["alice@example.com", "bob@example.com"],
            "*@example.net": "dave@example.com",
        },
    }


def test_rules_and_their_codes() -> None:
    decision = route(
        OFFICE,
        head("To: sales@example.com, x@example.net, BOB@EXAMPLE.COM, out@partner.example.org"),
    )
    assert decision.recipients == ("alice@example.com", "bob@example.com", "dave@example.com")
    assert [(c.address, c.outcome, c.rule) for c in decision.candidates] == [
        ("sales@example.com", ROUTED, "map sales@example.com"),
        ("x@example.net", ROUTED, "map *@example.net"),
        ("BOB@example.com", ROUTED, "self"),
        ("out@partner.example.org", NOT_LOCAL, ""),
    ]


def test_map_targets_are_final_not_looked_up_again() -> None:
    box = mailbox(
        local_domains=["example.com"],
        map={"a@example.com": "b@example.com", "b@example.com": "c@example.com"},
    )
    assert route(box, head("To: a@example.com")).recipients == ("b@example.com",)


def test_a_map_entry_does_not_make_an_outside_address_local() -> None:
    box = mailbox(
        local_domains=["example.com"],
        postmaster="admin@example.com",
        map={"info@partner.example.org": "alice@example.com"},
    )
    decision = route(box, head("To: info@partner.example.org"))
    assert decision.to_postmaster
    assert decision.candidates[0].outcome == NOT_LOCAL


def test_exact_map_entry_beats_the_wildcard() -> None:
    box = mailbox(
        local_domains=["example.com"],
        map={"*@example.com": "admin@example.com", "alice@example.com": "alice@example.com"},
    )
    decision = route(box, head("To: alice@example.com, nobody@example.com"))
    assert decision.recipients == ("alice@example.com", "admin@example.com")


def test_postmaster_gets_it_with_the_reason_in_a_header() -> None:
    decision = route(OFFICE, head("To: someone@partner.example.org"))
    assert decision.to_postmaster
    assert decision.recipients == ("admin@example.com",)
    assert b"X-Postbridge-Reason: no local recipient: every address in To/Cc is outside" in (
        decision.trace_headers
    )


def test_no_postmaster_means_quarantine_never_a_drop() -> None:
    box = mailbox(local_domains=["example.com"])
    decision = route(box, head("To: company@isp.example"))
    assert decision.recipients == ()
    assert decision.quarantine and "no postmaster is configured" in decision.quarantine
    assert decision.candidates[0].outcome == OWN_ADDRESS
    assert decision.explain().startswith("Quarantined, not delivered: no address routes")


def test_each_recipient_once_whatever_the_case() -> None:
    decision = route(OFFICE, head("To: Bob@Example.com, bob@EXAMPLE.com", "Cc: sales@example.com"))
    assert decision.recipients == ("bob@example.com", "alice@example.com")
    assert [c.outcome for c in decision.candidates] == [ROUTED, DUPLICATE, ROUTED]


def test_a_spam_run_of_addresses_is_listed_only_in_part() -> None:
    outside = ", ".join(f"u{i}@partner.example.org" for i in range(MAX_LISTED + 50))
    decision = route(OFFICE, head(f"To: {outside}, alice@example.com"))
    assert decision.recipients == ("alice@example.com",)
    assert len(decision.candidates) == MAX_LISTED + 1
    assert "50 more unrouted addresses are not listed." in decision.explain()


# --- loop guard and rewriting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("traces", "limit", "quarantined"), [(0, 0, False), (1, 0, True), (3, 3, False), (4, 3, True)]
)
def test_loop_guard(traces: int, limit: int, quarantined: bool) -> None:
    message = head("To: alice@example.com", top=("x-postbridge-trace: office",) * traces)
    decision = route(OFFICE, message, loop_limit=limit)
    assert (decision.quarantine is not None) is quarantined
    if quarantined:
        assert decision.recipients == ()
        assert f"{traces} times (the limit is {limit})" in (decision.quarantine or "")


def test_delivered_to_rename_keeps_everything_else() -> None:
    message = (
        b"Delivered-To: bob@example.com\r\nX-Delivered-To: keep@example.com\r\n"
        b"delivered-to:\tcarol@example.com\r\n (folded)\r\nTo: bob@example.com\r\n\r\n"
        b"Delivered-To: in the body\r\n"
    )
    decision = route(OFFICE, message)
    assert decision.new_header_block == (
        b"X-Postbridge-Delivered-To: bob@example.com\r\nX-Delivered-To: keep@example.com\r\n"
        b"X-Postbridge-Delivered-To:\tcarol@example.com\r\n (folded)\r\nTo: bob@example.com\r\n\r\n"
    )


# --- safety net and storage -----------------------------------------------------------------


def test_an_internal_error_quarantines_instead_of_raising(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(head: bytes) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(router, "parse_header_block", broken)
    with caplog.at_level(logging.ERROR, logger="postbridge.routing"):
        decision = route(OFFICE, b"To: alice@example.com\r\n\r\n")
    assert decision.recipients == ()
    assert decision.quarantine and "internal error" in decision.quarantine
    assert decision.trace_headers == b"X-Postbridge-Trace: office\r\n"
    assert "boom" in caplog.text


def test_json_round_trip_keeps_every_byte() -> None:
    message = b"\xef\xbb\xbfDelivered-To: b\xc3\xb6b@example.com\r\nTo: x@y\r\n\r\n"
    decision = route(OFFICE, message)
    assert decision.new_header_block is not None
    again = RouteDecision.from_json(decision.to_json())
    assert again == decision
    assert again.explain() == decision.explain()


@pytest.mark.parametrize(
    "text", ["", "[]", "{}", '{"version": 99}', '{"version": 1, "recipients": [1]}']
)
def test_from_json_rejects_what_it_did_not_write(text: str) -> None:
    with pytest.raises(ValueError, match="not a stored routing decision"):
        RouteDecision.from_json(text)


# --- suggest-envelope -------------------------------------------------------------------------


def _isp_message(i: int, *top: str) -> bytes:
    return head(f"To: list{i}@partner.example.org", received=True, top=top)


def test_suggests_the_header_that_names_local_addresses() -> None:
    heads = [_isp_message(i, f"Delivered-To: user{i}@example.com") for i in range(9)]
    heads.append(_isp_message(9, "Delivered-To: company@isp.example"))
    suggestion = suggest_envelope(heads, OFFICE)
    assert suggestion.header == suggestion.setting == "Delivered-To"
    assert "Delivered-To names a local address in 9 of 10 messages" in suggestion.explain()
    assert suggestion.explain().startswith('Use envelope_header = "Delivered-To".')


def test_suggests_x_original_to_for_postfix_catch_all() -> None:
    heads = [
        _isp_message(i, f"X-Original-To: user{i}@example.com", "Delivered-To: company@isp.example")
        for i in range(4)
    ]
    suggestion = suggest_envelope(heads, OFFICE)
    assert suggestion.header == "X-Original-To"
    assert "names only this mailbox's own or outside addresses" in suggestion.explain()


def test_suggests_nothing_when_no_header_is_consistent() -> None:
    heads = [_isp_message(i) for i in range(5)] + [_isp_message(5, "X-Rcpt-To: a@example.com")]
    suggestion = suggest_envelope(heads, OFFICE)
    assert suggestion.header is None
    assert suggestion.setting == "none"
    assert suggestion.explain().startswith(
        "None found: routing will use To/Cc, and Bcc recipients cannot be recovered."
    )
    assert "X-Rcpt-To names a local address in 1 of 6 messages." in suggestion.explain()


def test_suggest_with_no_messages() -> None:
    suggestion = suggest_envelope([], OFFICE)
    assert suggestion.header is None
    assert suggestion.explain() == "No messages to examine."


def test_configured_received_without_a_for_clause_falls_back_in_words() -> None:
    box = mailbox(**{**_office_settings(), "envelope_header": "Received"})
    decision = route(box, head("To: alice@example.com", received=True))
    assert decision.recipients == ("alice@example.com",)
    assert "The topmost Received header has no 'for' clause, so routing used To and Cc" in (
        decision.explain()
    )
