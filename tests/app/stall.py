"""Measure how long the GUI thread's event loop goes without running, during a big poll.

Shared by tests/app/test_stall.py (which asserts it) and tests/bench/gui_stall.py (which
prints it). A precise QTimer ticks every few milliseconds on the GUI thread; the longest gap
between two ticks, less the interval, is the longest time a click or a repaint would have had
to wait. Everything the GUI does during the poll (progress in the tooltip, the Activity
window refreshing itself) happens on that same thread, so it is inside the measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop, Qt, QTimer

from postbridge.app.controller import TrayApp

TICK_MS = 5
TARGET_MS = 50.0
SETTLE_S = 0.3


class StallMeter:
    def __init__(self, tick_ms: int = TICK_MS) -> None:
        self.tick_ms = tick_ms
        self.gaps: list[float] = []
        self._last: float | None = None
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(tick_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append((now - self._last) * 1000.0)
        self._last = now

    def start(self) -> None:
        self._last = None
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    @property
    def worst_stall_ms(self) -> float:
        return max((g - self.tick_ms for g in self.gaps), default=0.0)

    def percentile_stall_ms(self, fraction: float) -> float:
        if not self.gaps:
            return 0.0
        ordered = sorted(self.gaps)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] - self.tick_ms


@dataclass(frozen=True)
class StallResult:
    messages: int
    seconds: float
    worst_ms: float
    p99_ms: float
    ticks: int


def big_message(n: int) -> bytes:
    body = "".join(
        f"Line {i} of a message of ordinary size, for the stall test.\r\n" for i in range(60)
    )
    return (
        f"From: Sender {n} <sender{n}@outside.example>\r\n"
        f"To: alice@isp.example\r\n"
        f"Subject: stall {n}\r\n"
        f"Message-ID: <stall-{n}@outside.example>\r\n"
        "\r\n" + body
    ).encode()


def measure_poll(
    app: TrayApp,
    *,
    expected: int,
    delivered: Callable[[], int],
    timeout: float = 120.0,
) -> StallResult:
    """Start the app's poll with the Activity window open; measure until the cycle is over."""
    app.show_activity()
    QCoreApplication.processEvents()
    meter = StallMeter()
    before = app.cycles_seen
    # A real event loop, as in the app (not a processEvents() spin, which would hold the GIL
    # far more than an idle GUI does); a GUI-thread timer ends it when the cycle is reported.
    loop = QEventLoop()
    deadline = time.perf_counter() + timeout

    finished_at: list[float] = []

    def check() -> None:
        now = time.perf_counter()
        if app.cycles_seen != before and not finished_at:
            finished_at.append(now)
        # Measure on a little past the end: the Activity window's refresh and repaint count.
        if (finished_at and now - finished_at[0] > SETTLE_S) or now > deadline:
            loop.quit()

    watch = QTimer()
    watch.timeout.connect(check)
    watch.start(20)
    meter.start()
    started = time.perf_counter()
    app.menu.poll_now.trigger()
    loop.exec()
    meter.stop()
    seconds = (finished_at[0] if finished_at else time.perf_counter()) - started
    watch.stop()
    if app.cycles_seen == before:
        raise TimeoutError(f"the poll did not finish within {timeout:.0f} s")
    count = delivered()
    if count != expected:
        raise AssertionError(f"{count} of {expected} messages were delivered")
    return StallResult(
        messages=count,
        seconds=seconds,
        worst_ms=meter.worst_stall_ms,
        p99_ms=meter.percentile_stall_ms(0.99),
        ticks=len(meter.gaps),
    )


def count_files(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*")) if folder.is_dir() else 0
