"""The address-map table: every cell checked where it is, CSV import, the map it yields."""

from __future__ import annotations

from PySide6.QtCore import Qt
from pytestqt.modeltest import ModelTester

from postbridge.app.mapping_model import ERROR_ROLE, SOURCE, TARGETS, MappingModel


def problem(model: MappingModel, row: int, column: int) -> str | None:
    value = model.data(model.index(row, column), ERROR_ROLE)
    return str(value) if value else None


def test_the_model_follows_qt_rules(qtmodeltester: ModelTester) -> None:
    model = MappingModel()
    model.load({"sales@example.com": ("alice@example.com",), "*@example.com": ("admin@x.org",)})
    qtmodeltester.check(model)


def test_edit_add_remove_and_value() -> None:
    model = MappingModel()
    model.set_local_domains(["example.com"])
    row = model.add_rule()
    assert problem(model, row, SOURCE) == (
        "Enter the address mail is sent to, e.g. sales@example.com."
    )
    assert model.setData(model.index(row, SOURCE), " Sales@Example.com ")
    assert model.setData(
        model.index(row, TARGETS), "alice@example.com bob@example.com, alice@example.com"
    )
    assert model.data(model.index(row, SOURCE)) == "sales@example.com"
    assert model.problems() == []
    assert model.value() == {"sales@example.com": ("alice@example.com", "bob@example.com")}
    model.add_rule("*@example.com", "admin@example.com")
    model.remove_rows([0])
    assert model.value() == {"*@example.com": ("admin@example.com",)}
    assert model.flags(model.index(0, 0)) & Qt.ItemFlag.ItemIsEditable


def test_each_cell_says_what_is_wrong() -> None:
    model = MappingModel()
    model.set_local_domains(["example.com"])
    model.add_rule("sales", "alice@example.com")
    model.add_rule("info@other.example", "nobody")
    model.add_rule("*@example.com", "")
    model.add_rule("*@example.com", "bob@example.com")
    assert "not an address" in (problem(model, 0, SOURCE) or "")
    assert problem(model, 0, TARGETS) is None
    assert "not one of the local domains (example.com)" in (problem(model, 1, SOURCE) or "")
    assert "“nobody” is not an e-mail address" in (problem(model, 1, TARGETS) or "")
    assert problem(model, 2, TARGETS) == "Enter at least one recipient address."
    assert "already has a rule above" in (problem(model, 3, SOURCE) or "")
    assert model.data(model.index(1, SOURCE), Qt.ItemDataRole.BackgroundRole) is not None
    assert model.data(model.index(1, SOURCE), Qt.ItemDataRole.ToolTipRole) == problem(
        model, 1, SOURCE
    )
    assert len(model.problems()) == 5
    assert model.problems()[0].startswith("Row 1, Mail sent to:")


def test_changing_the_local_domains_rechecks_every_row() -> None:
    model = MappingModel()
    model.add_rule("info@other.example", "alice@example.com")
    model.set_local_domains(["example.com"])
    changed: list[int] = []
    model.dataChanged.connect(lambda top, bottom: changed.append(bottom.row()))
    assert problem(model, 0, SOURCE)
    model.set_local_domains(["example.com", "other.example"])
    assert changed and problem(model, 0, SOURCE) is None
    assert model.data(model.index(0, SOURCE), Qt.ItemDataRole.BackgroundRole) is None


def test_csv_import_with_header_comments_and_semicolons() -> None:
    model = MappingModel()
    model.set_local_domains(["example.com"])
    added, skipped = model.import_csv(
        "address;recipients\n"
        "# the sales team\n"
        "sales@example.com;alice@example.com;bob@example.com\n"
        "info@example.com;carol@example.com\n"
        "lonely@example.com\n"
    )
    assert added == 2
    assert skipped == ["Line 5: “lonely@example.com” has no recipient after it"]
    assert model.value() == {
        "sales@example.com": ("alice@example.com", "bob@example.com"),
        "info@example.com": ("carol@example.com",),
    }


def test_csv_import_of_a_single_line() -> None:
    model = MappingModel()
    added, skipped = model.import_csv("sales@example.com,alice@example.com")
    assert (added, skipped) == (1, [])
