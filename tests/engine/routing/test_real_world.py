"""Route every message of the shared real-world corpus (../shared/corpus, 373 fixtures
from other mail projects, many malformed): nothing raises, everything gets a
recipient or a quarantine reason. Skips when the corpus is absent, unless CI=true."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postbridge.engine.routing.recipients import MAX_HEADER_BYTES, message_id
from postbridge.engine.routing.router import RouteDecision, route
from tests.engine.routing.helpers import USER, mailbox

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO.parent / "shared" / "corpus"
NOT_MESSAGES = {"README.md", "manifest.tsv"}

GLOBAL = mailbox(
    username="company@isp.example",
    local_domains=["example.com", "example.org", "example.net"],
    postmaster="admin@example.com",
)
GLOBAL_NO_POSTMASTER = mailbox(
    username="company", local_domains=["example.com"], envelope_header="Delivered-To"
)


def _messages() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and "LICENSES" not in p.parts and p.name not in NOT_MESSAGES
    )


def test_every_corpus_message_is_routed_or_quarantined() -> None:
    messages = _messages()
    if not messages:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the shared corpus is missing at {CORPUS}")
        pytest.skip(f"no shared corpus at {CORPUS}")
    assert len(messages) >= 373
    problems: list[str] = []
    for path in messages:
        head = path.read_bytes()[:MAX_HEADER_BYTES]
        message_id(head)
        for box in (GLOBAL, GLOBAL_NO_POSTMASTER, USER):
            decision = route(box, head)
            name = f"{path.relative_to(CORPUS)} ({box.name}, {box.envelope_header})"
            if not decision.recipients and not decision.quarantine:
                problems.append(f"{name}: neither a recipient nor a quarantine reason")
            if decision.quarantine and "internal error" in decision.quarantine:
                problems.append(f"{name}: {decision.quarantine}")
            if box is GLOBAL and not decision.recipients:
                problems.append(f"{name}: no recipient although a postmaster is set")
            if box is USER and decision.recipients != ("alice@example.com",):
                problems.append(f"{name}: user mailbox routed to {decision.recipients}")
            if RouteDecision.from_json(decision.to_json()) != decision:
                problems.append(f"{name}: the stored decision does not read back")
            decision.explain()
    assert not problems, "\n".join(problems)
