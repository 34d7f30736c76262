"""The tray application: wires the worker, the tray (or its stand-in window), notifications
and the Activity window together, and owns the app's visible state.

It is the only class that knows all the others; none of them knows it. Worker
signals arrive here queued (the worker lives on its own thread and this object
on the GUI thread), which is why every connection below goes to a bound method
of this QObject and never to a lambda: a lambda has no receiver thread and
would run on the worker's.

Quitting has two paths. :meth:`request_quit` (the Quit action, SIGTERM) is
gentle: it hides the icon, asks the worker to stop after the current message
and lets the event loop run until the thread has finished, then quits the app.
:meth:`shutdown` is the blocking version for ``aboutToQuit`` and the end of the
desktop session, when there is no event loop left to wait in.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QThread, QTimer, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication, QSystemTrayIcon, QWidget

from postbridge.app.about import AboutBox
from postbridge.app.activity import ActivityWindow
from postbridge.app.autostart import Autostart, for_platform
from postbridge.app.icons import Icons
from postbridge.app.noconfig import NoConfigWindow
from postbridge.app.notifier import CallbackNotifier, Notifier, TrayNotifier
from postbridge.app.settings import SettingsDialog
from postbridge.app.single_instance import HIDDEN
from postbridge.app.status import (
    APP_TITLE,
    AppState,
    Notification,
    NotificationPolicy,
    has_error,
    result_text,
    signal_summary,
    tooltip,
)
from postbridge.app.tray import NoTrayWindow, TrayMenu, make_tray_icon
from postbridge.app.wizard import FirstRunWizard
from postbridge.app.worker import Timing, Worker
from postbridge.engine import config as configmod
from postbridge.engine.errors import ConfigError
from postbridge.engine.events import (
    CycleFinished,
    CycleStarted,
    Event,
    MailboxSummary,
    Notice,
    SignalFinished,
)
from postbridge.engine.paths import DataPaths, default_config_file, default_log_dir
from postbridge.engine.secrets import SecretStore

log = logging.getLogger("postbridge.app")


class TrayApp(QObject):
    """Postbridge's GUI: one per process, created after the QApplication."""

    def __init__(
        self,
        *,
        config_path: Path | None = None,
        hidden: bool = False,
        timing: Timing | None = None,
        notifier: Notifier | None = None,
        autostart: Autostart | None = None,
        secrets: SecretStore | None = None,
        tray_available: Callable[[], bool] = QSystemTrayIcon.isSystemTrayAvailable,
        tray_wait: float = 30.0,
        tray_retry: float = 2.0,
        open_url: Callable[[QUrl], bool] = QDesktopServices.openUrl,
        quit_app: Callable[[], None] = QApplication.quit,
    ) -> None:
        super().__init__()
        self.config_path = config_path or default_config_file()
        self.hidden = hidden
        self._notifier = notifier
        self._default_notifier: Notifier = CallbackNotifier(self._show_in_window)
        self.autostart = autostart or for_platform()
        self._tray_available = tray_available
        self._tray_deadline = time.monotonic() + tray_wait
        self._open_url = open_url
        self._quit_app = quit_app

        self.icons = Icons()
        self.menu = TrayMenu()
        self.policy = NotificationPolicy()
        self.tray: QSystemTrayIcon | None = None
        self.no_tray: NoTrayWindow | None = None
        self.activity: ActivityWindow | None = None
        self.no_config: NoConfigWindow | None = None
        self.wizard: FirstRunWizard | None = None
        self.settings_dialog: SettingsDialog | None = None
        self._secrets = secrets
        self.about: AboutBox | None = None
        self.notifications: list[Notification] = []  # this session's, newest last

        self.config: configmod.Config | None = None
        self.polling = False
        self.paused = False
        self.config_problem: str | None = None
        self.last_finished: CycleFinished | None = None
        self.last_signal: MailboxSummary | None = None  # the ETRN/ATRN outcome, as a summary
        self._in_cycle = False
        self._cycle_signal: MailboxSummary | None = None
        self.cycles_seen = 0
        self.last_poll: float | None = None
        self.next_poll: float | None = None
        self.progress: str | None = None
        self._shown_state: AppState | None = None
        self._quitting = False

        self.worker = Worker(config_path=self.config_path, timing=timing, secrets=secrets)
        self.worker_thread = QThread()
        self.worker_thread.setObjectName("postbridge-worker")
        self.worker.moveToThread(self.worker_thread)
        self.worker_thread.started.connect(self.worker.run)
        self.worker_thread.finished.connect(self._thread_finished)
        self.worker.stopped.connect(self.worker_thread.quit)
        self.worker.pollingChanged.connect(self._polling_changed)
        self.worker.progress.connect(self._progress)
        self.worker.engineEvent.connect(self._engine_event)
        self.worker.cycleFinished.connect(self._cycle_finished)
        self.worker.scheduleChanged.connect(self._schedule_changed)
        self.worker.configLoaded.connect(self._config_loaded)
        self.worker.configProblem.connect(self._config_problem)
        self.worker.retryFinished.connect(self._retry_finished)
        self.worker.failed.connect(self._worker_failed)

        m = self.menu
        m.poll_now.triggered.connect(self.poll_now)
        m.pause.triggered.connect(self.toggle_pause)
        m.activity.triggered.connect(self.show_activity)
        m.settings.triggered.connect(self.open_settings)
        m.open_mail.triggered.connect(self.open_mail_folder)
        m.autostart.triggered.connect(self.set_autostart)
        m.about.triggered.connect(self.show_about)
        m.quit.triggered.connect(self.request_quit)

        self._tray_timer = QTimer(self)
        self._tray_timer.setInterval(int(tray_retry * 1000))
        self._tray_timer.timeout.connect(self._look_for_tray)

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Read the config for the menu, start the worker, show the tray (or its stand-in)."""
        try:
            self.config = configmod.load(self.config_path)
        except ConfigError as exc:
            self.config_problem = str(exc)
        self.menu.autostart.setChecked(self.autostart.is_enabled())
        self._update_actions()
        self.worker_thread.start()
        if self._tray_available():
            self._show_tray()
        else:
            if not self.hidden:
                self._show_no_tray()
            self._tray_timer.start()
        if not self.config_path.exists() and not self.hidden:
            self.show_first_run()
        self._refresh_status()
        log.info("Postbridge is running (config %s)", self.config_path)

    def _show_tray(self) -> None:
        if self.tray is None:
            self.tray = make_tray_icon(self.menu, self.icons.for_state(self.state))
            self.tray.activated.connect(self._tray_activated)
            self._default_notifier = TrayNotifier(self.tray, fallback=self._show_in_window)
        self._shown_state = None
        self.tray.show()
        if self.no_tray is not None:
            self.no_tray.tray_present = True
        self._refresh_status()

    def _show_no_tray(self) -> None:
        if self.no_tray is None:
            self.no_tray = NoTrayWindow(self.menu, self.icons.app)
            self._refresh_status()
        self.no_tray.showNormal()
        self.no_tray.raise_()

    @Slot()
    def _look_for_tray(self) -> None:
        """The tray host can appear some seconds after login: keep looking for a while."""
        if self._tray_available():
            self._tray_timer.stop()
            self._show_tray()
        elif time.monotonic() >= self._tray_deadline:
            self._tray_timer.stop()
            if self.no_tray is None or not self.no_tray.isVisible():
                self._show_no_tray()

    @Slot(QSystemTrayIcon.ActivationReason)
    def _tray_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.show_activity()

    @Slot(str)
    def on_second_launch(self, message: str) -> None:
        """Another ``postbridge`` was started: show ourselves (unless it was an autostart)."""
        if message == HIDDEN:
            return
        if self.tray is None:
            self._show_no_tray()
        self.show_activity()

    # -- the visible state ----------------------------------------------------------------------

    @property
    def state(self) -> AppState:
        if self.polling:
            return AppState.POLLING
        if self.paused:
            return AppState.PAUSED
        if self.config_problem or (self.last_finished and has_error(self.last_finished)):
            return AppState.ERROR
        if self.last_signal is not None and self.last_signal.error:
            return AppState.ERROR
        return AppState.IDLE

    def tooltip_text(self) -> str:
        last_result = result_text(self.last_finished) if self.last_finished else None
        text = tooltip(
            state=self.state,
            last_poll=self.last_poll,
            last_result=last_result,
            next_poll=self.next_poll,
            progress=self.progress,
        )
        if self.config_problem and not self.polling:
            missing = not self.config_path.exists()
            first = "not set up yet" if missing else "the settings have a mistake"
            text = f"{APP_TITLE}: {first}\n" + text.split("\n", 1)[1]
        return text

    def _refresh_status(self) -> None:
        state = self.state
        tip = self.tooltip_text()
        if self.tray is not None:
            if state != self._shown_state:
                self.tray.setIcon(self.icons.for_state(state))
            self.tray.setToolTip(tip)
        self._shown_state = state
        lines = tip.split("\n")
        self.menu.status.setText(lines[0] if state is AppState.POLLING else lines[1])
        self.menu.set_paused(self.paused)
        if self.no_tray is not None:
            self.no_tray.status.setText(tip)
            self.no_tray.setWindowIcon(self.icons.for_state(state))

    def _update_actions(self) -> None:
        maildir = self.config is not None and self.config.delivery.kind == "maildir"
        self.menu.open_mail.setEnabled(maildir)
        self.menu.open_mail.setToolTip(
            "" if maildir else "Mail is delivered to a mail server, not to a folder."
        )

    def notify(self, note: Notification) -> None:
        self.notifications.append(note)
        del self.notifications[:-50]
        (self._notifier or self._default_notifier).notify(note)

    def _show_in_window(self, note: Notification) -> None:
        if self.no_tray is not None:
            self.no_tray.show_message(note)

    # -- worker signals -------------------------------------------------------------------------

    @Slot(bool)
    def _polling_changed(self, polling: bool) -> None:
        self.polling = polling
        self.progress = None
        self._refresh_status()
        if self.activity is not None:
            self.activity.show_progress("collecting mail…" if polling else None)

    @Slot(str)
    def _progress(self, text: str) -> None:
        self.progress = text
        self._refresh_status()
        if self.activity is not None:
            # Only a line of text while a poll runs: re-reading and repainting the table
            # would make the GUI thread wait on the worker for the interpreter lock again
            # and again (tests/app/test_stall.py); the table refreshes when the cycle ends.
            self.activity.show_progress(text)

    @Slot(object)
    def _engine_event(self, event: Event) -> None:
        if isinstance(event, Notice):
            for note in self.policy.notice(event.mailbox, event.text):
                self.notify(note)
        elif isinstance(event, CycleStarted):
            self._in_cycle = True
            self._cycle_signal = None
        elif isinstance(event, SignalFinished):
            self.last_signal = signal_summary(event.summary)
            if self._in_cycle:  # "before-poll": reported together with the cycle
                self._cycle_signal = self.last_signal
            else:  # on its own timer: report now
                for note in self.policy.after_cycle(CycleFinished((self.last_signal,))):
                    self.notify(note)
                self._refresh_status()
                if self.activity is not None and self.activity.isVisible():
                    self.activity.refresh_soon()

    @Slot(object)
    def _cycle_finished(self, finished: CycleFinished) -> None:
        if self._cycle_signal is not None:
            # A "before-poll" signal: one notification for what it and the poll brought.
            finished = CycleFinished((self._cycle_signal, *finished.summaries))
        self._in_cycle, self._cycle_signal = False, None
        self.last_finished = finished
        self.cycles_seen += 1
        self.last_poll = time.time()
        self.config_problem = None
        for note in self.policy.after_cycle(finished):
            self.notify(note)
        self._refresh_status()
        if self.activity is not None and self.activity.isVisible():
            self.activity.refresh_soon()

    @Slot(float)
    def _schedule_changed(self, when: float) -> None:
        self.next_poll = when or None
        self._refresh_status()

    @Slot(object)
    def _config_loaded(self, config: configmod.Config) -> None:
        self.config = config
        self.config_problem = None
        self._update_actions()
        self._refresh_status()
        if self.no_config is not None:
            self.no_config.close()

    @Slot(str)
    def _config_problem(self, text: str) -> None:
        self.config_problem = text
        self._refresh_status()
        if self.no_config is not None and self.no_config.isVisible():
            self.no_config.show_problem(text if self.config_path.exists() else None)
        elif self.config_path.exists() or self.hidden:
            for note in self.policy.config_problem(text):
                self.notify(note)

    @Slot(int, bool, str)
    def _retry_finished(self, ledger_id: int, ok: bool, text: str) -> None:
        if self.activity is not None:
            self.activity.show_result(text, error=not ok)
            self.activity.refresh()

    @Slot(str)
    def _worker_failed(self, details: str) -> None:
        self.notify(
            Notification(
                APP_TITLE,
                f"Postbridge hit an internal error and stopped collecting; see the log in "
                f"{default_log_dir()}.",
                is_error=True,
            )
        )

    @Slot()
    def _thread_finished(self) -> None:
        # ``finished`` is emitted while the thread still winds down; wait (the interpreter
        # lock released) until it has, so nothing can destroy a QThread mid-finish later.
        self.worker_thread.wait(10_000)
        if self._quitting:
            self._quit_app()

    # -- commands -------------------------------------------------------------------------------

    @Slot()
    def poll_now(self) -> None:
        if not self.config_path.exists():
            self.show_first_run()
            return
        if not self.worker.poll_now():
            self.notify(Notification(APP_TITLE, "A poll is already running."))

    @Slot()
    def toggle_pause(self) -> None:
        self.paused = not self.paused
        self.worker.set_paused(self.paused)
        self._refresh_status()

    @Slot()
    def show_activity(self) -> None:
        if self.activity is None:
            self.activity = ActivityWindow(self._ledger_path, self.icons.app)
            self.activity.retryRequested.connect(self._retry_requested)
        self.activity.refresh()
        self.activity.show()
        self.activity.raise_()
        self.activity.activateWindow()

    def _ledger_path(self) -> Path | None:
        return DataPaths(self.config.data_dir).ledger if self.config else None

    @Slot(int, object)
    def _retry_requested(self, ledger_id: int, recipients: list[str] | None) -> None:
        self.worker.retry_quarantined(ledger_id, recipients)

    @Slot()
    def open_settings(self) -> None:
        """The settings dialog; the first-run wizard while there is no config file yet.

        A file that exists but does not load (edited by hand) cannot be shown in
        the dialog without losing what is in it: the not-set-up window then shows
        the problem, with the file's folder one click away.
        """
        if not self.config_path.exists():
            self.show_first_run()
            return
        if self.settings_dialog is not None and self.settings_dialog.isVisible():
            self._raise(self.settings_dialog)
            return
        try:
            dialog = SettingsDialog.from_file(
                self.config_path, secrets=self._secrets, autostart=self.autostart
            )
        except ConfigError as exc:
            self.show_no_config()
            if self.no_config is not None:
                self.no_config.show_problem(str(exc))
            return
        dialog.configSaved.connect(self._settings_saved)
        dialog.finished.connect(self._settings_closed)
        self.settings_dialog = dialog
        self._raise(dialog)

    @Slot()
    def show_first_run(self) -> None:
        """The first-run wizard; Finish writes the config and starts polling."""
        if self.wizard is None:
            self.wizard = FirstRunWizard(
                self.config_path, secrets=self._secrets, autostart=self.autostart
            )
            self.wizard.setWindowIcon(self.icons.app)
            self.wizard.configSaved.connect(self._first_run_saved)
        self._raise(self.wizard)

    @Slot()
    def _settings_closed(self) -> None:
        if self.settings_dialog is not None:
            self.settings_dialog.deleteLater()
            self.settings_dialog = None

    @staticmethod
    def _raise(window: QWidget) -> None:
        window.show()
        window.raise_()
        window.activateWindow()

    @Slot(object)
    def _settings_saved(self, config: configmod.Config) -> None:
        # The worker reads the file again before every cycle; this updates menu and tooltip now.
        self._config_loaded(config)
        self.menu.autostart.setChecked(self.autostart.is_enabled())

    @Slot(object)
    def _first_run_saved(self, config: configmod.Config) -> None:
        self._settings_saved(config)
        self.worker.poll_now()

    @Slot()
    def show_no_config(self) -> None:
        if self.no_config is None:
            self.no_config = NoConfigWindow(self.config_path, self.icons.app)
            self.no_config.openFolderRequested.connect(self._open_config_folder)
            self.no_config.checkRequested.connect(self._check_config)
        self.no_config.show()
        self.no_config.raise_()
        self.no_config.activateWindow()

    @Slot()
    def _open_config_folder(self) -> None:
        folder = self.config_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        self._open_url(QUrl.fromLocalFile(str(folder)))

    @Slot()
    def _check_config(self) -> None:
        try:
            config = configmod.load(self.config_path)
        except ConfigError as exc:
            if self.no_config is not None:
                self.no_config.show_problem(str(exc))
            return
        self._config_loaded(config)
        self.worker.poll_now()

    @Slot()
    def open_mail_folder(self) -> None:
        if self.config is None or self.config.delivery.kind != "maildir":
            return
        root = self.config.maildir_root
        root.mkdir(parents=True, exist_ok=True)
        self._open_url(QUrl.fromLocalFile(str(root)))

    @Slot(bool)
    def set_autostart(self, enabled: bool) -> None:
        try:
            if enabled:
                self.autostart.enable()
            else:
                self.autostart.disable()
        except OSError as exc:
            self.notify(
                Notification(APP_TITLE, f"Could not change “Start at login”: {exc}", is_error=True)
            )
        self.menu.autostart.setChecked(self.autostart.is_enabled())

    @Slot()
    def show_about(self) -> None:
        if self.about is None:
            self.about = AboutBox(self.icons.app)
        data_dir = self.config.data_dir if self.config else None
        self.about.show_for(config_path=self.config_path, data_dir=data_dir)

    # -- quitting -------------------------------------------------------------------------------

    @Slot()
    def request_quit(self) -> None:
        """Stop after the current message, then quit, without blocking the GUI meanwhile."""
        if self._quitting:
            return
        self._quitting = True
        self._hide_everything()
        if self.worker_thread.isRunning():
            self.worker.stop()
            self.worker_thread.quit()  # takes effect once the worker's run() returns
        else:
            self._quit_app()

    def shutdown(self, *, timeout: float | None = None) -> None:
        """Blocking stop for ``aboutToQuit`` / session end; never ``terminate()``."""
        self._quitting = True
        self._hide_everything()
        if not self.worker_thread.isRunning():
            self.worker_thread.wait(10_000)  # not started, or winding down after its run()
            return
        self.worker.stop()
        self.worker_thread.quit()
        limit = timeout if timeout is not None else self.worker.timing.stop_grace + 25.0
        if self.worker_thread.wait(int(limit * 1000)):
            return
        # The loop itself is stuck (not merely a slow network read, which stop_grace cancels).
        # Exiting is as safe as a crash, which the ledger is built for; destroying a running
        # QThread would abort instead.
        log.critical("the worker did not stop within %.0f s; exiting without it", limit)
        logging.shutdown()
        os._exit(1)

    def _hide_everything(self) -> None:
        self._tray_timer.stop()
        if self.tray is not None:
            self.tray.hide()  # Windows leaves a ghost icon otherwise
        windows: tuple[QWidget | None, ...] = (
            self.activity,
            self.no_config,
            self.about,
            self.wizard,
            self.settings_dialog,
        )
        for window in windows:
            if window is not None:
                window.hide()
        if self.no_tray is not None:
            self.no_tray.tray_present = True  # let it close for real
            self.no_tray.close()
        if self.activity is not None:
            self.activity.reader.close()
