"""Start at login: an XDG autostart entry, a Windows Run value, or a macOS LaunchAgent.

Each platform's mechanism is a file or registry value the user could write by
hand, and each launches Postbridge with ``--hidden`` (straight to the tray, no
window at every login). No admin rights anywhere: all three are per-user.

* Linux and other XDG desktops: ``$XDG_CONFIG_HOME/autostart/<APP_ID>.desktop``.
* Windows: ``HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run``, value
  ``Postbridge``, data the quoted executable path and ``--hidden``.
* macOS: ``~/Library/LaunchAgents/<APP_ID>.plist`` with ``RunAtLoad``.

The registry is reached through a small :class:`Registry` seam, so the
Windows entry is tested on any OS by the value it would write; the other two
are plain files under ``$HOME``, tested under a temporary one.
"""

from __future__ import annotations

import os
import plistlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from postbridge.app.resources import resource

APP_ID = "org.postbridge.Postbridge"
APP_NAME = "Postbridge"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def launch_command() -> list[str]:
    """How to start this Postbridge again, hidden: the frozen app, the script, or ``-m``."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "--hidden"]
    exe = Path(sys.executable)
    scripts = exe.parent
    for name in ("postbridge.exe", "postbridge") if sys.platform == "win32" else ("postbridge",):
        if (scripts / name).is_file():
            return [str(scripts / name), "--hidden"]
    if sys.platform == "win32" and (scripts / "pythonw.exe").is_file():
        exe = scripts / "pythonw.exe"  # no console window at every login
    return [str(exe), "-m", "postbridge", "--hidden"]


class Autostart(Protocol):
    def is_enabled(self) -> bool: ...
    def enable(self) -> None: ...
    def disable(self) -> None: ...


# -- Linux / XDG ------------------------------------------------------------------------------


def _desktop_quote(arg: str) -> str:
    """Quote one Exec argument (Desktop Entry Specification, "The Exec key")."""
    arg = arg.replace("%", "%%")
    if arg and not any(c in arg for c in " \t\n\"'\\><~|&;$*?#()`"):
        return arg
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return f'"{escaped}"'


def desktop_entry(command: Sequence[str], *, icon: Path | None = None) -> str:
    """The text of an XDG autostart ``.desktop`` file for ``command``."""
    # Values are "string" typed: a backslash must itself be escaped in the file.
    exec_line = " ".join(_desktop_quote(a) for a in command).replace("\\", "\\\\")
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        f"Name={APP_NAME}",
        "Comment=Collects the office's mail from the ISP and delivers it",
        f"Exec={exec_line}",
        "Terminal=false",
        "X-GNOME-Autostart-enabled=true",
    ]
    if icon is not None:
        lines.insert(5, f"Icon={icon}")
    return "\n".join(lines) + "\n"


class XdgAutostart:
    def __init__(self, command: Sequence[str] | None = None, *, config_home: Path | None = None):
        self.command = list(command or launch_command())
        base = config_home or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        self.path = base / "autostart" / f"{APP_ID}.desktop"

    def is_enabled(self) -> bool:
        return self.path.is_file()

    def enable(self) -> None:
        try:
            icon: Path | None = resource("icons", "idle-48.png")
        except FileNotFoundError:
            icon = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(desktop_entry(self.command, icon=icon), encoding="utf-8")
        os.replace(tmp, self.path)

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)


# -- macOS ------------------------------------------------------------------------------------


def launch_agent(command: Sequence[str]) -> bytes:
    """The LaunchAgent plist that starts ``command`` at login."""
    return plistlib.dumps(
        {
            "Label": APP_ID,
            "ProgramArguments": list(command),
            "RunAtLoad": True,
            "ProcessType": "Interactive",
        }
    )


class MacLaunchAgent:
    def __init__(self, command: Sequence[str] | None = None, *, home: Path | None = None):
        self.command = list(command or launch_command())
        self.path = (home or Path.home()) / "Library" / "LaunchAgents" / f"{APP_ID}.plist"

    def is_enabled(self) -> bool:
        return self.path.is_file()

    def enable(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(launch_agent(self.command))

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)


# -- Windows ----------------------------------------------------------------------------------


class Registry(Protocol):
    """The three calls on one HKCU key that the Run entry needs."""

    def get(self, key: str, name: str) -> str | None: ...
    def set(self, key: str, name: str, value: str) -> None: ...
    def delete(self, key: str, name: str) -> None: ...


class WinRegistry:
    """HKEY_CURRENT_USER through winreg (Windows only)."""

    def get(self, key: str, name: str) -> str | None:
        if sys.platform != "win32":
            raise OSError("the Windows registry exists only on Windows")
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key) as handle:
                value, _kind = winreg.QueryValueEx(handle, name)
        except FileNotFoundError:
            return None
        return str(value)

    def set(self, key: str, name: str, value: str) -> None:
        if sys.platform != "win32":
            raise OSError("the Windows registry exists only on Windows")
        import winreg

        with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, key, 0, winreg.KEY_SET_VALUE) as handle:
            winreg.SetValueEx(handle, name, 0, winreg.REG_SZ, value)

    def delete(self, key: str, name: str) -> None:
        if sys.platform != "win32":
            raise OSError("the Windows registry exists only on Windows")
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key, 0, winreg.KEY_SET_VALUE) as handle:
                winreg.DeleteValue(handle, name)
        except FileNotFoundError:
            pass


def run_value(command: Sequence[str]) -> str:
    """The Run value: the executable path always quoted (``C:\\Program Files``), then the rest."""
    exe, *args = command
    return " ".join([f'"{exe}"', *(f'"{a}"' if " " in a or not a else a for a in args)])


class WindowsRun:
    def __init__(self, command: Sequence[str] | None = None, *, registry: Registry | None = None):
        self.command = list(command or launch_command())
        self.registry = registry or WinRegistry()

    def is_enabled(self) -> bool:
        return self.registry.get(RUN_KEY, APP_NAME) is not None

    def enable(self) -> None:
        self.registry.set(RUN_KEY, APP_NAME, run_value(self.command))

    def disable(self) -> None:
        self.registry.delete(RUN_KEY, APP_NAME)


def for_platform(platform: str = sys.platform) -> Autostart:
    """The mechanism for this OS."""
    if platform == "win32":
        return WindowsRun()
    if platform == "darwin":
        return MacLaunchAgent()
    return XdgAutostart()
