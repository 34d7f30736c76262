"""Ledger and spool: durable states, idempotent listing, crash leftovers cleaned."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from postbridge.engine.errors import StorageError
from postbridge.engine.ledger import (
    DELETING,
    DELIVERED,
    QUARANTINED,
    REMOVED,
    SCHEMA_VERSION,
    SPOOLED,
    Ledger,
    Settlement,
)
from postbridge.engine.spool import BUFFER_LIMIT, Spool


def test_schema_version_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    ids = ledger.add_listed("box", [("u1", 10), ("u2", 20)])
    ledger.close()
    ledger = Ledger(path)
    assert ledger.add_listed("box", [("u1", 10)]) == {"u1": ids["u1"]}
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION
    ledger.close()


def test_listing_gives_each_row_a_key_for_good(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path, clock=lambda: 1764440000.5)
    ids = ledger.add_listed("box", [("u1", 10), ("u2", 20)])
    keys = ledger.keys(list(ids.values()))
    assert keys[ids["u1"]].startswith(f"1764440000.pb{ids['u1']}_")
    assert keys[ids["u1"]] != keys[ids["u2"]]
    ledger.close()
    ledger = Ledger(path)
    again = ledger.add_listed("box", [("u1", 10), ("u3", 5)])  # listed anew: same key
    assert ledger.keys([again["u1"]]) == {ids["u1"]: keys[ids["u1"]]}
    ledger.mark_spooled(again["u3"], key="other", size=5, sha256="s", meta={})
    row = ledger.get(again["u3"])
    assert (
        row is not None and row.key is not None and row.key.startswith(f"{int(row.listed_at)}.pb")
    )
    ledger.close()


def test_settle_records_a_window_in_one_go(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ids = ledger.add_listed("box", [("u1", 10), ("u2", 20), ("u3", 30)])
    ledger.settle(
        [
            Settlement(
                id=ids["u1"],
                state=DELIVERED,
                size=11,
                sha256="h1",
                meta={"subject": "One", "sender": "ann@isp.example"},
                recipients=["a@x.test"],
                route='{"r": 1}',
                outcomes=[("a@x.test", "accepted", "saved"), ("b@x.test", "duplicate", "seen")],
                copies=("<m@x>", "body", ("a@x.test", "b@x.test")),
            ),
            Settlement(
                id=ids["u2"],
                state=SPOOLED,
                size=21,
                sha256="h2",
                meta={},
                recipients=["a@x.test", "c@x.test"],
                route="{}",
                outcomes=[("a@x.test", "temporary", "later")],
            ),
            Settlement(
                id=ids["u3"],
                state=QUARANTINED,
                size=31,
                sha256="h3",
                meta={},
                recipients=[],
                route="{}",
                error="no local recipient",
            ),
        ],
        durable=False,
    )
    one, two, three = (ledger.get(ids[u]) for u in ("u1", "u2", "u3"))
    assert one is not None and one.state == DELIVERED and one.delivered_at is not None
    assert (one.size, one.sha256, one.subject, one.recipients) == (11, "h1", "One", ("a@x.test",))
    assert one.attempts == 1
    assert ledger.recipient_states(ids["u1"])["b@x.test"].state == "duplicate"
    assert ledger.copies_seen(message_id="<m@x>", body_sha256="body", since=0, exclude=0) == {
        "a@x.test",
        "b@x.test",
    }
    assert two is not None and two.state == SPOOLED and two.delivered_at is None
    states = ledger.recipient_states(ids["u2"])
    assert (states["a@x.test"].state, states["c@x.test"].state) == ("temporary", "pending")
    assert three is not None and three.state == QUARANTINED
    assert three.last_error == "no local recipient" and three.attempts == 0
    assert [r.id for r in ledger.in_state(SPOOLED)] == [ids["u2"]]
    ledger.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StorageError, match="newer Postbridge"):
        Ledger(path)


def test_state_transitions_and_partial_recipients(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    mid = ledger.add_listed("box", [("u1", 10)])["u1"]
    ledger.mark_spooled(mid, key="k1", size=10, sha256="x", meta={"subject": "Hi"})
    ledger.set_route(mid, recipients=["a@x.test", "b@x.test"], route="{}")
    ledger.record_delivery(
        mid,
        outcomes=[("a@x.test", "accepted", "ok"), ("b@x.test", "temporary", "later")],
        final_state=None,
        error="later",
    )
    row = ledger.get(mid)
    assert row is not None and row.state == SPOOLED and row.attempts == 1
    states = ledger.recipient_states(mid)
    assert states["a@x.test"].state == "accepted"
    assert states["b@x.test"].state == "temporary"
    ledger.record_delivery(mid, outcomes=[("b@x.test", "accepted", "ok")], final_state=DELIVERED)
    row = ledger.get(mid)
    assert row is not None and row.state == DELIVERED and row.delivered_at is not None
    assert ledger.mark_gone("box", set()) == 1
    row = ledger.get(mid)
    assert row is not None and row.server == REMOVED


def test_requeue_from_quarantine_with_new_recipient(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    mid = ledger.add_listed("box", [("u1", 10)])["u1"]
    ledger.mark_spooled(mid, key="k1", size=10, sha256="x", meta={})
    ledger.set_route(mid, recipients=["a@x.test"], route="{}")
    ledger.record_delivery(
        mid, outcomes=[("a@x.test", "permanent", "no")], final_state=QUARANTINED, error="no"
    )
    assert [r.id for r in ledger.in_state(QUARANTINED)] == [mid]
    ledger.requeue(mid, recipients=["admin@x.test"])
    row = ledger.get(mid)
    assert row is not None and row.state == SPOOLED and row.recipients == ("admin@x.test",)
    assert set(ledger.recipient_states(mid)) == {"admin@x.test"}


def test_spool_commit_is_durable_and_partial_files_cleaned(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    writer = spool.writer(7)
    writer.write(b"Subject: x\r\n\r\nbody\r\n")
    done = writer.commit()
    assert done.path == spool.path_for(7)
    assert done.path.read_bytes() == b"Subject: x\r\n\r\nbody\r\n"
    assert done.head.startswith(b"Subject: x")
    leftover = spool.writer(8)
    leftover.write(b"half a mess")
    leftover.write(b"age" * (BUFFER_LIMIT // 3 + 1))  # past the buffer: a .part file exists
    assert leftover._fh is not None
    leftover._fh.close()
    # simulate a crash: the writer is never committed
    assert spool.clean_partial() >= 1
    assert not list((tmp_path / "spool" / "tmp").glob("*.part"))
    assert spool.ids() == {7}


def test_spool_write_failure_is_a_storage_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    tmp = tmp_path / "spool" / "tmp"
    tmp.rmdir()
    tmp.write_bytes(b"not a folder")  # any OSError will do; this one happens even as root
    small = spool.writer(1)
    small.write(b"Subject: x\r\n\r\n")
    with pytest.raises(StorageError, match="data folder"):
        small.commit()  # a small message touches the disk only then
    big = spool.writer(2)
    with pytest.raises(StorageError, match="data folder"):
        big.write(b"x" * (BUFFER_LIMIT + 1))


def test_spool_small_message_touches_the_disk_only_at_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    writer = spool.writer(3)
    writer.write(b"Subject: small\r\n\r\n")
    writer.write(b"x" * 1000 + b"\r\n")
    assert not list((tmp_path / "spool" / "tmp").iterdir())
    done = writer.commit()
    assert done.path.read_bytes() == b"Subject: small\r\n\r\n" + b"x" * 1000 + b"\r\n"
    assert done.size == len(done.path.read_bytes())


def test_spool_big_message_streams_to_its_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    writer = spool.writer(4)
    chunk = b"y" * 65_534 + b"\r\n"
    for _ in range(3 * BUFFER_LIMIT // len(chunk)):
        writer.write(chunk)
    part = writer.temp
    assert part.exists()
    assert part.stat().st_size >= BUFFER_LIMIT  # memory holds no more than the buffer
    done = writer.commit()
    assert done.size == (3 * BUFFER_LIMIT // len(chunk)) * len(chunk) == done.path.stat().st_size
    assert not part.exists()
    aborted = spool.writer(5)
    for _ in range(5):
        aborted.write(chunk)
    aborted.abort()
    assert not aborted.temp.exists()


def test_deleting_is_durable_and_removed_is_found_again_if_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DELE follows a durable "deleting"; "removed" (after the QUIT) is not worth a disk
    flush: lost in a power cut, the next listing finds the message gone all the same."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ids = ledger.add_listed("box", [("u1", 10), ("u2", 20)])
    flushed: list[bool] = []
    real = Ledger._transaction

    def spy(self: Ledger, durable: bool) -> Iterator[sqlite3.Connection]:
        flushed.append(durable)
        return real(self, durable)

    monkeypatch.setattr(Ledger, "_transaction", spy)
    ledger.mark_server(list(ids.values()), DELETING)
    ledger.mark_server([ids["u1"]], REMOVED)
    assert flushed == [True, False]
    # As if the power went before "removed" of u2 reached the disk: u2 is still
    # "deleting", and the next session's listing (without u2) says removed.
    row = ledger.get(ids["u2"])
    assert row is not None and row.server == DELETING
    assert ledger.mark_gone("box", set()) == 1
    row = ledger.get(ids["u2"])
    assert row is not None and row.server == REMOVED
    ledger.close()


def test_by_uid_reads_only_the_rows_asked_for(tmp_path: Path) -> None:
    """A session looks up what the server lists now, not the mailbox's whole history
    (which grows by every message ever collected)."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ids = ledger.add_listed("box", [(f"u{n}", n) for n in range(1200)])
    ledger.add_listed("other", [("u1", 1)])
    asked = [f"u{n}" for n in range(0, 1200, 2)] + ["never-seen"]
    known = ledger.by_uid("box", asked)
    assert sorted(known) == sorted(asked[:-1])  # 600: more than one chunk of 500
    assert all(known[u].id == ids[u] and known[u].source == "box" for u in known)
    assert ledger.by_uid("box", []) == {}
    ledger.close()
