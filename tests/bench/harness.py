"""Benchmark plumbing: the test corpus, timing a child process, counting what arrived.

Kept apart from the tool runners and the report so that a cheap pytest smoke test can exercise
it on tiny data (tests/test_bench_smoke.py) and the benchmark does not rot between runs.

Peak memory is the child's own: ``VmHWM`` read from ``/proc/PID/status`` every
``SAMPLE_INTERVAL`` while it runs (the kernel's high-water mark, so a sample taken any time
after the peak sees it). Not ``ru_maxrss`` from wait4(): on Linux a child inherits its
parent's maxrss across fork and exec, and this parent holds up to 100 MB of test data. CPU
seconds (user + system, threads included) do come from wait4().
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SAMPLE_INTERVAL = 0.01
HEAD_READ = 64 * 1024

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<([^>\r\n]+)>", re.IGNORECASE | re.MULTILINE)
_TEXT_LINE = (
    b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor inc\r\n"
)
_DOT_LINE = b".a line that starts with a dot, which POP3 and SMTP must stuff\r\n"


@dataclass(frozen=True)
class Dataset:
    """``count`` messages of ``size`` bytes each."""

    name: str
    count: int
    size: int

    @property
    def total_bytes(self) -> int:
        return self.count * self.size


def message_id(tag: str, index: int) -> str:
    return f"{tag}-{index}@bench.example"


def make_message(tag: str, index: int, size: int) -> bytes:
    """One message of exactly ``size`` bytes (CRLF), with a unique Message-ID."""
    head = (
        b"Return-Path: <sender%d@outside.example>\r\n"
        b"Received: from outside.example by isp.example; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        b"From: Sender %d <sender%d@outside.example>\r\n"
        b"To: Alice <alice@example.com>\r\n"
        b"Subject: benchmark message %d\r\n"
        b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        b"Message-ID: <%s>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n" % (index, index, index, index, message_id(tag, index).encode())
    )
    block = _TEXT_LINE * 30 + _DOT_LINE
    room = max(0, size - len(head))
    rest = room % len(block)
    tail = (_TEXT_LINE * (rest // len(_TEXT_LINE) + 1))[:rest]
    if rest >= 2:
        tail = tail[:-2] + b"\r\n"
    return head + block * (room // len(block)) + tail


def make_corpus(tag: str, dataset: Dataset) -> list[bytes]:
    return [make_message(tag, i, dataset.size) for i in range(dataset.count)]


def expected_ids(tag: str, count: int) -> set[str]:
    return {message_id(tag, i) for i in range(count)}


# -- what arrived ----------------------------------------------------------------------------


def maildir_message_ids(maildir: Path) -> collections.Counter[str]:
    """Message-IDs of every file in a Maildir's new/ and cur/ (read from the first 64 KB)."""
    counts: collections.Counter[str] = collections.Counter()
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(maildir / sub):
                with open(entry.path, "rb") as fh:
                    head = fh.read(HEAD_READ)
                match = _MESSAGE_ID.search(head)
                counts[match.group(1).decode() if match else f"(none: {entry.name})"] += 1
    return counts


def exactly_once(found: collections.Counter[str], expected: set[str]) -> str | None:
    """None when every expected Message-ID arrived exactly once; otherwise what went wrong."""
    missing = expected - set(found)
    twice = sorted(mid for mid, n in found.items() if n > 1)
    extra = sorted(set(found) - expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing")
    if twice:
        problems.append(f"{len(twice)} delivered more than once")
    if extra:
        problems.append(f"{len(extra)} unexpected")
    return ", ".join(problems) or None


# -- timing a child --------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    wall: float  # seconds, from Popen to exit
    cpu: float  # user + system seconds of the child (and the children it waited for)
    peak_rss: int  # bytes, VmHWM
    returncode: int
    output: str


def _vmhwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def measure(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
    stdin: bytes = b"",
    cwd: Path | None = None,
    timeout: float = 900.0,
) -> Measured:
    """Run ``command`` to its end; its wall time, CPU time and peak RSS.

    A thread blocks in wait4() so the end time is exact, while this thread samples VmHWM.
    ``user`` runs the child as that (unprivileged) account.
    """
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin)
            proc.stdin.close()
        ended: list[tuple[int, float, float]] = []

        def reap() -> None:
            _, status, usage = os.wait4(proc.pid, 0)
            ended.append(
                (
                    os.waitstatus_to_exitcode(status),
                    time.perf_counter(),
                    usage.ru_utime + usage.ru_stime,
                )
            )

        reaper = threading.Thread(target=reap, daemon=True)
        reaper.start()
        peak = 0
        deadline = start + timeout
        # Bounded by the timeout: the child is killed then, and the reaper ends.
        while reaper.is_alive():
            peak = max(peak, _vmhwm(proc.pid))
            if time.perf_counter() > deadline:
                proc.kill()
            reaper.join(SAMPLE_INTERVAL)
        returncode, end, cpu = ended[0]
        proc.returncode = returncode
        out.seek(0)
        output = out.read().decode("utf-8", "replace")
    return Measured(end - start, cpu, peak, returncode, output)


def median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
