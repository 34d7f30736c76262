"""The hand-written routing corpus: each message of tests/data/routing routed as
tests/data/routing/expected.toml says, with the reason recorded."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from postbridge.engine.routing.recipients import split_header_block
from postbridge.engine.routing.router import TRACE_HEADER, RouteDecision, route
from tests.engine.routing.helpers import mailbox

DATA = Path(__file__).resolve().parents[2] / "data" / "routing"
TABLE: dict[str, Any] = tomllib.loads((DATA / "expected.toml").read_text(encoding="utf-8"))
MESSAGES: list[dict[str, Any]] = TABLE["message"]


def _settings(entry: dict[str, Any]) -> dict[str, Any]:
    settings = dict(TABLE["mailbox"][entry["mailbox"]])
    settings["name"] = entry["mailbox"]
    if "envelope_header" in entry:
        settings["envelope_header"] = entry["envelope_header"]
    return settings


def test_every_message_has_an_expectation() -> None:
    files = {p.name for p in DATA.glob("*.eml")}
    listed = [m["file"] for m in MESSAGES]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert files == set(listed)
    assert len(files) >= 40


@pytest.mark.parametrize("entry", MESSAGES, ids=[m["file"] for m in MESSAGES])
def test_routes_as_expected(entry: dict[str, Any]) -> None:
    settings = _settings(entry)
    box = mailbox(**settings)
    raw = (DATA / entry["file"]).read_bytes()
    decision = route(box, raw)

    assert list(decision.recipients) == entry["recipients"], decision.explain()
    assert decision.envelope_header == (entry["envelope"] or None), decision.explain()
    assert decision.to_postmaster is entry.get("postmaster", False)
    if "quarantine" in entry:
        assert decision.quarantine is not None
        assert entry["quarantine"] in decision.quarantine
        assert decision.recipients == ()
    else:
        assert decision.quarantine is None
        assert decision.recipients
    for address in entry.get("absent", []):
        assert address not in decision.recipients
    found = {c.address: c.outcome for c in decision.candidates}
    for address, outcome in entry.get("outcomes", {}).items():
        assert found.get(address) == outcome, decision.explain()

    block, length = split_header_block(raw)
    if "renamed" in entry:
        assert decision.new_header_block == (DATA / entry["renamed"]).read_bytes()
    elif b"delivered-to" not in block.lower():
        assert decision.new_header_block is None
    # What the poll cycle delivers: our trace, then the (rewritten) header block, then the body.
    delivered = decision.trace_headers + (decision.new_header_block or block) + raw[length:]
    assert delivered.startswith(f"{TRACE_HEADER}: {entry['mailbox']}\r\n".encode())
    assert delivered.endswith(raw[length:])
    # the reason survives the ledger
    assert RouteDecision.from_json(decision.to_json()) == decision
    assert decision.explain()


def test_the_corpus_covers_every_envelope_header() -> None:
    used = {m["envelope"] for m in MESSAGES}
    assert used >= {
        "Delivered-To",
        "X-Original-To",
        "Envelope-To",
        "X-Envelope-To",
        "X-Rcpt-To",
        "Received",
        "",
    }
