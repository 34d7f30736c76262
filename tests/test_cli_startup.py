"""What ``postbridge poll --once`` loads: only what a poll needs (start-up time, issue 7).

The benchmark runs ``poll --once`` as a child process, so every import on its way counts. These
tests pin the heavy ones a plain poll must not pay for: aiosmtpd (only ATRN receives mail), the
signals and the SMTP client (only a poll that sends a signal or delivers by SMTP), Qt
and the app (only the tray app), tomli_w (only writing the config), and keyring until a password
is read (``status``, ``history``, ``--help`` never read one). They look at ``sys.modules`` in a
fresh interpreter, not at a clock, so a busy machine cannot make them flaky.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from postbridge.engine.secrets import SecretStore
from tests.fakes.pop3 import FakePop3Server, run_in_thread
from tests.test_cli import PASSWORD, message, write_config

NOT_ON_THE_POLL_PATH = (
    "aiosmtpd",
    "postbridge.engine.signals",  # no online signal configured: neither ETRN
    "postbridge.engine.delivery.smtpclient",  # nor the SMTP client it speaks with
    "postbridge.engine.signals.atrn",
    "PySide6",
    "shiboken6",
    "postbridge.app",
    "tomli_w",
)

# Runs in the child: the statements, then prints which watched modules are loaded. A module
# name that does not exist at all would make the test pass for nothing, so that fails too.
_REPORT = """
import importlib.util, sys
watched = sys.argv[1].split(",")
missing = [m for m in watched if importlib.util.find_spec(m.split(".")[0]) is None]
assert not missing, f"not installed, so the check means nothing: {missing}"
{body}
print("LOADED:" + ",".join(m for m in watched if m in sys.modules))
sys.exit(code)
"""


def loaded_after(body: str, watched: Sequence[str], *argv: str) -> tuple[list[str], str]:
    """Run ``body`` in a fresh interpreter; the watched modules it loaded, and its output."""
    result = subprocess.run(
        [sys.executable, "-c", _REPORT.replace("{body}", body), ",".join(watched), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("LOADED:"), result.stdout + result.stderr
    names = last.removeprefix("LOADED:")
    return (names.split(",") if names else []), result.stdout


def test_importing_the_cli_and_the_cycle_loads_no_keyring_atrn_or_qt() -> None:
    watched = [*NOT_ON_THE_POLL_PATH, "keyring"]
    body = "import postbridge.cli, postbridge.engine.cycle\ncode = 0"
    loaded, _ = loaded_after(body, watched)
    assert loaded == []


def test_poll_once_without_atrn_never_loads_aiosmtpd_or_qt(tmp_path: Path) -> None:
    server = FakePop3Server([message(i) for i in range(1, 3)], username="alice", password=PASSWORD)
    _, stop = run_in_thread(server)
    try:
        SecretStore().set("alice", PASSWORD)  # the child finds it: same file keyring and home
        config = write_config(tmp_path, server.port)
        body = "from postbridge.cli import main\ncode = main(sys.argv[2:])"
        loaded, out = loaded_after(
            body, NOT_ON_THE_POLL_PATH, "--config", str(config), "poll", "--once"
        )
    finally:
        stop()
    assert "2 delivered" in out  # the poll really ran, password and all
    assert loaded == []
