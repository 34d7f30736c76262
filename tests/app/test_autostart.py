"""Start at login: the XDG entry under a temporary HOME, and what Windows and macOS would get."""

from __future__ import annotations

import os
import plistlib
from pathlib import Path

from pytestqt.qtbot import QtBot

from postbridge.app.autostart import (
    APP_ID,
    RUN_KEY,
    MacLaunchAgent,
    WindowsRun,
    XdgAutostart,
    desktop_entry,
    for_platform,
    launch_command,
)
from tests.app.conftest import AppFactory


def exec_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("Exec="))[5:]


def test_menu_toggle_writes_and_removes_the_xdg_entry(
    qtbot: QtBot, tmp_path: Path, make_app: AppFactory
) -> None:
    home = Path(os.environ["HOME"])
    assert str(home).startswith(str(tmp_path))  # the suite's isolated HOME
    app = make_app(autostart=XdgAutostart(["/opt/Post Bridge/postbridge", "--hidden"]))
    app.start()
    entry = home / ".config" / "autostart" / f"{APP_ID}.desktop"
    assert not app.menu.autostart.isChecked()

    app.menu.autostart.trigger()
    assert app.menu.autostart.isChecked()
    text = entry.read_text()
    assert "[Desktop Entry]" in text and "Type=Application" in text
    assert exec_line(text) == '"/opt/Post Bridge/postbridge" --hidden'
    assert "Icon=" in text and Path(text.split("Icon=")[1].splitlines()[0]).is_file()

    app.menu.autostart.trigger()
    assert not app.menu.autostart.isChecked()
    assert not entry.exists()


def test_the_no_tray_window_checkbox_drives_the_same_action(
    qtbot: QtBot, make_app: AppFactory
) -> None:
    app = make_app()
    app.start()
    assert app.no_tray is not None
    app.no_tray.autostart.click()
    assert app.menu.autostart.isChecked() and app.autostart.is_enabled()
    app.no_tray.autostart.click()
    assert not app.menu.autostart.isChecked() and not app.autostart.is_enabled()


def test_desktop_entry_quotes_what_the_spec_says() -> None:
    text = desktop_entry(["/usr/bin/python3", "-m", "postbridge", "--hidden"])
    assert exec_line(text) == "/usr/bin/python3 -m postbridge --hidden"
    odd = desktop_entry(['/home/a"b/$x/100%/py', "--hidden"])
    # Quoted, with " $ escaped by a backslash (itself doubled as a string value), % doubled.
    assert exec_line(odd) == '"/home/a\\\\"b/\\\\$x/100%%/py" --hidden'


def test_launch_command_ends_with_hidden() -> None:
    command = launch_command()
    assert command[-1] == "--hidden"
    assert Path(command[0]).exists()


def test_linux_default_is_xdg_under_xdg_config_home() -> None:
    backend = for_platform("linux")
    assert isinstance(backend, XdgAutostart)
    assert backend.path == Path(os.environ["XDG_CONFIG_HOME"]) / "autostart" / f"{APP_ID}.desktop"


class FakeRegistry:
    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def get(self, key: str, name: str) -> str | None:
        return self.values.get((key, name))

    def set(self, key: str, name: str, value: str) -> None:
        self.values[(key, name)] = value

    def delete(self, key: str, name: str) -> None:
        self.values.pop((key, name), None)


def test_windows_run_value_quotes_the_exe_path() -> None:
    registry = FakeRegistry()
    run = WindowsRun(
        [r"C:\Users\Ann\AppData\Local\Postbridge\Postbridge.exe", "--hidden"], registry=registry
    )
    assert not run.is_enabled()
    run.enable()
    assert registry.values == {
        (RUN_KEY, "Postbridge"): r'"C:\Users\Ann\AppData\Local\Postbridge\Postbridge.exe" --hidden'
    }
    assert RUN_KEY == r"Software\Microsoft\Windows\CurrentVersion\Run"
    assert run.is_enabled()
    run.disable()
    assert registry.values == {} and not run.is_enabled()


def test_macos_launch_agent_plist(tmp_path: Path) -> None:
    agent = MacLaunchAgent(
        ["/Applications/Postbridge.app/Contents/MacOS/Postbridge", "--hidden"], home=tmp_path
    )
    agent.enable()
    path = tmp_path / "Library" / "LaunchAgents" / f"{APP_ID}.plist"
    data = plistlib.loads(path.read_bytes())
    assert data == {
        "Label": APP_ID,
        "ProgramArguments": ["/Applications/Postbridge.app/Contents/MacOS/Postbridge", "--hidden"],
        "RunAtLoad": True,
        "ProcessType": "Interactive",
    }
    assert agent.is_enabled()
    agent.disable()
    assert not path.exists()
