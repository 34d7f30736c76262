"""Ledger and spool: durable states, idempotent listing, crash leftovers cleaned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from postbridge.engine.errors import StorageError
from postbridge.engine.ledger import (
    DELIVERED,
    QUARANTINED,
    REMOVED,
    SCHEMA_VERSION,
    SPOOLED,
    Ledger,
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
