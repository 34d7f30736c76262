"""The ledger: a SQLite database that knows where every message is.

Each message of each source (an ISP mailbox, or an ATRN session) has one row,
keyed by ``(source, uid)`` where ``uid`` is the server's UIDL (or a content
hash where the server has none). Its ``state`` moves

    listed -> spooled -> delivered
       |             \\-> quarantined
       \\-> delivered (delivered completely in the pass that downloaded it)

and, separately, ``server`` records what is known of the ISP copy:
``present`` -> ``deleting`` (DELE sent) -> ``removed`` (QUIT confirmed it, or
the message is no longer listed). A message is deleted at the ISP only once
its row says ``delivered`` or ``quarantined`` (the spool keeps quarantined
mail), which is what makes a crash at any moment lose nothing: the next cycle
reads the ledger and carries on from the last committed state.

Per-recipient outcomes live in ``recipients``, so a message accepted for
alice but deferred for bob is later delivered to bob only.

Schema changes are forward migrations counted in ``PRAGMA user_version``.
The database runs in WAL mode. A commit is never lost when the process is
killed (the operating system has it), but only a commit made with
``synchronous=FULL`` fsyncs the log; in WAL mode that fsync makes every
earlier commit durable as well, since the log is written in order. So the
ordinary bookkeeping commits with ``synchronous=NORMAL`` (no fsync: about a
tenth of the cost), and the commits that precede a step which cannot be taken
back are durable (``transaction(durable=True)``):

* outcomes that say a server *accepted* a message: a power cut right after
  them must not deliver it again (the window DESIGN.md allows is this one
  transaction). Maildir copies need not wait for it: they are named by the
  row's key, given when the row is listed, so a lost record only means the
  copy is found again (the poll cycle settles them with :meth:`Ledger.settle`);
* ``add_listed``: the delivery keys of the rows it makes;
* ``mark_server``: ``deleting`` is written before DELE, so every delivered
  state is on disk before the ISP may delete anything; ``removed`` ends an
  ATRN hand-over and a session.

After a power cut the ledger is back at least at its last durable commit,
which may be older than the last step taken: a message then downloads or
delivers again, never goes missing.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from postbridge.engine.errors import StorageError

LISTED = "listed"
SPOOLED = "spooled"
DELIVERED = "delivered"
QUARANTINED = "quarantined"

PRESENT = "present"
DELETING = "deleting"
REMOVED = "removed"

_MIGRATIONS: tuple[str, ...] = (
    # 1: messages, per-recipient outcomes, mailbox status
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        uid TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        server TEXT NOT NULL DEFAULT 'present',
        key TEXT,
        sha256 TEXT,
        message_id TEXT,
        sender TEXT,
        subject TEXT,
        envelope_from TEXT,
        recipients TEXT,
        route TEXT,
        listed_at REAL NOT NULL,
        spooled_at REAL,
        delivered_at REAL,
        removed_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        UNIQUE (source, uid)
    );
    CREATE INDEX messages_state ON messages (state);
    CREATE INDEX messages_time ON messages (listed_at);
    CREATE TABLE recipients (
        message INTEGER NOT NULL REFERENCES messages (id),
        address TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (message, address)
    );
    CREATE TABLE mailbox_status (
        mailbox TEXT PRIMARY KEY,
        last_success REAL,
        last_error TEXT,
        last_error_at REAL
    );
    """,
    # 2: copies of one message per recipient, for duplicate suppression in global mailboxes
    """
    CREATE TABLE copies (
        message INTEGER NOT NULL REFERENCES messages (id),
        message_id TEXT NOT NULL,
        body_sha256 TEXT NOT NULL,
        recipient TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX copies_lookup ON copies (message_id, body_sha256);
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)

_M = TypeVar("_M", bound=Callable[..., Any])


@dataclass(frozen=True)
class Row:
    id: int
    source: str
    uid: str
    size: int
    state: str
    server: str
    key: str | None
    sha256: str | None
    message_id: str | None
    sender: str | None
    subject: str | None
    envelope_from: str | None
    recipients: tuple[str, ...]
    route: str | None
    listed_at: float
    spooled_at: float | None
    delivered_at: float | None
    removed_at: float | None
    attempts: int
    last_error: str | None

    @classmethod
    def from_sql(cls, r: sqlite3.Row) -> Row:
        recipients = tuple(json.loads(r["recipients"])) if r["recipients"] else ()
        return cls(
            id=r["id"],
            source=r["source"],
            uid=r["uid"],
            size=r["size"],
            state=r["state"],
            server=r["server"],
            key=r["key"],
            sha256=r["sha256"],
            message_id=r["message_id"],
            sender=r["sender"],
            subject=r["subject"],
            envelope_from=r["envelope_from"],
            recipients=recipients,
            route=r["route"],
            listed_at=r["listed_at"],
            spooled_at=r["spooled_at"],
            delivered_at=r["delivered_at"],
            removed_at=r["removed_at"],
            attempts=r["attempts"],
            last_error=r["last_error"],
        )


@dataclass(frozen=True)
class RecipientState:
    address: str
    state: str  # pending | accepted | temporary | permanent
    reason: str | None
    at: float


@dataclass(frozen=True)
class MailboxStatus:
    mailbox: str
    last_success: float | None
    last_error: str | None
    last_error_at: float | None


@dataclass(frozen=True)
class Settlement:
    """Everything the poll cycle learnt of a message in the pass that downloaded it.

    ``state`` is DELIVERED, SPOOLED (kept in the spool: retry later) or
    QUARANTINED; ``outcomes`` are per-recipient ``(address, state, reason)``;
    ``copies`` is ``(message_id, body_sha256, recipients)`` when the message's
    copies per recipient are tracked for duplicate suppression.
    """

    id: int
    state: str
    size: int
    sha256: str
    meta: dict[str, str | None]
    recipients: Sequence[str]
    route: str
    outcomes: Sequence[tuple[str, str, str]] = ()
    error: str | None = None
    copies: tuple[str, str, Sequence[str]] | None = None


def _serialized(method: _M) -> _M:
    """Run ``method`` holding the ledger's lock: one thread on the connection at a time."""

    @functools.wraps(method)
    def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        with self._mutex:
            return method(self, *args, **kwargs)

    return cast(_M, wrapper)


class Ledger:
    """One SQLite connection, used by one thread at a time.

    The engine's event loop thread does nearly everything; a commit that must
    reach the disk (``durable``) may run in a worker thread instead
    (``asyncio.to_thread``) so the downloads go on meanwhile. Every method
    holds the ledger's lock, so a transaction is never interleaved with
    another thread's statements.
    """

    def __init__(self, path: Path, *, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._mutex = threading.RLock()
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=30.0, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise StorageError(
                f"Postbridge could not open its message ledger {path}.", detail=str(exc)
            ) from exc

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"The ledger {self.path} was written by a newer Postbridge "
                f"(schema {version}, this version knows {SCHEMA_VERSION}). Update Postbridge."
            )
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                for statement in _MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")

    @_serialized
    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``durable`` commits it (and all before it) to disk."""
        with self._mutex:
            yield from self._transaction(durable)

    def _transaction(self, durable: bool) -> Iterator[sqlite3.Connection]:
        try:
            if durable:
                # SQLite refuses to change the safety level inside a transaction.
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError("The message ledger is busy or damaged.", detail=str(exc)) from exc
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(
                    "Postbridge could not save its message ledger (is the disk full?).",
                    detail=str(exc),
                ) from exc
        finally:
            if durable:
                self._db.execute("PRAGMA synchronous=NORMAL")

    # -- reading -----------------------------------------------------------

    @_serialized
    def get(self, message_id: int) -> Row | None:
        r = self._db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        return Row.from_sql(r) if r else None

    @_serialized
    def by_uid(self, source: str, uids: Iterable[str]) -> dict[str, Row]:
        """The rows of these UIDs (those on the server now), not the mailbox's whole history."""
        rows = self._select_in(
            "SELECT * FROM messages WHERE source = ? AND uid", list(uids), source
        )
        return {r["uid"]: Row.from_sql(r) for r in rows}

    @_serialized
    def by_single_uid(self, source: str, uid: str) -> Row | None:
        r = self._db.execute(
            "SELECT * FROM messages WHERE source = ? AND uid = ?", (source, uid)
        ).fetchone()
        return Row.from_sql(r) if r else None

    @_serialized
    def in_state(self, state: str, *, source: str | None = None) -> list[Row]:
        if source is None:
            rows = self._db.execute("SELECT * FROM messages WHERE state = ? ORDER BY id", (state,))
        else:
            rows = self._db.execute(
                "SELECT * FROM messages WHERE state = ? AND source = ? ORDER BY id", (state, source)
            )
        return [Row.from_sql(r) for r in rows]

    @_serialized
    def recent(self, *, limit: int = 500) -> list[Row]:
        rows = self._db.execute("SELECT * FROM messages ORDER BY id DESC LIMIT ?", (limit,))
        return [Row.from_sql(r) for r in rows]

    @_serialized
    def recipient_states(self, message_id: int) -> dict[str, RecipientState]:
        rows = self._db.execute(
            "SELECT address, state, reason, at FROM recipients WHERE message = ?", (message_id,)
        )
        return {
            r["address"]: RecipientState(r["address"], r["state"], r["reason"], r["at"])
            for r in rows
        }

    @_serialized
    def status(self) -> list[MailboxStatus]:
        rows = self._db.execute("SELECT * FROM mailbox_status ORDER BY mailbox")
        return [
            MailboxStatus(r["mailbox"], r["last_success"], r["last_error"], r["last_error_at"])
            for r in rows
        ]

    @_serialized
    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) AS n FROM messages GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    # -- writing -----------------------------------------------------------

    @_serialized
    def add_listed(self, source: str, items: Sequence[tuple[str, int]]) -> dict[str, int]:
        """Record messages seen on the server (idempotent); returns uid -> row id.

        Each new row gets its delivery key at once (``<time>.pb<id>_<random>``),
        before anything is downloaded: a delivery that is made and then lost
        with the process (killed before the ledger heard of it) is found again
        under that key when the message is downloaded anew. The commit is
        durable, so the key outlives a power cut as well as the copies made
        under it; the random part keeps a key from ever matching a copy made
        for another row.
        """
        now = self._clock()
        with self.transaction(durable=True) as db:
            db.executemany(
                "INSERT OR IGNORE INTO messages (source, uid, size, state, listed_at) "
                "VALUES (?, ?, ?, 'listed', ?)",
                [(source, uid, size, now) for uid, size in items],
            )
            db.execute(
                "UPDATE messages SET key = CAST(CAST(listed_at AS INTEGER) AS TEXT) "
                "|| '.pb' || id || '_' || lower(hex(randomblob(4))) "
                "WHERE source = ? AND state = 'listed' AND key IS NULL",
                (source,),
            )
        rows = self._select_in(
            "SELECT id, uid FROM messages WHERE source = ? AND uid",
            [uid for uid, _ in items],
            source,
        )
        return {r["uid"]: r["id"] for r in rows}

    @_serialized
    def keys(self, ids: Sequence[int]) -> dict[int, str]:
        """The delivery keys of these rows (every row has one from ``add_listed`` on)."""
        return {
            r["id"]: r["key"] for r in self._select_in("SELECT id, key FROM messages WHERE id", ids)
        }

    def _select_in(
        self, select: str, values: Sequence[object], *params: object
    ) -> Iterator[sqlite3.Row]:
        """``<select> IN (<values>)``, in chunks of 500 (SQLite's limit on parameters)."""
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            marks = ",".join("?" * len(chunk))
            yield from self._db.execute(f"{select} IN ({marks})", (*params, *chunk))

    @_serialized
    def mark_spooled(
        self,
        message_id: int,
        *,
        key: str | None = None,
        size: int,
        sha256: str,
        meta: dict[str, str | None],
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE messages SET state = 'spooled', key = COALESCE(key, ?), size = ?, "
                "sha256 = ?, "
                "message_id = ?, sender = ?, subject = ?, envelope_from = ?, spooled_at = ? "
                "WHERE id = ?",
                (
                    key,
                    size,
                    sha256,
                    meta.get("message_id"),
                    meta.get("sender"),
                    meta.get("subject"),
                    meta.get("envelope_from"),
                    self._clock(),
                    message_id,
                ),
            )

    @_serialized
    def settle(self, entries: Sequence[Settlement], *, durable: bool) -> None:
        """Record downloaded messages with their route and first outcomes: one transaction.

        It stands for ``mark_spooled`` + ``set_route`` + ``record_copies`` +
        ``record_delivery`` of each, for a window of messages at a time.
        """
        if not entries:
            return
        now = self._clock()
        updates = []
        outcome_rows: list[tuple[int, str, str, str | None, float]] = []
        copy_rows = []
        for e in entries:
            updates.append(
                (
                    e.state,
                    e.size,
                    e.sha256,
                    e.meta.get("message_id"),
                    e.meta.get("sender"),
                    e.meta.get("subject"),
                    e.meta.get("envelope_from"),
                    json.dumps(list(e.recipients)),
                    e.route,
                    now,
                    now if e.state == DELIVERED else None,
                    1 if e.outcomes else 0,
                    e.error,
                    e.id,
                )
            )
            decided = {address for address, _, _ in e.outcomes}
            outcome_rows += [(e.id, a, st, why, now) for a, st, why in e.outcomes]
            outcome_rows += [
                (e.id, a, "pending", None, now) for a in e.recipients if a not in decided
            ]
            if e.copies is not None:
                mid, body, addresses = e.copies
                copy_rows += [(e.id, mid, body, r, now) for r in addresses]
        with self.transaction(durable=durable) as db:
            db.executemany(
                "UPDATE messages SET state = ?, size = ?, sha256 = ?, message_id = ?, "
                "sender = ?, subject = ?, envelope_from = ?, recipients = ?, route = ?, "
                "spooled_at = ?, delivered_at = ?, attempts = attempts + ?, last_error = ? "
                "WHERE id = ?",
                updates,
            )
            db.executemany(
                "INSERT INTO recipients (message, address, state, reason, at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (message, address) DO UPDATE SET state = excluded.state, "
                "reason = excluded.reason, at = excluded.at",
                outcome_rows,
            )
            if copy_rows:
                db.executemany(
                    "INSERT INTO copies (message, message_id, body_sha256, recipient, at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    copy_rows,
                )

    @_serialized
    def set_route(self, message_id: int, *, recipients: Sequence[str], route: str) -> None:
        now = self._clock()
        with self.transaction() as db:
            db.execute(
                "UPDATE messages SET recipients = ?, route = ? WHERE id = ?",
                (json.dumps(list(recipients)), route, message_id),
            )
            db.executemany(
                "INSERT OR IGNORE INTO recipients (message, address, state, at) "
                "VALUES (?, ?, 'pending', ?)",
                [(message_id, address, now) for address in recipients],
            )

    @_serialized
    def record_delivery(
        self,
        message_id: int,
        *,
        outcomes: Iterable[tuple[str, str, str]],
        final_state: str | None,
        error: str | None = None,
    ) -> None:
        """Store per-recipient outcomes ``(address, state, reason)`` and maybe the final state.

        ``final_state`` is DELIVERED, QUARANTINED, or None (still spooled: retry later).
        An outcome "accepted" is committed durably: the message is out of our hands.
        """
        now = self._clock()
        rows = [(message_id, a, s, r, now) for a, s, r in outcomes]
        with self.transaction(durable=any(row[2] == "accepted" for row in rows)) as db:
            db.executemany(
                "INSERT INTO recipients (message, address, state, reason, at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (message, address) DO UPDATE SET state = excluded.state, "
                "reason = excluded.reason, at = excluded.at",
                rows,
            )
            if final_state == DELIVERED:
                db.execute(
                    "UPDATE messages SET state = 'delivered', delivered_at = ?, "
                    "attempts = attempts + 1, last_error = ? WHERE id = ?",
                    (now, error, message_id),
                )
            elif final_state == QUARANTINED:
                db.execute(
                    "UPDATE messages SET state = 'quarantined', attempts = attempts + 1, "
                    "last_error = ? WHERE id = ?",
                    (error, message_id),
                )
            else:
                db.execute(
                    "UPDATE messages SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                    (error, message_id),
                )

    @_serialized
    def requeue(self, message_id: int, *, recipients: Sequence[str] | None = None) -> None:
        """Put a quarantined message back to ``spooled`` (``quarantine retry``)."""
        now = self._clock()
        with self.transaction() as db:
            db.execute(
                "UPDATE messages SET state = 'spooled', last_error = NULL WHERE id = ?",
                (message_id,),
            )
            if recipients is not None:
                db.execute("DELETE FROM recipients WHERE message = ?", (message_id,))
                db.execute(
                    "UPDATE messages SET recipients = ? WHERE id = ?",
                    (json.dumps(list(recipients)), message_id),
                )
                db.executemany(
                    "INSERT INTO recipients (message, address, state, at) "
                    "VALUES (?, ?, 'pending', ?)",
                    [(message_id, a, now) for a in recipients],
                )
            else:
                db.execute(
                    "UPDATE recipients SET state = 'pending', at = ? "
                    "WHERE message = ? AND state != 'accepted'",
                    (now, message_id),
                )

    @_serialized
    def mark_server(self, ids: Iterable[int], server: str) -> None:
        """Record what is known of the ISP copies; durable, as DELE follows ``deleting``.

        ``removed`` need not be: lost in a power cut, the row says ``deleting`` and the
        next session's listing shows the message gone (:meth:`mark_gone`).
        """
        now = self._clock() if server == REMOVED else None
        with self.transaction(durable=server != REMOVED) as db:
            db.executemany(
                "UPDATE messages SET server = ?, removed_at = COALESCE(?, removed_at) WHERE id = ?",
                [(server, now, i) for i in ids],
            )

    @_serialized
    def mark_gone(self, source: str, present_uids: set[str]) -> int:
        """Rows whose message is no longer on the server are ``removed`` there."""
        stale = [
            r["id"]
            for r in self._db.execute(
                "SELECT id, uid FROM messages WHERE source = ? AND server != 'removed'", (source,)
            )
            if r["uid"] not in present_uids
        ]
        if stale:
            self.mark_server(stale, REMOVED)
        return len(stale)

    @_serialized
    def forget_listed(self, source: str, uids: Iterable[str]) -> None:
        """Drop ``listed`` rows that were never spooled (their message vanished)."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM messages WHERE source = ? AND uid = ? AND state = 'listed'",
                [(source, u) for u in uids],
            )

    @_serialized
    def copies_seen(
        self, *, message_id: str, body_sha256: str, since: float, exclude: int
    ) -> set[str]:
        """Recipients that earlier messages with this Message-ID and body went to."""
        rows = self._db.execute(
            "SELECT recipient FROM copies WHERE message_id = ? AND body_sha256 = ? "
            "AND at >= ? AND message != ?",
            (message_id, body_sha256, since, exclude),
        )
        return {r["recipient"] for r in rows}

    @_serialized
    def record_copies(
        self, message: int, *, message_id: str, body_sha256: str, recipients: Sequence[str]
    ) -> None:
        now = self._clock()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO copies (message, message_id, body_sha256, recipient, at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(message, message_id, body_sha256, r, now) for r in recipients],
            )

    @_serialized
    def set_status(self, mailbox: str, *, error: str | None) -> None:
        now = self._clock()
        with self.transaction() as db:
            if error is None:
                db.execute(
                    "INSERT INTO mailbox_status (mailbox, last_success) VALUES (?, ?) "
                    "ON CONFLICT (mailbox) DO UPDATE SET last_success = excluded.last_success",
                    (mailbox, now),
                )
            else:
                db.execute(
                    "INSERT INTO mailbox_status (mailbox, last_error, last_error_at) "
                    "VALUES (?, ?, ?) "
                    "ON CONFLICT (mailbox) DO UPDATE SET last_error = excluded.last_error, "
                    "last_error_at = excluded.last_error_at",
                    (mailbox, error, now),
                )
