"""Render the tray app for a person to look at: tray icon and menu, notification, tooltip,
Activity window with data, the no-tray window and the no-config window.

Not a test (pytest does not collect it)::

    uv run python tests/screenshots.py [OUTPUT_DIR]      # default /tmp/pb-shots

It starts ``Xvfb`` and Debian's ``trayer`` as a real tray host (DESKTOP.md, "Testing a Qt app
headless"), runs the real TrayApp on the xcb platform against two fake POP3 servers on
127.0.0.1 (a user mailbox and a global one with one message nobody can route), lets it poll
once and captures the screen with ImageMagick's ``import`` while the menu, the balloon and the
tooltip are up. Then it stops the tray host and starts the app again for the no-tray window,
and renders the windows once more at ``QT_SCALE_FACTOR=2`` on the offscreen platform.
Needs the packages .ci/run installs (xvfb, trayer, imagemagick, libxcb-*); no root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRAYER = [
    "trayer",
    "--edge",
    "top",
    "--align",
    "right",
    "--widthtype",
    "request",
    "--height",
    "40",
    "--SetDockType",
    "true",
    "--transparent",
    "false",
]


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pb-shots")
    mode = os.environ.get("PB_SHOT_MODE")
    if mode:
        render(out, mode)
        sys.stdout.flush()
        os._exit(0)  # skip interpreter shutdown: the pictures are written
    out.mkdir(parents=True, exist_ok=True)
    display = _free_display()
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
    tray: subprocess.Popen[bytes] | None = None
    try:
        _wait_for_display(display)
        env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "QT_SCALE_FACTOR": "1"}
        tray = subprocess.Popen(TRAYER, env=env)
        time.sleep(1.0)
        _child(out, "tray", env)
        tray.terminate()
        tray.wait(10)
        tray = None
        time.sleep(0.5)
        _child(out, "notray", env)
        offscreen = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QT_SCALE_FACTOR": "2"}
        _child(out, "scale2", offscreen)
    finally:
        for proc in (tray, xvfb):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    print(f"Screenshots in {out.resolve()}")
    return 0


def _child(out: Path, mode: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, __file__, str(out)], env={**env, "PB_SHOT_MODE": mode}, check=True
    )


def _free_display() -> str:
    for number in range(91, 140):
        if (
            not Path(f"/tmp/.X11-unix/X{number}").exists()
            and not Path(f"/tmp/.X{number}-lock").exists()
        ):
            return f":{number}"
    raise SystemExit("no free X display number")


def _wait_for_display(display: str) -> None:
    socket = Path(f"/tmp/.X11-unix/X{display[1:]}")
    deadline = time.monotonic() + 10
    while not socket.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"Xvfb did not start on {display}")
        time.sleep(0.05)


# -- the child: one app run per mode ----------------------------------------------------------

SENDERS = [
    ("Steuerbüro Keller <post@keller-steuer.example>", "Ihre Unterlagen für 2025"),
    ("Jana Brandt <jana.brandt@supplier.example>", "Re: Angebot 4471 — Lieferzeit"),
    ("noreply@bank.example", "Kontoauszug März"),
    ("Paul Weber <p.weber@customer.example>", "Termin nächste Woche?"),
    ("Newsletter <news@fachverband.example>", "Fachverband aktuell: Ausgabe 12"),
]


def _message(n: int, sender: str, subject: str, headers: str) -> bytes:
    return (
        f"{headers}From: {sender}\r\nSubject: {subject}\r\n"
        f"Message-ID: <shot-{n}@example.net>\r\nDate: Mon, 2 Mar 2026 09:{n:02d}:00 +0100\r\n"
        f"\r\nHallo,\r\n\r\nNachricht {n}.\r\n"
    ).encode()


def _config(home: Path, ports: dict[str, int]) -> Path:
    path = home / "postbridge.toml"
    boxes = ""
    for name, port in ports.items():
        boxes += (
            f'\n[[mailbox]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {port}\n'
            f'security = "none"\nallow_plaintext_login = true\nusername = "{name}"\n'
        )
        if name == "alice":
            boxes += 'recipient = "alice@example.com"\n'
        else:
            boxes += (
                'kind = "global"\nlocal_domains = ["example.com"]\n'
                '[mailbox.map]\n"sales@example.com" = ["alice@example.com", "bob@example.com"]\n'
            )
    path.write_text(f'data_dir = "{home / "data"}"\n[schedule]\ninterval_minutes = 15\n{boxes}')
    return path


def render(out: Path, mode: str) -> None:
    home = Path(tempfile.mkdtemp(prefix="pb-shots-home-"))
    for name, sub in (
        ("HOME", ""),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
    ):
        (home / sub).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(home / sub)
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyrings.alt.file.PlaintextKeyring"

    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QCursor
    from PySide6.QtWidgets import QApplication, QToolTip, QWidget

    from postbridge.app.autostart import XdgAutostart
    from postbridge.app.controller import TrayApp
    from postbridge.app.main import make_application
    from postbridge.app.worker import Timing
    from postbridge.engine.secrets import SecretStore
    from tests.fakes.pop3 import FakePop3Server, run_in_thread

    qapp = make_application()
    suffix = "" if mode != "scale2" else "@2x"

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)

    def grab(widget: QWidget, name: str) -> None:
        spin(0.3)
        path = out / f"{name}{suffix}.png"
        widget.grab().save(str(path))
        print(path)

    def screen(name: str) -> None:
        spin(0.4)
        path = out / f"{name}.png"
        proc = subprocess.Popen(["import", "-window", "root", str(path)])
        while proc.poll() is None:
            spin(0.05)
        print(path)

    servers: list[FakePop3Server] = [
        FakePop3Server(
            [_message(i, s, t, "To: alice@isp.example\r\n") for i, (s, t) in enumerate(SENDERS)],
            username="alice",
            password="secret",
        ),
        FakePop3Server(
            [
                _message(10, *SENDERS[1], "To: info@example.com\r\nCc: bob@example.com\r\n"),
                _message(11, *SENDERS[3], "To: sales@example.com\r\n"),
                _message(12, *SENDERS[0], "To: carol@example.com, bob@example.com\r\n"),
                _message(13, "Unknown <x@spam.example>", "Gewinnspiel!", "To: x@other.example\r\n"),
            ],
            username="office",
            password="secret",
        ),
    ]
    ports: dict[str, int] = {}
    stops = []
    for name, server in zip(("alice", "office"), servers, strict=True):
        (_host, port), stop = run_in_thread(server)
        ports[name] = port
        stops.append(stop)
        SecretStore().set(name, "secret")
    config = _config(home, ports)
    app = TrayApp(
        config_path=config,
        timing=Timing(first_delay=3600),
        autostart=XdgAutostart(["/usr/bin/postbridge", "--hidden"]),
        tray_wait=3.0 if mode == "notray" else 10.0,
        tray_retry=0.5,
        open_url=lambda _url: True,
        quit_app=lambda: None,
    )
    try:
        app.start()
        before = app.cycles_seen
        app.menu.poll_now.trigger()
        deadline = time.monotonic() + 20
        while app.cycles_seen == before and time.monotonic() < deadline:
            spin(0.05)
        if mode == "tray":
            while app.tray is None and time.monotonic() < deadline:
                spin(0.1)
            assert app.tray is not None, "the tray host did not appear"
            screen("tray-notification")  # the balloon from the poll that just ended
            app.tray.showMessage("", "", app.icons.app, 1)
            spin(0.5)
            icon = app.tray.geometry()
            QToolTip.showText(icon.bottomLeft() + QPoint(0, 8), app.tooltip_text())
            screen("tray-tooltip")
            QToolTip.hideText()
            app.menu.menu.popup(icon.bottomLeft() + QPoint(-150, 4))
            screen("tray-menu")
            app.menu.menu.hide()
            QCursor.setPos(0, 0)
        else:
            spin(3.5 if mode == "notray" else 0.2)
            if app.no_tray is not None:
                grab(app.no_tray, "no-tray-window")
        app.show_activity()
        window = app.activity
        assert window is not None
        window.move(40, 60)
        window.recent_view.selectRow(1)
        grab(window, "activity-recent")
        if mode == "tray":
            screen("activity-on-screen")
        window.tabs.setCurrentIndex(1)
        window.quarantine_view.selectRow(0)
        window.show_result(
            "Message 9 was not delivered: no recipient in the local domains.", error=True
        )
        grab(window, "activity-quarantine")
        window.hide()
        app.show_about()
        if app.about is not None:
            grab(app.about, "about")
            app.about.hide()
        empty = TrayApp(
            config_path=home / "missing" / "postbridge.toml",
            timing=Timing(first_delay=3600),
            autostart=XdgAutostart(["/usr/bin/postbridge", "--hidden"]),
            tray_available=lambda: True,
            open_url=lambda _url: True,
            quit_app=lambda: None,
        )
        empty.show_no_config()
        if empty.no_config is not None:
            grab(empty.no_config, "no-config")
        empty.shutdown()
    finally:
        app.shutdown()
        for stop in stops:
            stop()
        shutil.rmtree(home, ignore_errors=True)
        del qapp


if __name__ == "__main__":
    if shutil.which("Xvfb") is None or shutil.which("trayer") is None:
        raise SystemExit("needs Xvfb and trayer (apt-get install xvfb trayer imagemagick)")
    raise SystemExit(main())
