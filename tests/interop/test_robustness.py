"""Crash safety and memory: the promises a user cannot check for themselves.

* Killed with SIGKILL at any moment, ``postbridge poll --once`` loses nothing and
  delivers nothing twice: after 30 random kills that land mid-run (timed ones, and ones
  a random number of copies into the run; the ISP mailbox is refilled as it empties) and
  one clean run, every message is in the office Maildir exactly once and the ISP
  mailbox is empty.
* A 50 MB message passes through without the process growing by 50 MB.
"""

from __future__ import annotations

import collections
import email
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postbridge.engine.secrets import SecretStore
from tests.servers.dovecot import Dovecot

pytestmark = [pytest.mark.interop, pytest.mark.slow]

PASSWORD = "crash-test"
MESSAGES = 200
KILLS = 30


def message(n: int, body_lines: int = 40) -> bytes:
    body = b"".join(
        b"Line %d of message %d, padding padding padding.\r\n" % (i, n) for i in range(body_lines)
    )
    return (
        b"From: sender@outside.example\r\n"
        b"To: alice@isp.example\r\n"
        b"Subject: crash %d\r\n"
        b"Message-ID: <crash-%d@outside.example>\r\n"
        b"\r\n" % (n, n)
    ) + body


def write_config(tmp_path: Path, dovecot: Dovecot, **extra: object) -> Path:
    path = tmp_path / "postbridge.toml"
    lines = [
        f'data_dir = "{tmp_path / "data"}"',
        "[[mailbox]]",
        'name = "alice"',
        'kind = "user"',
        f'host = "{dovecot.host}"',
        f"port = {dovecot.pop3s_port}",
        'security = "tls"',
        'username = "alice"',
        'recipient = "alice@example.com"',
        f'ca_file = "{dovecot.ca_file}"',
        "timeout = 15",
    ]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def poll_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "postbridge", "--config", str(config), "poll", "--once"]


def delivered_ids(maildir: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for sub in ("new", "cur"):
        for path in (maildir / sub).glob("*"):
            counts[str(email.message_from_bytes(path.read_bytes())["Message-ID"])] += 1
    return counts


def count_files(folder: Path) -> int:
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


def wait_for_copies(proc: subprocess.Popen[bytes], folder: Path, wanted: int) -> None:
    """Until ``folder`` holds ``wanted`` files, the process has ended, or 30 s have passed."""
    deadline = time.monotonic() + 30
    while count_files(folder) < wanted and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    dovecot.add_user("alice", PASSWORD)
    sent = 0

    def refill() -> None:
        nonlocal sent
        dovecot.add_messages("alice", [message(i) for i in range(sent, sent + MESSAGES)])
        sent += MESSAGES

    refill()
    SecretStore().set("alice", PASSWORD)
    config = write_config(tmp_path, dovecot, delete_batch=40)
    seed = int(os.environ.get("PB_CRASH_SEED", time.time()))
    rng = random.Random(seed)
    new = tmp_path / "data" / "Mail" / "alice@example.com" / "new"
    killed_mid_run = 0
    for _ in range(3 * KILLS):
        if killed_mid_run >= KILLS:
            break
        if dovecot.count("alice") < MESSAGES // 4:
            refill()  # a kill in a run with nothing left to do would test nothing
        before = count_files(new)
        proc = subprocess.Popen(
            poll_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # A run of 200 messages takes well under a second once started, so a clock alone
        # would mostly kill finished runs. Every third kill is timed (start-up, login,
        # listing); the others wait for some copies to land, then kill within a few
        # milliseconds: between copies, batches, the ledger's commits and the DELEs.
        if rng.random() < 1 / 3:
            time.sleep(rng.uniform(0.02, 0.5))
        else:
            wait_for_copies(proc, new, before + rng.randint(1, 60))
            time.sleep(rng.uniform(0, 0.02))
        if proc.poll() is None:
            killed_mid_run += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert killed_mid_run >= KILLS, f"only {killed_mid_run} kills landed mid-run (seed {seed})"
    # Dovecot notices the dropped connection and unlocks the mailbox within moments.
    for _attempt in range(5):
        final = subprocess.run(poll_command(config), capture_output=True, text=True, timeout=120)
        if final.returncode == 0:
            break
        time.sleep(1)
    assert final.returncode == 0, (seed, final.stdout, final.stderr)
    counts = delivered_ids(tmp_path / "data" / "Mail" / "alice@example.com")
    expected = {f"<crash-{i}@outside.example>" for i in range(sent)}
    missing = expected - set(counts)
    twice = {mid: n for mid, n in counts.items() if n > 1}
    assert not missing, f"lost {len(missing)} messages (seed {seed})"
    assert not twice, f"delivered twice: {twice} (seed {seed})"
    assert set(counts) == expected
    assert dovecot.count("alice") == 0


def test_50_mb_message_keeps_memory_flat(dovecot: Dovecot, tmp_path: Path) -> None:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"  # 74 bytes
    big = (
        b"From: sender@outside.example\r\nTo: alice@isp.example\r\nSubject: big\r\n"
        b"Message-ID: <big@outside.example>\r\n\r\n"
    ) + line * (50 * 1024 * 1024 // len(line))
    dovecot.add_user("alice", PASSWORD)
    dovecot.add_message("alice", big)
    SecretStore().set("alice", PASSWORD)
    config = write_config(tmp_path, dovecot)
    del big
    # VmHWM, not getrusage's ru_maxrss: on Linux a child inherits its parent's ru_maxrss
    # across fork and exec, and the parent here is a pytest that just built 50 MB of test data.
    code = (
        "import re, sys\n"
        "from postbridge.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "status = open('/proc/self/status').read()\n"
        "print('VMHWM_KB', re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--config", str(config), "poll", "--once"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rss_kb = int(result.stdout.split("VMHWM_KB")[1].split()[0])
    assert rss_kb < 150 * 1024, f"peak RSS {rss_kb / 1024:.0f} MB"
    delivered = list((tmp_path / "data" / "Mail" / "alice@example.com" / "new").glob("*"))
    assert len(delivered) == 1
    assert delivered[0].stat().st_size > 50 * 1024 * 1024 * 0.98
    assert dovecot.count("alice") == 0
