"""What the tray says and when: notification words and the once-per-change rule (no Qt)."""

from __future__ import annotations

import time

from postbridge.app.status import (
    AppState,
    NotificationPolicy,
    delivered_text,
    recipient_labels,
    result_text,
    tooltip,
)
from postbridge.app.worker import Timing
from postbridge.engine.events import CycleFinished, MailboxSummary


def summary(name: str, **kw: object) -> MailboxSummary:
    return MailboxSummary(mailbox=name, **kw)  # type: ignore[arg-type]


def test_delivered_text_names_each_recipient_by_local_part_most_first() -> None:
    summaries = [
        summary(
            "office", delivered=6, per_recipient={"bob@example.com": 4, "carol@example.com": 2}
        ),
        summary("alice", delivered=5, per_recipient={"alice@example.com": 5}),
    ]
    assert delivered_text(summaries) == "11 held messages delivered — alice 5, bob 4, carol 2"


def test_delivered_text_singular_and_single_recipient() -> None:
    one = [summary("alice", delivered=1, per_recipient={"alice@example.com": 1})]
    assert delivered_text(one) == "1 held message delivered to alice"
    assert delivered_text([summary("alice")]) is None


def test_same_local_part_in_two_domains_uses_whole_addresses() -> None:
    labels = recipient_labels(["info@example.com", "info@example.org", "bob@example.com"])
    assert labels == {
        "info@example.com": "info@example.com",
        "info@example.org": "info@example.org",
        "bob@example.com": "bob",
    }


def test_many_recipients_are_summed_after_five() -> None:
    per = {f"user{i}@example.com": 10 - i for i in range(8)}
    text = delivered_text([summary("office", delivered=52, per_recipient=per)])
    assert text == (
        "52 held messages delivered — user0 10, user1 9, user2 8, user3 7, user4 6, 3 more 12"
    )


def test_policy_mentions_quarantine_in_the_same_notification() -> None:
    policy = NotificationPolicy()
    finished = CycleFinished(
        (summary("alice", delivered=2, quarantined=1, per_recipient={"alice@example.com": 2}),)
    )
    [note] = policy.after_cycle(finished)
    assert (
        note.text
        == "2 held messages delivered to alice.\n1 message is in quarantine (see Activity)."
    )


def test_needs_user_errors_once_per_change_and_once_when_cleared() -> None:
    policy = NotificationPolicy()
    wrong = summary("alice", error="wrong password", error_needs_user=True)
    down = summary("alice", error="server down", error_transient=True)
    assert [n.text for n in policy.after_cycle(CycleFinished((wrong,)))] == ["wrong password"]
    assert policy.after_cycle(CycleFinished((wrong,))) == []
    assert policy.after_cycle(CycleFinished((down,))) == []  # transient: icon and tooltip only
    assert policy.after_cycle(CycleFinished((wrong,))) == []  # still the same problem
    cert = summary("alice", error="certificate changed", error_needs_user=True)
    assert [n.text for n in policy.after_cycle(CycleFinished((cert,)))] == ["certificate changed"]
    ok = summary("alice")
    notes = policy.after_cycle(CycleFinished((ok,)))
    assert [n.text for n in notes] == ["This mailbox is collecting mail again."]
    assert policy.after_cycle(CycleFinished((ok,))) == []


def test_transient_errors_are_never_notified() -> None:
    policy = NotificationPolicy()
    down = summary("alice", error="server down", error_transient=True)
    for _ in range(3):
        assert policy.after_cycle(CycleFinished((down,))) == []


def test_config_problem_and_notices_once() -> None:
    policy = NotificationPolicy()
    assert len(policy.config_problem("bad key")) == 1
    assert policy.config_problem("bad key") == []
    assert len(policy.notice("alice", "EXPIRE 0")) == 1
    assert policy.notice("alice", "EXPIRE 0") == []


def test_result_text() -> None:
    assert result_text(CycleFinished(())) == "no mailboxes are set up"
    assert result_text(CycleFinished((summary("a"),))) == "no new mail"
    both = CycleFinished((summary("a", delivered=3, deferred=1), summary("b", error="down")))
    assert result_text(both) == "3 delivered, 1 waiting for a retry, b failed"
    assert result_text(CycleFinished((summary("b", error="down"),))) == "b: down"


def test_tooltip_lines() -> None:
    now = time.mktime((2026, 3, 2, 12, 0, 0, 0, 0, -1))
    text = tooltip(
        state=AppState.IDLE,
        last_poll=now - 300,
        last_result="9 delivered",
        next_poll=now + 600,
        now=now,
    )
    assert text == (
        "Postbridge: waiting for the next poll\nLast poll 11:55: 9 delivered\nNext poll 12:10"
    )
    polling = tooltip(
        state=AppState.POLLING,
        last_poll=None,
        last_result=None,
        next_poll=None,
        progress="collecting mail: 3 of 9",
        now=now,
    )
    assert polling == "Postbridge: collecting mail: 3 of 9\nNot polled yet"
    assert all(
        len(line) <= 60
        for line in tooltip(
            state=AppState.ERROR, last_poll=now, last_result="x" * 200, next_poll=None, now=now
        ).split("\n")
    )


def test_backoff_doubles_up_to_an_hour() -> None:
    timing = Timing(minute=60.0)
    assert [timing.delay_after(15, n) / 60 for n in range(5)] == [15, 15, 30, 60, 60]
    assert timing.delay_after(120, 3) / 60 == 120  # a long interval is never shortened
