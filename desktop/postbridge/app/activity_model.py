"""The Activity window's data: ledger rows as a Qt table model, and a short-lived reader.

The ledger is written by the worker thread; the Activity window reads it on the
GUI thread through its own SQLite connection. The ledger runs in WAL mode, so a
reader never waits for the writer, and every read here is one short indexed
query (the newest few hundred rows), cheap enough for the GUI thread.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
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
# Rows shown: the last day or two of a busy office. Reading and painting them after a big poll
# must fit well inside the GUI's 50 ms stall budget (about 30 µs per row to read, on top of
# the repaint), which 500 rows did not leave room for.
RECENT_LIMIT = 300

STATE_WORDS = {
    DELIVERED: "Delivered",
    SPOOLED: "Waiting for a retry",
    QUARANTINED: "In quarantine",
    LISTED: "Downloading",
}

RECIPIENT_WORDS = {
    "accepted": "delivered",
    "pending": "waiting",
    "temporary": "refused for now, will be retried",
    "permanent": "refused",
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
    """Read-only rows of the ledger; sorts itself, a proxy only filters.

    Cell texts and sort keys are computed once per refresh, in Python, so that
    ``data()`` is a list lookup: the view and the proxy call it thousands of
    times, and during a big poll each call from the GUI thread competes with the
    worker for the interpreter lock. Sorting here rather than in
    QSortFilterProxyModel keeps those calls out of the refresh entirely.
    """

    def __init__(self, parent: QObject | None = None, *, reasons: bool = False) -> None:
        super().__init__(parent)
        # The quarantine's table: its last column says why a message is held, not "In quarantine".
        self.reasons = reasons
        self.columns = (*COLUMNS[:-1], "Reason") if reasons else COLUMNS
        self._rows: list[Row] = []
        self._cells: list[tuple[str, ...]] = []
        self._sort_column = 0
        self._sort_order = Qt.SortOrder.DescendingOrder

    def set_rows(self, rows: Sequence[Row]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        now = time.time()
        self._cells = [_cells(row, now, reasons=self.reasons) for row in self._rows]
        self._sort_in_place()
        self.endResetModel()

    def row_at(self, index: int) -> Row:
        return self._rows[index]

    def row_of(self, ledger_id: int) -> int | None:
        for number, row in enumerate(self._rows):
            if row.id == ledger_id:
                return number
        return None

    def _sort_in_place(self) -> None:
        column = self._sort_column
        if column == 0:
            keyed: list[tuple[float | str, int]] = [(row_time(row), row.id) for row in self._rows]
        else:
            keyed = [
                (cells[column].lower(), row.id)
                for cells, row in zip(self._cells, self._rows, strict=True)
            ]
        order = sorted(range(len(keyed)), key=keyed.__getitem__)
        if self._sort_order == Qt.SortOrder.DescendingOrder:
            order.reverse()
        self._rows = [self._rows[i] for i in order]
        self._cells = [self._cells[i] for i in order]

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if not 0 <= column < len(COLUMNS):
            return
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        ids = [self._rows[index.row()].id for index in persistent]
        self._sort_column, self._sort_order = column, order
        self._sort_in_place()
        where = {row.id: number for number, row in enumerate(self._rows)}
        self.changePersistentIndexList(
            persistent,
            [
                self.index(where[i], index.column())
                for index, i in zip(persistent, ids, strict=True)
            ],
        )
        self.layoutChanged.emit()

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if role == Qt.ItemDataRole.DisplayRole:
            return self._cells[index.row()][index.column()]
        if role == ID_ROLE:
            return self._rows[index.row()].id
        if role == Qt.ItemDataRole.ToolTipRole:
            row, column = self._rows[index.row()], index.column()
            if column == 1:
                return row.sender or None
            if column == 5 and row.last_error:
                return row.last_error
            text = self._cells[index.row()][column]
            return text if len(text) > 30 else None
        return None


class SourceSortingProxy(QSortFilterProxyModel):
    """Filters (case-insensitively, over every column); hands sorting to the source model."""

    def __init__(self, source: MessageTableModel) -> None:
        super().__init__()
        self.setSourceModel(source)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(-1)
        self._source = source

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self._source.sort(column, order)


def sender_name(sender: str | None) -> str:
    """The display name of a From field (the address when there is none): what people scan for."""
    if not sender:
        return ""
    name, address = email.utils.parseaddr(sender)
    return name or address or sender


def _cells(row: Row, now: float, *, reasons: bool = False) -> tuple[str, ...]:
    delivered_to = ", ".join(row.recipients) if row.state == DELIVERED else ""
    status = STATE_WORDS.get(row.state, row.state)
    if reasons and row.last_error:
        status = row.last_error
    return (
        clock_text(row_time(row), now=now),
        sender_name(row.sender),
        row.subject or "",
        row.source,
        delivered_to,
        status,
    )


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

    def snapshot(self, path: Path | None, *, limit: int = RECENT_LIMIT) -> Snapshot:
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
        # The answer to "why did this go to bob?" first; the message's particulars last.
        why = explain_route(row.route)
        words = STATE_WORDS.get(row.state, row.state)
        said = row.state == QUARANTINED and why.startswith("Quarantined")
        lines = [why if said else f"{words}. {why}", ""]
        for state in ledger.recipient_states(row.id).values():
            reason = f" — {state.reason}" if state.reason else ""
            lines.append(
                f"{state.address}: {RECIPIENT_WORDS.get(state.state, state.state)}{reason}"
            )
        if row.last_error and row.last_error not in why:
            lines.append(f"Last problem: {row.last_error}")
        if lines[-1]:
            lines.append("")
        lines.append(
            f"From {row.sender or '?'} · “{row.subject or ''}” · mailbox {row.source} · "
            f"message {row.id} (postbridge history --message {row.id})"
        )
        return "\n".join(lines)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
