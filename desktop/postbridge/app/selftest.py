"""``postbridge --self-test``: does this build of Postbridge have everything it needs?

The smoke test of a frozen build (PyInstaller, packaging/), and a quick check on a user's
machine. A frozen app fails in ways a source checkout never does: a module that is only
imported lazily is missing, Qt's platform or image plugins were not collected, keyring lost its
backends because its entry-point metadata was left out, a test-only package slipped in. So each
check here does the real thing, once, in a temporary directory:

* every module of the package imports (``pkgutil.walk_packages``, which also works on the
  frozen archive);
* the resources (icons) are found;
* the QApplication starts, and the whole tray app is built: menu, tray icon, the worker thread
  with its asyncio loop (it must run one poll cycle and report back), the Activity, About,
  no-config and no-tray windows, the first-run wizard and whatever "Settings…" opens, each
  rendered once;
* the single-instance lock and local socket work (QtNetwork);
* platformdirs resolves the config, data and log folders (printed, not created);
* keyring's backends are visible, and the one in use is printed, with a warning when it is
  not the operating system's keyring;
* a ledger is created, written and read back; the TLS CA store has certificates (a warning
  when it has none).

Nothing outside a temporary directory is touched: no autostart entry, no real config, no
network. Exit 0 when every check passed (warnings included), 1 otherwise, with each failure
in words.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import ssl
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import postbridge
from postbridge import __version__

if TYPE_CHECKING:
    from PySide6.QtWidgets import QWidget

# The OS keyring backend modules keyring needs on each platform, with the libraries they import.
_OS_BACKENDS: dict[str, tuple[str, ...]] = {
    "linux": ("keyring.backends.SecretService", "secretstorage", "jeepney"),
    "win32": ("keyring.backends.Windows", "win32ctypes.pywin32.win32cred"),
    "darwin": ("keyring.backends.macOS", "keyring.backends.macOS.api"),
}

# Never part of the app: installed, keyrings.alt becomes keyring's default and keeps passwords
# in a plain file without anyone choosing it (packaging/README.md).
_FORBIDDEN_IN_BUNDLE = ("keyrings", "pytest")

WORKER_TIMEOUT = 20.0  # seconds for the worker thread to start and run one empty poll cycle


@dataclass
class Report:
    """What the self-test found; printed line by line as it goes."""

    out: TextIO | None
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def _line(self, tag: str, text: str) -> None:
        if self.out is not None:
            print(f"{tag:<5} {text}", file=self.out, flush=True)

    def ok(self, text: str) -> None:
        self._line("ok", text)

    def info(self, text: str) -> None:
        self._line("", text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self._line("WARN", text)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        self._line("FAIL", text)

    @contextlib.contextmanager
    def check(self, what: str) -> Iterator[None]:
        """Run one check; an exception fails it with the error and where it came from."""
        try:
            yield
        except Exception as exc:  # a self-test reports every failure, whatever its kind
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.fail(
                f"{what}: {type(exc).__name__}: {exc} "
                f"(at {Path(where.filename).name}:{where.lineno})"
            )


def frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


# -- checks without Qt ----------------------------------------------------------------------------


def check_imports(report: Report, *, verbose: bool = False) -> list[str]:
    """Import every module of the package; returns the names imported."""
    imported: list[str] = []
    errors: list[str] = []

    def onerror(name: str) -> None:
        exc = sys.exc_info()[1]
        errors.append(f"{name}: {type(exc).__name__}: {exc}")

    for info in pkgutil.walk_packages(postbridge.__path__, "postbridge.", onerror=onerror):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # running it would start Postbridge
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # every broken module is worth naming, not just the first
            errors.append(f"{info.name}: {type(exc).__name__}: {exc}")
        else:
            imported.append(info.name)
            if verbose:
                report.info(f"imported {info.name}")
    for error in errors:
        report.fail(f"import {error}")
    if not errors:
        report.ok(f"imported all {len(imported)} modules of the postbridge package")
    return imported


def check_resources(report: Report) -> None:
    from postbridge.app.icons import SIZES
    from postbridge.app.resources import resources_dir
    from postbridge.app.status import AppState

    with report.check("resources"):
        folder = resources_dir()
        missing = [
            f"{state.value}-{size}.png"
            for state in AppState
            for size in SIZES
            if not (folder / "icons" / f"{state.value}-{size}.png").is_file()
        ]
        if missing:
            report.fail(f"resources in {folder}: missing icons {', '.join(missing)}")
        else:
            report.ok(f"resources: {folder}")


def check_dirs(report: Report) -> None:
    from postbridge.engine.paths import default_config_file, default_data_dir, default_log_dir

    with report.check("platformdirs"):
        report.ok(f"config file: {default_config_file()}")
        report.ok(f"data folder: {default_data_dir()}")
        report.ok(f"log folder:  {default_log_dir()}")


def check_keyring(report: Report) -> None:
    from postbridge.engine.secrets import backend_info

    with report.check("keyring entry points"):
        names = sorted(ep.name for ep in importlib.metadata.entry_points(group="keyring.backends"))
        if names:
            report.ok(f"keyring backends registered: {', '.join(names)}")
        else:
            report.fail(
                "keyring has no registered backends (its entry-point metadata is missing "
                "from this build), so passwords cannot be stored"
            )
    wanted = _OS_BACKENDS.get("linux" if sys.platform.startswith("linux") else sys.platform, ())
    for module in wanted:
        with report.check(f"keyring backend module {module}"):
            importlib.import_module(module)
    if wanted:
        report.ok(f"OS keyring modules present: {', '.join(wanted)}")
    if frozen():
        leaked = [n for n in _FORBIDDEN_IN_BUNDLE if importlib.util.find_spec(n) is not None]
        for name in leaked:
            report.fail(f"{name} is in this build, but it is a test-only package")
        if not leaked:
            report.ok(f"no test-only packages in the build ({', '.join(_FORBIDDEN_IN_BUNDLE)})")
    with report.check("keyring backend"):
        info = backend_info()
        line = f"keyring backend: {info.name}"
        if info.usable and info.is_os_keyring:
            report.ok(line + " (the system keyring)")
        elif info.usable:
            report.warn(line + ": not the system keyring; passwords may be kept in a plain file")
        else:
            report.warn(line + ": " + info.describe())


def check_ledger(report: Report, folder: Path) -> None:
    from postbridge.engine.ledger import Ledger
    from postbridge.engine.paths import DataPaths

    with report.check("ledger"):
        paths = DataPaths(folder / "ledger-check")
        paths.ensure()
        ledger = Ledger(paths.ledger)
        try:
            ledger.add_listed("self-test", [("uid-1", 100)])
            counts = ledger.counts()
        finally:
            ledger.close()
        if sum(counts.values()) != 1:
            raise RuntimeError(f"wrote one message, read back {counts}")
        report.ok(f"ledger: created, written and read back in {paths.ledger}")


def check_tls(report: Report) -> None:
    with report.check("TLS"):
        context = ssl.create_default_context()
        cas = context.cert_store_stats().get("x509_ca", 0)
        line = f"TLS: {ssl.OPENSSL_VERSION}, {cas} trusted CA certificates"
        if cas or sys.platform == "win32":  # Windows loads its store on demand
            report.ok(line)
        else:
            paths = ssl.get_default_verify_paths()
            report.warn(
                f"{line}: none found (looked in {paths.cafile} and {paths.capath}); "
                "servers' certificates cannot be verified unless each mailbox sets ca_file "
                "or SSL_CERT_FILE points to a CA bundle"
            )


# -- checks with Qt -------------------------------------------------------------------------------


class _NoAutostart:
    """The self-test must not add or remove the user's real login item."""

    def is_enabled(self) -> bool:
        return False

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass


def check_qt(report: Report, folder: Path) -> None:
    """Start the QApplication, build the whole tray app, open every window once."""
    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import qInstallMessageHandler
    from PySide6.QtGui import QGuiApplication, QImageReader
    from PySide6.QtWidgets import QApplication, QSystemTrayIcon

    from postbridge.app.main import make_application

    qt_messages: list[str] = []

    def on_qt_message(_mode: object, _context: object, message: str) -> None:
        qt_messages.append(message)

    with report.check("QApplication"):
        make_application()
        report.ok(
            f"Qt {pyside_version} on the “{QGuiApplication.platformName()}” platform; "
            f"system tray available: {'yes' if QSystemTrayIcon.isSystemTrayAvailable() else 'no'}"
        )
    if QApplication.instance() is None:
        return
    previous_handler = qInstallMessageHandler(on_qt_message)
    try:
        formats = {bytes(f.data()).decode() for f in QImageReader.supportedImageFormats()}
        missing = {"png", "ico"} - formats
        if missing:
            report.fail(f"Qt image formats missing: {', '.join(sorted(missing))}")
        else:
            report.ok(f"Qt image formats: {', '.join(sorted(formats))}")
        _check_single_instance(report, folder)
        _check_tray_app(report, folder)
        QApplication.processEvents()
    finally:
        qInstallMessageHandler(previous_handler)
    for message in dict.fromkeys(qt_messages):
        report.info(f"Qt said: {message}")


def _check_single_instance(report: Report, folder: Path) -> None:
    from postbridge.app.single_instance import SingleInstance

    with report.check("single instance"):
        instance = SingleInstance(lock_path=folder / "instance" / "postbridge-app.lock")
        try:
            if not instance.acquire():
                raise RuntimeError("could not take a fresh lock in a temporary folder")
        finally:
            instance.release()
        report.ok("single-instance lock and local socket (QtNetwork)")


def _check_tray_app(report: Report, folder: Path) -> None:
    from PySide6.QtCore import QEventLoop, QTimer, QUrl
    from PySide6.QtWidgets import QApplication

    from postbridge.app.controller import TrayApp
    from postbridge.app.notifier import CallbackNotifier
    from postbridge.app.tray import NoTrayWindow, make_tray_icon
    from postbridge.app.worker import Timing
    from postbridge.engine.events import CycleFinished

    config = folder / "config" / "postbridge.toml"
    config.parent.mkdir(parents=True)
    data = (folder / "data").as_posix()
    config.write_text(f'data_dir = "{data}"\n', encoding="utf-8")
    opened: list[str] = []

    def open_url(url: QUrl) -> bool:
        opened.append(url.toString())
        return True

    before = set(QApplication.topLevelWidgets())
    modal_closed: list[str] = []

    def close_modal() -> None:
        # "Settings…" may open a modal dialog with exec(): close it so the self-test goes on.
        widget = QApplication.activeModalWidget()
        if widget is not None and widget.isVisible():
            modal_closed.append(type(widget).__name__)
            widget.close()

    guard = QTimer()
    guard.setInterval(100)
    guard.timeout.connect(close_modal)
    shell: TrayApp | None = None
    try:
        with report.check("tray app"):
            shell = TrayApp(
                config_path=config,
                hidden=True,
                timing=Timing(first_delay=3600.0),  # no poll during the self-test
                notifier=CallbackNotifier(lambda _note: None),
                autostart=_NoAutostart(),
                open_url=open_url,
                quit_app=lambda: None,
            )
            finished: list[CycleFinished] = []
            problems: list[str] = []
            waiter = QEventLoop()

            def on_finished(result: CycleFinished) -> None:
                finished.append(result)
                waiter.quit()

            def on_problem(text: str) -> None:
                problems.append(text)
                waiter.quit()

            shell.worker.cycleFinished.connect(on_finished)
            shell.worker.configProblem.connect(on_problem)
            shell.worker.failed.connect(on_problem)
            shell.start()
            shell.poll_now()  # one real cycle: config, data folder, ledger, delivery target
            QTimer.singleShot(int(WORKER_TIMEOUT * 1000), waiter.quit)
            if not finished and not problems:
                waiter.exec()
            if problems:
                raise RuntimeError(f"the worker's poll cycle failed: {problems[0]}")
            if not finished:
                raise RuntimeError(f"the worker thread did not report within {WORKER_TIMEOUT} s")
            report.ok("worker thread: its asyncio loop ran a poll cycle and reported back")
            actions = [a.text() for a in shell.menu.commands()]
            report.ok(f"tray menu: {', '.join(actions)}")
            tray = shell.tray or make_tray_icon(shell.menu, shell.icons.app)
            if tray.contextMenu() is not shell.menu.menu or tray.icon().isNull():
                raise RuntimeError("the tray icon has no menu or no icon")
            report.ok("tray icon built with its menu")
            windows: dict[str, QWidget | None] = {
                "no-tray window": NoTrayWindow(shell.menu, shell.icons.app)
            }
            shell.show_activity()
            windows["Activity"] = shell.activity
            shell.show_about()
            windows["About"] = shell.about
            shell.show_no_config()
            windows["no-config window"] = shell.no_config
            shell.show_first_run()
            windows["first-run wizard"] = shell.wizard
            _render_and_close(windows)
            report.ok(f"windows built and rendered: {', '.join(windows)}")
            # Whatever "Settings…" opens (a dialog, or the config file in an editor for now).
            guard.start()
            shell.menu.settings.trigger()
            QApplication.processEvents()
            guard.stop()
            opened_windows: dict[str, QWidget | None] = {
                type(w).__name__: w
                for w in set(QApplication.topLevelWidgets()) - before
                if w.isVisible() and w not in windows.values()
            }
            _render_and_close(opened_windows)
            shown = [*opened_windows, *modal_closed, *opened]
            report.ok(f"Settings… opens: {', '.join(shown) or 'nothing visible'}")
            tray.hide()
    finally:
        guard.stop()
        if shell is not None:
            with report.check("stopping the worker"):
                shell.shutdown(timeout=WORKER_TIMEOUT)
                if shell.worker_thread.isRunning():
                    raise RuntimeError("the worker thread is still running")
                report.ok("worker stopped")


def _render_and_close(windows: dict[str, QWidget | None]) -> None:
    for name, window in windows.items():
        if window is None:
            raise RuntimeError(f"the {name} was not created")
        if window.grab().isNull():
            raise RuntimeError(f"the {name} did not render")
        window.close()


# -- the whole run --------------------------------------------------------------------------------


def run_self_test(
    *,
    out: TextIO | None,
    verbose: bool = False,
    extra: Callable[[Report], None] | None = None,
) -> int:
    """Run every check, print each result and a verdict; 0 when nothing failed."""
    started = time.monotonic()
    report = Report(out)
    where = sys.executable if frozen() else f"source ({Path(postbridge.__file__).parent})"
    report.info(
        f"Postbridge {__version__} self-test: Python {platform.python_version()} on "
        f"{platform.platform()}, {'frozen' if frozen() else 'not frozen'}, from {where}"
    )
    if not _has_display():
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="postbridge-selftest-") as tmp:
        folder = Path(tmp)
        check_imports(report, verbose=verbose)
        check_resources(report)
        check_dirs(report)
        check_keyring(report)
        check_ledger(report, folder)
        check_tls(report)
        check_qt(report, folder)
        if extra is not None:
            extra(report)
    took = time.monotonic() - started
    if report.failures:
        report.info(
            f"Self-test FAILED: {len(report.failures)} problem(s), "
            f"{len(report.warnings)} warning(s), {took:.1f} s:"
        )
        for failure in report.failures:
            report.info(f"  - {failure}")
        return 1
    report.info(f"Self-test passed ({len(report.warnings)} warning(s), {took:.1f} s).")
    return 0


def _has_display() -> bool:
    """Whether Qt's default platform can open windows here (else the self-test goes offscreen)."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
