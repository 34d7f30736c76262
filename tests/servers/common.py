"""Plumbing shared by the private test servers: ports, the mail user, directories, processes.

Dovecot and Postfix are real daemons that run as root and switch to other users, so the
helpers here deal with what pytest's own ``tmp_path`` cannot give them: a directory that the
mail user may enter (pytest's temp root is mode 0700), short paths for Unix sockets (108
bytes at most), and a dedicated system user that owns the test mail.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
MAIL_USER = "pbtestmail"

# How long a server may take to come up or go down before the fixture gives up.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


class ServerError(RuntimeError):
    """A private test server could not be configured, started or stopped."""


@dataclass(frozen=True)
class MailUser:
    """The system account that owns every test Maildir (Dovecot and Postfix alike)."""

    name: str
    uid: int
    gid: int


def ensure_mail_user(name: str = MAIL_USER) -> MailUser:
    """Return the dedicated mail user, creating it as a system account when missing.

    Dovecot refuses uids outside first_valid_uid..last_valid_uid and Postfix's virtual(8)
    refuses uids below virtual_minimum_uid; a system account of our own lets both configs
    name exactly one uid, and never touches a real person's files.
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "Postbridge test mail",
                name,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # Exit 9 means "already exists": another test process won the race.
        if result.returncode not in (0, 9):
            raise ServerError(f"useradd {name} failed: {result.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
    return MailUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now.

    There is a short race between closing this socket and the server binding the port; the
    servers' start() retries with new ports when the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def make_root(prefix: str, parent: Path | None = None) -> Path:
    """A fresh directory under the system temp dir (or ``parent``) that the mail user can
    traverse.

    Not under pytest's tmp_path: its root is mode 0700 (unreachable for dovecot's and
    postfix's unprivileged processes) and its paths are too long for Unix sockets.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    root.chmod(0o755)
    return root


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def port_open(port: int, *, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll ``predicate()`` until it is true; raise ServerError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise ServerError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def run(args: list[str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a server's admin command; raise ServerError with its output when it fails."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServerError(f"{' '.join(args)} timed out after {timeout} s") from exc
    if result.returncode != 0:
        raise ServerError(
            f"{' '.join(args)} exited with {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants, or [] when it is already gone."""
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(proc: psutil.Process) -> bool:
    # A zombie has exited; it only waits for a parent (often pid 1 here) to reap it.
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def reap(processes: list[psutil.Process], *, timeout: float) -> None:
    """Wait for ``processes`` to exit; SIGKILL whatever is left after ``timeout``."""
    try:
        wait_until(lambda: not any(_alive(p) for p in processes), timeout=timeout, what="exit")
        return
    except ServerError:
        pass
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    survivors = [p.pid for p in processes if _alive(p)]
    if survivors:
        wait_until(
            lambda: not any(_alive(p) for p in processes),
            timeout=timeout,
            what=f"processes {survivors} to die after SIGKILL",
        )


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group; quietly nothing when it no longer exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def maildir_files(maildir: Path) -> list[Path]:
    """The message files in a Maildir's ``new/`` and ``cur/``, by name; [] if there is none."""
    paths: list[Path] = []
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError):
            paths.extend((maildir / sub).iterdir())
    return sorted(paths, key=lambda path: path.name)


def tail(path: Path, *, lines: int = 40) -> str:
    """The last lines of a log file, for error messages; '' when it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
