"""The Activity window: what arrived, where it went and why, and the quarantine.

It answers the questions an office actually asks: "did the mail from the tax
office come in?", "why did this go to bob?", "what is stuck?". Recent messages
from the ledger in a filterable table; selecting one shows its routing decision
in words; the Quarantine tab retries a message or delivers it to an address
the user names. Those two run on the worker (they may talk to the office mail
server), never on the GUI thread; the result comes back as a line of text.
A strip at the bottom shows each mailbox's last success and last error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QItemSelection, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QIcon, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from postbridge.app.activity_model import (
    ID_ROLE,
    LedgerReader,
    MessageTableModel,
    Snapshot,
    SourceSortingProxy,
)
from postbridge.app.status import APP_TITLE, clock_text
from postbridge.engine.ledger import MailboxStatus, Row

_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


def status_words(status: MailboxStatus) -> tuple[str, bool]:
    """One mailbox's line for the status strip, and whether it is in trouble now."""
    success = status.last_success or 0.0
    failing = bool(status.last_error) and (status.last_error_at or 0.0) > success
    if failing:
        since = clock_text(status.last_error_at or 0.0)
        return f"{status.mailbox}: failing since {since} — {status.last_error}", True
    if status.last_success:
        return f"{status.mailbox}: last collected {clock_text(status.last_success)}", False
    return f"{status.mailbox}: not collected yet", False


def _table(model: MessageTableModel, name: str) -> tuple[QTableView, SourceSortingProxy]:
    proxy = SourceSortingProxy(model)
    view = QTableView()
    view.setModel(proxy)
    view.setAccessibleName(name)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setSortingEnabled(True)
    view.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    view.setWordWrap(False)
    view.verticalHeader().hide()
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 8)
    header = view.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    header.setStretchLastSection(False)
    header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
    for column, width in ((0, 90), (1, 200), (3, 90), (4, 170), (5, 120)):
        view.setColumnWidth(column, width)
    return view, proxy


class ActivityWindow(QWidget):
    """Recent messages, quarantine and mailbox status; reads the ledger on demand."""

    retryRequested = Signal(int, object)  # ledger id, recipients (list[str]) or None

    def __init__(
        self,
        ledger_path: Callable[[], Path | None],
        icon: QIcon | None = None,
        *,
        reader: LedgerReader | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle(f"{APP_TITLE} — Activity")
        if icon is not None:
            self.setWindowIcon(icon)
        self._ledger_path = ledger_path
        self.reader = reader or LedgerReader()
        self._pending: Snapshot | None = None
        self.recent_model = MessageTableModel(self)
        self.quarantine_model = MessageTableModel(self, reasons=True)
        self.recent_view, self.recent_proxy = _table(self.recent_model, "Recent messages")
        self.quarantine_view, self.quarantine_proxy = _table(self.quarantine_model, "Quarantine")
        self.quarantine_view.hideColumn(4)  # "Delivered to": never, for a held message
        self.quarantine_view.horizontalHeader().setStretchLastSection(True)

        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("sender, subject, mailbox or recipient")
        self.filter.setClearButtonEnabled(True)
        label = QLabel("&Filter:")
        label.setBuddy(self.filter)
        top.addWidget(label)
        top.addWidget(self.filter, 1)
        self.progress = QLabel("")
        self.progress.setAccessibleName("Poll progress")
        # Room for the longest text, so the filter box does not jump as the numbers change.
        width = self.progress.fontMetrics().horizontalAdvance("Collecting mail: 88,888 of 88,888")
        self.progress.setMinimumWidth(width)
        self.progress.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        top.addWidget(self.progress)
        layout.addLayout(top)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.recent_view, "Recent")
        quarantine_page = QWidget()
        q_layout = QVBoxLayout(quarantine_page)
        q_layout.setContentsMargins(0, 0, 0, 0)
        q_layout.addWidget(self.quarantine_view)
        buttons = QHBoxLayout()
        self.retry_button = QPushButton("&Retry")
        self.retry_button.setToolTip("Route and deliver the selected message again")
        self.deliver_button = QPushButton("&Deliver to…")
        self.deliver_button.setToolTip("Deliver the selected message to an address you choose")
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.deliver_button)
        buttons.addStretch(1)
        q_layout.addLayout(buttons)
        self.tabs.addTab(quarantine_page, "Quarantine")

        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setAccessibleName("Details of the selected message")
        self.details.setPlaceholderText("Select a message to see where it went and why.")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.tabs)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout.addWidget(splitter, 1)

        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.hide()
        layout.addWidget(self.result)
        self.strip = QLabel("")
        self.strip.setWordWrap(True)
        self.strip.setTextFormat(Qt.TextFormat.PlainText)
        self.strip.setAccessibleName("Mailbox status")
        layout.addWidget(self.strip)

        self.filter.textChanged.connect(self._apply_filter)
        self.recent_view.selectionModel().selectionChanged.connect(
            lambda _s, _d: self._show_details(self.recent_view)
        )
        self.quarantine_view.selectionModel().selectionChanged.connect(self._quarantine_selected)
        self.tabs.currentChanged.connect(lambda _i: self._show_details(self._current_view()))
        self.retry_button.clicked.connect(self.retry_selected)
        self.deliver_button.clicked.connect(self.deliver_selected)
        QShortcut(QKeySequence.StandardKey.Find, self, self.filter.setFocus)
        QShortcut(QKeySequence.StandardKey.Close, self, self.close)
        self._quarantine_selected(QItemSelection(), QItemSelection())
        self.resize(960, 560)

    # -- data -------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the ledger (a few short queries) and show it, keeping the selection."""
        self._apply(self.reader.snapshot(self._ledger_path()))

    def refresh_soon(self) -> None:
        """Read now, show on the next pass of the event loop.

        Reading and repainting each take a good part of the GUI's stall budget after a
        big poll; in two steps, input and timers get their turn in between.
        """
        self._pending = self.reader.snapshot(self._ledger_path())
        QTimer.singleShot(0, self._apply_pending)

    def _apply_pending(self) -> None:
        snapshot, self._pending = self._pending, None
        if snapshot is not None:
            self._apply(snapshot)

    def _apply(self, snapshot: Snapshot) -> None:
        self._set_rows(self.recent_view, self.recent_model, snapshot.recent)
        self._set_rows(self.quarantine_view, self.quarantine_model, snapshot.quarantined)
        count = len(snapshot.quarantined)
        self.tabs.setTabText(1, f"Quarantine ({count})" if count else "Quarantine")
        self._show_strip(snapshot)
        self._show_details(self._current_view())

    def _set_rows(self, view: QTableView, model: MessageTableModel, rows: list[Row]) -> None:
        selected = self._selected_id(view)
        model.set_rows(rows)
        if selected is None:
            return
        number = model.row_of(selected)
        if number is not None:
            proxy = view.model()
            assert isinstance(proxy, SourceSortingProxy)
            index = proxy.mapFromSource(model.index(number, 0))
            if index.isValid():
                view.selectRow(index.row())

    def _show_strip(self, snapshot: Snapshot) -> None:
        if not snapshot.statuses:
            self.strip.setText("No mailbox has been collected yet.")
            self.strip.setStyleSheet("")
            return
        lines, trouble = [], False
        for status in snapshot.statuses:
            text, failing = status_words(status)
            lines.append(text)
            trouble = trouble or failing
        self.strip.setText("\n".join(lines))
        self.strip.setStyleSheet("color: #b3261e;" if trouble else "")

    # -- selection and details --------------------------------------------------------------------

    def _current_view(self) -> QTableView:
        return self.quarantine_view if self.tabs.currentIndex() == 1 else self.recent_view

    @staticmethod
    def _selected_id(view: QTableView) -> int | None:
        rows = view.selectionModel().selectedRows()
        if not rows:
            return None
        value = rows[0].data(ID_ROLE)
        return int(value) if value is not None else None

    def _show_details(self, view: QTableView) -> None:
        ledger_id = self._selected_id(view)
        if ledger_id is None:
            self.details.setPlainText("")
            return
        self.details.setPlainText(self.reader.details(self._ledger_path(), ledger_id))

    def _quarantine_selected(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        has = self._selected_id(self.quarantine_view) is not None
        self.retry_button.setEnabled(has)
        self.deliver_button.setEnabled(has)
        if self.tabs.currentIndex() == 1:
            self._show_details(self.quarantine_view)

    def _apply_filter(self, text: str) -> None:
        self.recent_proxy.setFilterFixedString(text)
        self.quarantine_proxy.setFilterFixedString(text)

    # -- quarantine actions -----------------------------------------------------------------------

    def retry_selected(self) -> None:
        ledger_id = self._selected_id(self.quarantine_view)
        if ledger_id is not None:
            self.show_result(f"Retrying message {ledger_id}…")
            self.retryRequested.emit(ledger_id, None)

    def deliver_selected(self, *, address: str | None = None) -> None:
        """Ask for an address (or take ``address``) and deliver the selected message there."""
        ledger_id = self._selected_id(self.quarantine_view)
        if ledger_id is None:
            return
        if address is None:
            address, ok = QInputDialog.getText(
                self,
                "Deliver to…",
                f"Deliver message {ledger_id} to this address:",
                QLineEdit.EchoMode.Normal,
                "",
            )
            if not ok:
                return
        address = address.strip()
        if not _ADDRESS.match(address):
            self.show_result(f"“{address}” is not an e-mail address; nothing was sent.", error=True)
            return
        self.show_result(f"Delivering message {ledger_id} to {address}…")
        self.retryRequested.emit(ledger_id, [address])

    def show_progress(self, text: str | None) -> None:
        """A running poll's progress; None when it is over."""
        self.progress.setText(text[:1].upper() + text[1:] if text else "")

    def show_result(self, text: str, *, error: bool = False) -> None:
        self.result.setText(text)
        self.result.setStyleSheet("color: #b3261e;" if error else "")
        self.result.show()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.reader.close()  # reopened by the next refresh; no connection held while hidden
        super().closeEvent(event)
