"""When Postbridge polls, how long copies stay at the ISP, and whether it starts at login.

The interval is the [schedule] of the config file. "Leave a copy" is stored per
mailbox (``leave_on_server_days``): the wizard sets it for every mailbox it
creates; the settings dialog edits it per mailbox, so its Schedule tab only
says where to find it. "Start at login" is not in the file at all: it is the
platform's autostart entry (:mod:`.autostart`), applied when the settings are
saved.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QSpinBox, QVBoxLayout, QWidget

from postbridge.app.autostart import Autostart
from postbridge.app.forms import Form, note_label
from postbridge.engine.config import ScheduleConfig


class ScheduleEditor(QWidget):
    changed = Signal()

    def __init__(
        self, *, autostart: Autostart, with_keep: bool, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.autostart = autostart
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.form = Form()
        layout.addWidget(self.form)
        self.interval = QSpinBox()
        self.interval.setRange(1, 1440)
        self.interval.setSuffix(" minutes")
        self.form.add(
            "Check for mail &every:",
            self.interval,
            help_text="“Poll now” in the tray menu checks at once whenever you like.",
        )
        self.keep_days = QSpinBox()
        self.keep_days.setRange(0, 3650)
        self.keep_days.setSuffix(" days")
        self.keep_days.setSpecialValueText("No — remove once delivered")
        self.form.add(
            "Leave a cop&y at the ISP:",
            self.keep_days,
            help_text="Keep delivered messages on the ISP's server for this many days, e.g. "
            "to read them on a phone as well. Nothing is removed before it is delivered.",
        )
        self.form.set_row_visible(self.keep_days, with_keep)
        self.start_at_login = QCheckBox("&Start Postbridge when I log in")
        self.form.add("", self.start_at_login)
        self.start_at_login.setAccessibleName("Start Postbridge when I log in")
        if not with_keep:
            layout.addWidget(
                note_label(
                    "How long copies stay at the ISP is set for each mailbox, on the Mailboxes tab."
                )
            )
        layout.addStretch(1)
        self.interval.valueChanged.connect(self.changed)
        self.keep_days.valueChanged.connect(self.changed)
        self.start_at_login.toggled.connect(self.changed)

    def load(self, schedule: ScheduleConfig, *, keep_days: int = 0) -> None:
        self.interval.setValue(schedule.interval_minutes)
        self.keep_days.setValue(keep_days)
        self.start_at_login.setChecked(self.autostart.is_enabled())

    def value(self) -> ScheduleConfig:
        return ScheduleConfig(interval_minutes=self.interval.value())

    def apply_autostart(self) -> str | None:
        """Make the login entry match the box; return a problem in words, if any."""
        wanted = self.start_at_login.isChecked()
        try:
            if wanted and not self.autostart.is_enabled():
                self.autostart.enable()
            elif not wanted and self.autostart.is_enabled():
                self.autostart.disable()
        except OSError as error:
            return f"Postbridge could not change its start-at-login entry: {error}"
        return None
