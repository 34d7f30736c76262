"""The wizard without a mouse, and every field named for screen readers.

A user who cannot (or prefers not to) use a mouse must get from the first page
to a saved configuration with Tab, typing, Space and Enter; a screen reader
must be able to say what each field is: every input has a label whose buddy it
is, or an accessible name of its own. Checked over every wizard page and every
settings tab, so a field added later without a label fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAccessible
from PySide6.QtTest import QTest
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QRadioButton,
    QWidget,
)
from pytestqt.qtbot import QtBot

from postbridge.app.autostart import XdgAutostart
from postbridge.app.settings import SettingsDialog
from postbridge.app.wizard import FirstRunWizard
from postbridge.engine import config as configmod
from postbridge.engine.secrets import SecretStore

INPUTS = (QLineEdit, QAbstractSpinBox, QComboBox, QCheckBox, QRadioButton, QAbstractItemView)


def focused() -> QWidget:
    widget = QApplication.focusWidget()
    assert widget is not None
    return widget


def tab_until(qtbot: QtBot, wanted: Callable[[QWidget], bool], *, limit: int = 40) -> QWidget:
    for _ in range(limit):
        if wanted(focused()):
            return focused()
        QTest.keyClick(focused(), Qt.Key.Key_Tab)
    raise AssertionError(f"Tab never reached the wanted field (stuck at {focused()!r})")


def named(name: str) -> Callable[[QWidget], bool]:
    return lambda widget: widget.accessibleName() == name


def test_the_wizard_completes_with_the_keyboard_alone(qtbot: QtBot, tmp_path: Path) -> None:
    path = tmp_path / "postbridge.toml"
    autostart = XdgAutostart(["/opt/postbridge/postbridge"], config_home=tmp_path / "xdg")
    wizard = FirstRunWizard(path, autostart=autostart)
    qtbot.addWidget(wizard)
    wizard.show()
    qtbot.waitExposed(wizard)
    wizard.activateWindow()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is not None)

    # Page 1: server, (security and port as they are), user name, password; Enter = Next.
    QTest.keyClicks(tab_until(qtbot, named("ISP's POP3 server")), "pop.isp.example")
    QTest.keyClicks(tab_until(qtbot, named("User name")), "alice@isp.example")
    QTest.keyClicks(tab_until(qtbot, named("Password")), "keyboard-pw")
    QTest.keyClick(focused(), Qt.Key.Key_Return)
    assert wizard.currentPage() is wizard.routing_page

    # Page 2: "Everyone" with Space via the arrow keys, then back to "One person".
    radio = tab_until(qtbot, lambda w: isinstance(w, QRadioButton))
    QTest.keyClick(radio, Qt.Key.Key_Down)
    assert wizard.routing.global_radio.isChecked()
    QTest.keyClick(focused(), Qt.Key.Key_Up)
    assert wizard.routing.user_radio.isChecked()
    QTest.keyClicks(tab_until(qtbot, named("Deliver to")), "alice@example.com")
    QTest.keyClick(focused(), Qt.Key.Key_Return)
    assert wizard.currentPage() is wizard.delivery_page

    # Pages 3 and 4 keep their defaults (Maildir folders, no signal).
    QTest.keyClick(focused(), Qt.Key.Key_Return)
    assert wizard.currentPage() is wizard.signal_page
    QTest.keyClick(focused(), Qt.Key.Key_Return)
    assert wizard.currentPage() is wizard.schedule_page

    # Page 5: a different interval, start at login ticked with Space, Enter = Finish.
    spin = tab_until(qtbot, named("Check for mail every"))
    QTest.keyClick(spin, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(spin, "30")
    box = tab_until(qtbot, named("Start Postbridge when I log in"))
    QTest.keyClick(box, Qt.Key.Key_Space)
    assert wizard.schedule.start_at_login.isChecked()
    QTest.keyClick(focused(), Qt.Key.Key_Return)

    assert wizard.result() == QDialog.DialogCode.Accepted
    config = configmod.load(path)
    assert config.mailboxes[0].host == "pop.isp.example"
    assert config.mailboxes[0].recipient == "alice@example.com"
    assert config.schedule.interval_minutes == 30
    assert autostart.is_enabled()
    assert SecretStore().get("alice") == "keyboard-pw"


def _is_internal(widget: QWidget) -> bool:
    """Parts of composite widgets (a spin box's line edit, a table's header)."""
    if isinstance(widget, QHeaderView):
        return True
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractSpinBox | QComboBox | QAbstractItemView):
            return True
        parent = parent.parentWidget()
    return False


def spoken_name(widget: QWidget) -> str:
    """What a screen reader announces: Qt's accessible name (own, or from the buddy label)."""
    iface = QAccessible.queryAccessibleInterface(widget)
    return iface.text(QAccessible.Text.Name) if iface is not None else ""


def unnamed_inputs(root: QWidget) -> list[str]:
    """Inputs with neither a label buddy nor an accessible name (nor text of their own)."""
    buddies = [label.buddy() for label in root.findChildren(QLabel) if label.buddy()]
    missing = []
    for widget in root.findChildren(QWidget):
        if _is_internal(widget) or not isinstance(
            widget, (*INPUTS, QPlainTextEdit, QAbstractButton)
        ):
            continue
        labelled = widget.accessibleName() or any(b is widget for b in buddies)
        if isinstance(widget, QAbstractButton):
            labelled = labelled or widget.text()
        if not labelled or not spoken_name(widget).strip():
            missing.append(f"{type(widget).__name__} {spoken_name(widget)!r}")
    return missing


def test_every_wizard_input_is_named(qtbot: QtBot, tmp_path: Path) -> None:
    wizard = FirstRunWizard(
        tmp_path / "p.toml", autostart=XdgAutostart(["x"], config_home=tmp_path)
    )
    qtbot.addWidget(wizard)
    pages = [wizard.page(i) for i in wizard.pageIds()]
    assert len(pages) == 5
    for page in pages:
        assert unnamed_inputs(page) == [], page.title()
        assert sum(isinstance(w, INPUTS) for w in page.findChildren(QWidget)) >= 2


def test_every_settings_input_is_named(qtbot: QtBot, tmp_path: Path) -> None:
    text = """
[[mailbox]]
name = "office"
kind = "global"
host = "pop.isp.example"
username = "office"
local_domains = ["example.com"]
[mailbox.map]
"sales@example.com" = "alice@example.com"
"""
    path = tmp_path / "postbridge.toml"
    path.write_text(text)
    dialog = SettingsDialog.from_file(path, autostart=XdgAutostart(["x"], config_home=tmp_path))
    qtbot.addWidget(dialog)
    assert dialog.tabs.count() == 4
    for index in range(dialog.tabs.count()):
        tab = dialog.tabs.widget(index)
        assert tab is not None
        assert unnamed_inputs(tab) == [], dialog.tabs.tabText(index)
    assert unnamed_inputs(dialog) == []


def test_the_check_notices_a_field_without_a_name(qtbot: QtBot) -> None:
    page = QWidget()
    qtbot.addWidget(page)
    QLineEdit(page)
    assert unnamed_inputs(page) == ["QLineEdit ''"]
