"""The Activity window's data: ledger rows as a Qt table model, and a short-lived reader.

The ledger is written by the worker thread; the Activity window reads it on the
GUI thread through its own SQLite connection. The ledger runs in WAL mode, so a
reader never waits for the writer, and every read here is one short indexed
query (the newest few hundred rows), cheap enough for the GUI thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
)

from postbridge.app.status import clock_text
from postbridge.engine.errors import PostbridgeError
from postbridge.engine.ledger import (
    DELIVERED,
    LISTED,
    QUARANTINED,
    SPOOLED,
    Ledger,
    MailboxStatus,
    Row,
)

log = logging.getLogger("postbridge.app.activity")

COLUMNS = ("Time", "From", "Subject", "Mailbox", "Delivered to", "Status")
ID_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2

STATE_WORDS = {
    DELIVERED: "Delivered",
    SPOOLED: "Waiting for a retry",
    QUARANTINED: "In quarantine",
    LISTED: "Downloading",
}

_Index = QModelIndex | QPersistentModelIndex


def row_time(row: Row) -> float:
    return row.delivered_at or row.spooled_at or row.listed_at


def explain_route(route: str | None) -> str:
    """The routing decision in words; a plain note (mail that came by ATRN) as it is."""
    if not route:
        return "Not routed yet."
    from postbridge.engine.routing.router import RouteDecision

    try:
        return RouteDecision.from_json(route).explain()
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        return route


class MessageTableModel(QAbstractTableModel):
    """Read-only rows of the ledger, newest first; the proxy filters and sorts."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[Row] = []

    def set_rows(self, rows: Sequence[Row]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def row_at(self, index: int) -> Row:
        return self._rows[index]

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        column = index.column()
        if role == ID_ROLE:
            return row.id
        if role == SORT_ROLE:
            return row_time(row) if column == 0 else self._text(row, column).lower()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(row, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 5 and row.last_error:
                return row.last_error
            text = self._text(row, column)
            return text if len(text) > 30 else None
        return None

    @staticmethod
    def _text(row: Row, column: int) -> str:
        if column == 0:
            return clock_text(row_time(row))
        if column == 1:
            return row.sender or ""
        if column == 2:
            return row.subject or ""
        if column == 3:
            return row.source
        if column == 4:
            return ", ".join(row.recipients) if row.state == DELIVERED else ""
        return STATE_WORDS.get(row.state, row.state)


@dataclass(frozen=True)
class Snapshot:
    recent: list[Row] = field(default_factory=list)
    quarantined: list[Row] = field(default_factory=list)
    statuses: list[MailboxStatus] = field(default_factory=list)


class LedgerReader:
    """Opens the ledger for reading when it exists; never creates one."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._ledger: Ledger | None = None

    def _open(self, path: Path | None) -> Ledger | None:
        if path != self._path:
            self.close()
            self._path = path
        if self._ledger is None and path is not None and path.exists():
            try:
                self._ledger = Ledger(path)
            except PostbridgeError as exc:
                log.warning("cannot read the ledger: %s", exc.describe())
        return self._ledger

    def snapshot(self, path: Path | None, *, limit: int = 500) -> Snapshot:
        ledger = self._open(path)
        if ledger is None:
            return Snapshot()
        return Snapshot(
            recent=ledger.recent(limit=limit),
            quarantined=ledger.in_state(QUARANTINED),
            statuses=ledger.status(),
        )

    def details(self, path: Path | None, ledger_id: int) -> str:
        """Everything known about one message, in words."""
        ledger = self._open(path)
        row = ledger.get(ledger_id) if ledger else None
        if ledger is None or row is None:
            return ""
        lines = [
            f"Message {row.id} from mailbox “{row.source}”",
            f"From: {row.sender or '?'}",
            f"Subject: {row.subject or ''}",
            f"Status: {STATE_WORDS.get(row.state, row.state)}",
            "",
            f"Why: {explain_route(row.route)}",
        ]
        states = ledger.recipient_states(row.id)
        if states:
            lines.append("")
            for state in states.values():
                reason = f" — {state.reason}" if state.reason else ""
                lines.append(f"{state.address}: {state.state}{reason}")
        if row.last_error:
            lines += ["", f"Last problem: {row.last_error}"]
        return "\n".join(lines)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
