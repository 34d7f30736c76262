"""The address map of a global mailbox as an editable table, checked cell by cell.

One row per rule: "Mail sent to" (an address or ``*@domain``) and "Deliver to"
(one or more addresses). A cell that is wrong says so where it is: a reddish
background and the reason as its tooltip and in :data:`ERROR_ROLE`, so the
page can list the problems and refuse to save while any is left. A rule
whose address lies outside the mailbox's local domains is wrong too: the
router never looks such an address up (it would be an open relay), so the
rule could only mislead.

Rows may be imported from a CSV file (``address,recipient[,recipient...]``,
an optional header line, ``#`` comments), the way an office keeps such a list
in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from postbridge.engine import fields

SOURCE, TARGETS = 0, 1
HEADERS = ("Mail sent to", "Deliver to")
ERROR_ROLE = Qt.ItemDataRole.UserRole + 1
_ERROR_BRUSH = QBrush(QColor(255, 205, 210))

Index = QModelIndex | QPersistentModelIndex


@dataclass
class Rule:
    source: str = ""
    targets: str = ""  # as typed: addresses separated by commas or spaces

    def target_list(self) -> list[str]:
        return [t.lower() for t in fields.split_list(self.targets)]


class MappingModel(QAbstractTableModel):
    """Rows of (source, targets) with a problem, or none, for every cell."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.rules: list[Rule] = []
        self.local_domains: tuple[str, ...] = ()

    # -- Qt model ----------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rules)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else 2

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        if role == Qt.ItemDataRole.DisplayRole:
            if orientation == Qt.Orientation.Horizontal:
                return HEADERS[section]
            return str(section + 1)
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEditable

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or index.row() >= len(self.rules):
            return None
        rule = self.rules[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return rule.source if index.column() == SOURCE else rule.targets
        if role in (Qt.ItemDataRole.ToolTipRole, ERROR_ROLE):
            return self.cell_problem(index.row(), index.column())
        if role == Qt.ItemDataRole.BackgroundRole:
            return _ERROR_BRUSH if self.cell_problem(index.row(), index.column()) else None
        if role == Qt.ItemDataRole.AccessibleDescriptionRole:
            return self.cell_problem(index.row(), index.column()) or ""
        return None

    def setData(self, index: Index, value: object, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.EditRole or not index.isValid():
            return False
        text = str(value).strip()
        rule = self.rules[index.row()]
        if index.column() == SOURCE:
            rule.source = text.lower()
            # a changed source may make another row a duplicate, or stop being one
            self._changed_all()
        else:
            rule.targets = text
            self.dataChanged.emit(index, index)
        return True

    # -- editing -----------------------------------------------------------------------

    def add_rule(self, source: str = "", targets: str = "") -> int:
        row = len(self.rules)
        self.beginInsertRows(QModelIndex(), row, row)
        self.rules.append(Rule(source.strip().lower(), targets.strip()))
        self.endInsertRows()
        return row

    def remove_rows(self, rows: Iterable[int]) -> None:
        for row in sorted(set(rows), reverse=True):
            if 0 <= row < len(self.rules):
                self.beginRemoveRows(QModelIndex(), row, row)
                del self.rules[row]
                self.endRemoveRows()
        self._changed_all()

    def load(self, address_map: Mapping[str, tuple[str, ...]]) -> None:
        self.beginResetModel()
        self.rules = [Rule(k, ", ".join(v)) for k, v in address_map.items()]
        self.endResetModel()

    def set_local_domains(self, domains: Iterable[str]) -> None:
        self.local_domains = tuple(d.lower() for d in domains)
        self._changed_all()

    def _changed_all(self) -> None:
        if self.rules:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rules) - 1, 1))

    # -- checks ------------------------------------------------------------------------

    def cell_problem(self, row: int, column: int) -> str | None:
        rule = self.rules[row]
        if column == TARGETS:
            return fields.check_map_targets(rule.target_list())
        problem = fields.check_map_source(rule.source, self.local_domains)
        if problem:
            return problem
        if any(r.source == rule.source for r in self.rules[:row]):
            return f"{rule.source} already has a rule above; merge the two rows."
        return None

    def problems(self) -> list[str]:
        """Every cell problem, as "Row 2, Deliver to: ..." lines (empty when all is well)."""
        out = []
        for row in range(len(self.rules)):
            for column in (SOURCE, TARGETS):
                problem = self.cell_problem(row, column)
                if problem:
                    out.append(f"Row {row + 1}, {HEADERS[column]}: {problem}")
        return out

    def value(self) -> dict[str, tuple[str, ...]]:
        """The map for the config (only meaningful when :meth:`problems` is empty)."""
        return {r.source: tuple(dict.fromkeys(r.target_list())) for r in self.rules}

    # -- CSV -----------------------------------------------------------------------------

    def import_csv(self, text: str) -> tuple[int, list[str]]:
        """Append the rules of a CSV text; return how many, and lines that were not rules."""
        added = 0
        skipped: list[str] = []
        rows = csv.reader(io.StringIO(text), delimiter=_delimiter(text))
        for number, cells in enumerate(rows, start=1):
            cells = [c.strip() for c in cells if c.strip()]
            if not cells or cells[0].startswith("#"):
                continue
            if number == 1 and "@" not in cells[0]:
                continue  # a header line such as "address,recipient"
            if len(cells) < 2:
                skipped.append(f"Line {number}: “{cells[0]}” has no recipient after it")
                continue
            self.add_rule(cells[0], ", ".join(cells[1:]))
            added += 1
        return added, skipped


def _delimiter(text: str) -> str:
    """Comma, semicolon (spreadsheets in many European locales) or tab: the most used one."""
    lines = [line for line in text.splitlines()[:50] if not line.lstrip().startswith("#")]
    sample = "\n".join(lines)
    return max((",", ";", "\t"), key=sample.count)
