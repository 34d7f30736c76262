"""The building blocks every settings page shares: labelled fields, inline errors, Test panels.

Each field is added through :class:`Form`, which gives it a label that is its
buddy (so Alt+letter and screen readers find it), an accessible name, an
optional line of help, and an error line right under it that says what is
wrong in words. Pages validate by calling :meth:`Form.show_error` per field;
nothing is checked in a message box after the fact.

:class:`TestPanel` is the "Test" button with its result line: it runs an engine
coroutine in the background (:mod:`.background`) and shows the outcome in
words, green or red, without ever blocking the window.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from postbridge.app.background import CoroutineFactory, failure_words, run_in_background
from postbridge.engine.config import Security

ERROR_STYLE = "color: #b3261e;"
OK_STYLE = "color: #1b5e20;"
HELP_STYLE = "color: palette(placeholder-text);"

SECURITY_CHOICES: tuple[tuple[Security, str], ...] = (
    ("tls", "Encrypted from the start (TLS)"),
    ("starttls", "Encrypted after connecting (STARTTLS)"),
    ("none", "Not encrypted (not recommended)"),
)


_GROWING = (
    QSizePolicy.Policy.Expanding,
    QSizePolicy.Policy.MinimumExpanding,
    QSizePolicy.Policy.Ignored,
)


def plain(label: str) -> str:
    """A label without its mnemonic ampersand or trailing colon, for accessible names."""
    return label.replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip(":")


def note_label(text: str = "", *, style: str = HELP_STYLE) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setStyleSheet(style)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class Form(QWidget):
    """A two-column form whose rows carry their own error line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.layout_ = QFormLayout(self)
        self.layout_.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.layout_.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        self.layout_.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.errors: dict[QWidget, QLabel] = {}
        self.rows: dict[QWidget, QWidget] = {}

    def add(
        self,
        label: str,
        field: QWidget,
        *,
        help_text: str | None = None,
        focus: QWidget | None = None,
    ) -> QWidget:
        """Add a row; ``focus`` is the widget inside ``field`` the label points at."""
        target = focus or field
        caption = QLabel(label)
        caption.setBuddy(target)
        target.setAccessibleName(plain(label))
        cell = QWidget()
        # The cell always takes the full width, so help and error lines wrap across it; a
        # field that does not want to grow (a port, a list of choices) keeps its own size.
        cell.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        column = QVBoxLayout(cell)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        grows = field.sizePolicy().horizontalPolicy() in _GROWING
        column.addWidget(field, 0, Qt.AlignmentFlag(0) if grows else Qt.AlignmentFlag.AlignLeft)
        if help_text:
            hint = note_label(help_text)
            column.addWidget(hint)
            target.setAccessibleDescription(help_text)
        error = note_label(style=ERROR_STYLE)
        error.hide()
        column.addWidget(error)
        self.layout_.addRow(caption, cell)
        self.errors[target] = error
        self.rows[target] = cell
        return field

    def add_wide(self, widget: QWidget) -> None:
        self.layout_.addRow(widget)

    def set_row_visible(self, field: QWidget, visible: bool) -> None:
        self.layout_.setRowVisible(self.rows[field], visible)

    def show_error(self, field: QWidget, problem: str | None) -> bool:
        """Show (or clear) the field's error; return whether there was one."""
        label = self.errors[field]
        label.setText(problem or "")
        label.setVisible(bool(problem))
        return bool(problem)

    def error_of(self, field: QWidget) -> str:
        label = self.errors[field]
        return label.text() if not label.isHidden() else ""


class PageStack(QWidget):
    """Shows one of several pages, and is exactly as tall as that page.

    QStackedWidget reserves the height of its tallest page (and wrapped help
    text makes that worse), which leaves a gap under a short page; a hidden
    widget takes no room in a layout, so this stack hides the other pages.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._pages: list[QWidget] = []
        self._current: QWidget | None = None

    def addWidget(self, page: QWidget) -> None:
        self._pages.append(page)
        self._layout.addWidget(page)
        if self._current is None:
            self._current = page
        page.setVisible(page is self._current)

    def setCurrentWidget(self, page: QWidget) -> None:
        self._current = page
        for each in self._pages:
            each.setVisible(each is page)

    def currentWidget(self) -> QWidget | None:
        return self._current


class SecurityCombo(QComboBox):
    """TLS / STARTTLS / none, with words instead of acronyms alone."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        for value, text in SECURITY_CHOICES:
            self.addItem(text, value)

    def value(self) -> Security:
        return self.currentData()  # type: ignore[no-any-return]

    def set_value(self, value: Security) -> None:
        self.setCurrentIndex(max(0, self.findData(value)))


class PortBox(QSpinBox):
    """A port number that follows the security choice until the user types one."""

    def __init__(self, defaults: dict[Security, int], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(1, 65535)
        self.defaults = defaults
        self.custom = False
        self.valueChanged.connect(self._edited)
        self._setting = False

    def _edited(self) -> None:
        if not self._setting:
            self.custom = self.value() not in self.defaults.values()

    def follow(self, security: Security) -> None:
        if not self.custom:
            self._setting = True
            self.setValue(self.defaults[security])
            self._setting = False

    def load(self, port: int) -> None:
        self._setting = True
        self.setValue(port)
        self._setting = False
        self.custom = port not in self.defaults.values()


class PasswordEdit(QLineEdit):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEchoMode(QLineEdit.EchoMode.Password)
        self.stored = False

    def set_stored(self, stored: bool) -> None:
        """Say whether the keyring already holds a password, so empty means "keep it"."""
        self.stored = stored
        self.setPlaceholderText("Stored in the keyring — type to replace" if stored else "")


class PathField(QWidget):
    """A path in a line edit with a Browse… button (file or folder)."""

    changed = Signal()

    def __init__(self, *, folder: bool, caption: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder = folder
        self.caption = caption
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.edit = QLineEdit()
        self.button = QPushButton("Browse…")
        self.button.setAccessibleName(f"Browse for {caption.lower()}")
        row.addWidget(self.edit, 1)
        row.addWidget(self.button)
        self.button.clicked.connect(self.browse)
        self.edit.textChanged.connect(self.changed)
        self.setFocusProxy(self.edit)

    def browse(self) -> None:
        start = self.edit.text() or str(Path.home())
        if self.folder:
            chosen = QFileDialog.getExistingDirectory(self, self.caption, start)
        else:
            chosen, _ = QFileDialog.getOpenFileName(
                self, self.caption, start, "Certificates (*.pem *.crt *.cer);;All files (*)"
            )
        if chosen:
            self.edit.setText(chosen)

    def text(self) -> str:
        return self.edit.text().strip()

    def path(self) -> Path | None:
        return Path(self.text()).expanduser() if self.text() else None

    def set_path(self, path: Path | None) -> None:
        self.edit.setText(str(path) if path else "")


class TestPanel(QWidget):
    """A button that runs a check in the background and a line that says how it went.

    ``prepare`` returns either a coroutine factory to run or a sentence saying
    what must be filled in first. ``describe`` turns the coroutine's result
    into words.
    """

    finished = Signal(bool, str)

    def __init__(
        self,
        label: str,
        *,
        prepare: Callable[[], CoroutineFactory | str],
        describe: Callable[[object], str] = str,
        busy_text: str = "Testing…",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.prepare = prepare
        self.describe = describe
        self.busy_text = busy_text
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.button = QPushButton(label)
        self.button.setAccessibleName(plain(label))
        self.result = note_label()
        self.result.setAccessibleName(f"{plain(label)} result")
        self.result.setMinimumWidth(200)
        row.addWidget(self.button, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(self.result, 1)
        self.button.clicked.connect(self.run)
        self.ok: bool | None = None

    @property
    def running(self) -> bool:
        return not self.button.isEnabled()

    def run(self) -> None:
        job = self.prepare()
        if isinstance(job, str):
            self._show(False, job)
            return
        self.button.setEnabled(False)
        self.ok = None
        self.result.setStyleSheet(HELP_STYLE)
        self.result.setText(self.busy_text)
        run_in_background(job, on_success=self._succeeded, on_failure=self._failed)

    def _succeeded(self, result: object) -> None:
        self._show(True, self.describe(result))

    def _failed(self, error: object) -> None:
        self._show(False, failure_words(error))

    def _show(self, ok: bool, text: str) -> None:
        self.button.setEnabled(True)
        self.ok = ok
        self.result.setStyleSheet(OK_STYLE if ok else ERROR_STYLE)
        self.result.setText(text)
        self.finished.emit(ok, text)

    def clear(self) -> None:
        self.ok = None
        self.result.setText("")
