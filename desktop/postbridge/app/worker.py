"""The worker: runs the engine's poll cycles on a thread of their own.

A :class:`Worker` is a QObject moved to a QThread. When the thread starts, the
worker runs one asyncio event loop on it for its whole life; every engine
object (the Collector, its ledger connection, its sockets) is created and used
on that loop only. The GUI never touches them: it calls the few public methods
here, which hand work to the loop with ``loop.call_soon_threadsafe``, and it
hears back through Qt signals, which Qt queues to the GUI thread because the
worker lives on another. So the GUI thread never waits on the network.

The schedule: one cycle shortly after start (the PC was off overnight and mail
is waiting), then one every ``interval_minutes``; after a failed cycle the wait
doubles per consecutive failure, up to an hour (or the interval, if longer), so
a wrong password is not retried against the ISP every few minutes. The config
file is read again before each cycle, so an edit takes effect at the next poll.
The online signal (ETRN/ATRN) is part of each cycle (``when = "before-poll"``)
or keeps its own timer (``when = "interval"``), as in ``postbridge run``; its
outcome reaches the GUI as the engine's ``SignalFinished`` event.

Engine events arrive once per message or more: 1,000 messages make thousands
of events. Only the coarse ones (cycle and mailbox start/finish, quarantine,
notices) cross to the GUI one by one; per-message progress is folded into a
``progress`` text at most a few times a second, so a big poll cannot flood the
GUI thread's event queue.

Stopping (Quit, SIGTERM, end of session): :meth:`stop` asks the collector to
stop after the current message; if it has not within ``stop_grace`` seconds
(a large message on a slow line), the cycle task is cancelled, which the
engine's ledger makes as safe as a crash. Then the loop ends, ``stopped`` is
emitted and the owner quits and joins the thread. Never ``terminate()``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Signal, Slot

from postbridge.engine import config as configmod
from postbridge.engine.cycle import Collector
from postbridge.engine.errors import ConfigError, PostbridgeError
from postbridge.engine.events import (
    CycleStarted,
    Event,
    MailboxFinished,
    MailboxStarted,
    MessageDeferred,
    MessageDelivered,
    MessageQuarantined,
    MessagesListed,
    Notice,
    SignalFinished,
    SignalStarted,
)
from postbridge.engine.lock import DataLock
from postbridge.engine.paths import default_config_file
from postbridge.engine.secrets import SecretStore

log = logging.getLogger("postbridge.app.worker")

# Events the GUI gets one by one; the rest only feed the progress text.
_FORWARDED = (
    CycleStarted,
    MailboxStarted,
    MailboxFinished,
    MessageQuarantined,
    Notice,
    SignalStarted,
    SignalFinished,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    """The worker's clock settings; tests shrink them."""

    first_delay: float = 5.0  # seconds from start to the first cycle
    minute: float = 60.0  # seconds per configured minute
    backoff_cap_minutes: float = 60.0
    stop_grace: float = 5.0  # seconds a stop request may take before the cycle is cancelled
    progress_every: float = 0.25  # seconds between progress signals

    def delay_after(self, interval_minutes: int, failures: int) -> float:
        """Seconds until the next scheduled cycle, after ``failures`` failed ones in a row."""
        minutes = float(interval_minutes)
        if failures > 0:
            cap = max(minutes, self.backoff_cap_minutes)
            minutes = min(minutes * 2 ** (failures - 1), cap)
        return minutes * self.minute


class Worker(QObject):
    """Runs Collector cycles on its own thread's asyncio loop; talks to the GUI by signals."""

    pollingChanged = Signal(bool)
    progress = Signal(str)
    engineEvent = Signal(object)  # one of _FORWARDED
    cycleFinished = Signal(object)  # CycleFinished
    scheduleChanged = Signal(float)  # wall-clock time of the next scheduled poll; 0: none
    configLoaded = Signal(object)  # configmod.Config
    configProblem = Signal(str)
    retryFinished = Signal(int, bool, str)  # ledger id, delivered?, words
    failed = Signal(str)  # a bug in the worker: the traceback text
    stopped = Signal()

    def __init__(
        self,
        *,
        config_path: Path | None = None,
        timing: Timing | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        super().__init__()
        self._config_path = config_path
        self.timing = timing or Timing()
        self._secrets = secrets
        # Shared with the GUI thread: guarded by _lock, or plain flags read for display only.
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Callable[[], None]] = []
        self._closed = False
        self.polling = False
        # Loop-thread state.
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._paused = False
        self._poll_requested = False
        self._jobs: collections.deque[Callable[[], Awaitable[None]]] = collections.deque()
        self._collector: Collector | None = None
        self._config: configmod.Config | None = None
        self._cycle_task: asyncio.Future[Any] | None = None
        self._failures = 0
        self._listed: dict[str, int] = {}
        self._handled: dict[str, int] = {}
        self._last_progress = 0.0

    # -- called from the GUI thread -------------------------------------------------------------

    def poll_now(self) -> bool:
        """Start a cycle at once; False when one is already running (the GUI says so)."""
        if self.polling:
            return False
        self._call(self._request_poll)
        return True

    def set_paused(self, paused: bool) -> None:
        """Paused: no scheduled cycles (a running one finishes; "Poll now" still works)."""
        self._call(lambda: self._set_paused(paused))

    def retry_quarantined(self, ledger_id: int, recipients: Sequence[str] | None = None) -> None:
        """Deliver a quarantined message again, after any running cycle; see ``retryFinished``."""
        targets = list(recipients) if recipients else None
        self._call(lambda: self._add_job(lambda: self._retry(ledger_id, targets)))

    def stop(self) -> None:
        """Stop after the current message; ``stopped`` is emitted when the loop has ended."""
        self._call(self._begin_stop)

    def _call(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                return
            if self._loop is None:
                self._pending.append(fn)
                return
            self._loop.call_soon_threadsafe(fn)

    # -- the thread -----------------------------------------------------------------------------

    @Slot()
    def run(self) -> None:
        """Connected to ``QThread.started``: runs the loop until :meth:`stop`."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with self._lock:
            self._loop = loop
            for fn in self._pending:
                loop.call_soon(fn)
            self._pending.clear()
        try:
            loop.run_until_complete(self._main())
        except Exception:
            log.exception("the worker loop failed")
            self.failed.emit(traceback.format_exc())
        finally:
            with self._lock:
                self._closed = True
                self._loop = None
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
            self.polling = False
            self.stopped.emit()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        next_at = next_signal_at = loop.time() + self.timing.first_delay
        try:
            while not self._stopping:
                self._wake.clear()
                self._publish_schedule(None if self._paused else next_at)
                if self._jobs:
                    await self._jobs.popleft()()
                    continue
                signal_every = self._signal_interval()
                if signal_every and not self._paused and loop.time() >= next_signal_at:
                    await self._signal()
                    next_signal_at = loop.time() + signal_every
                    continue
                due = not self._paused and loop.time() >= next_at
                if self._poll_requested or due:
                    self._poll_requested = False
                    ok = await self._cycle()
                    if self._stopping:
                        break
                    self._failures = 0 if ok else self._failures + 1
                    interval = self._config.schedule.interval_minutes if self._config else 15
                    next_at = loop.time() + self.timing.delay_after(interval, self._failures)
                    continue
                wake_at = min(next_at, next_signal_at) if signal_every else next_at
                timeout = None if self._paused else max(0.0, wake_at - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            self._publish_schedule(None)
            await self._close_collector()

    def _signal_interval(self) -> float | None:
        """Seconds between online signals on their own timer; None when they go with polls."""
        config = self._config
        sig = config.signal if config else None
        if config is None or sig is None or not sig.enabled or sig.when != "interval":
            return None
        minutes = sig.interval_minutes or config.schedule.interval_minutes
        return minutes * self.timing.minute

    def _publish_schedule(self, next_at: float | None) -> None:
        if next_at is None:
            self.scheduleChanged.emit(0.0)
            return
        loop = asyncio.get_running_loop()
        self.scheduleChanged.emit(time.time() + max(0.0, next_at - loop.time()))

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _request_poll(self) -> None:
        self._poll_requested = True
        self._poke()

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        self._poke()

    def _add_job(self, job: Callable[[], Awaitable[None]]) -> None:
        self._jobs.append(job)
        self._poke()

    def _begin_stop(self) -> None:
        self._stopping = True
        if self._collector is not None:
            self._collector.request_stop()
        task = self._cycle_task
        if task is not None and not task.done():
            asyncio.get_running_loop().call_later(self.timing.stop_grace, task.cancel)
        self._jobs.clear()  # queued retries are dropped: the quarantine still holds the mail
        self._poke()

    # -- configuration and collector ------------------------------------------------------------

    async def _collector_for_cycle(self) -> Collector | None:
        """Re-read the config; a changed one gets a fresh Collector. None: nothing can run."""
        path = self._config_path or default_config_file()
        try:
            config = configmod.load(path)
        except ConfigError as exc:
            await self._close_collector()
            self._config = None
            self.configProblem.emit(str(exc))
            return None
        if self._collector is None or config != self._config:
            await self._close_collector()
            self._collector = Collector(
                config, secrets=self._secrets or SecretStore(), events=self._on_event
            )
            self._config = config
        self.configLoaded.emit(config)
        return self._collector

    async def _close_collector(self) -> None:
        collector, self._collector = self._collector, None
        if collector is not None:
            try:
                await collector.aclose()
            except Exception:
                log.exception("closing the collector failed")

    # -- one cycle ------------------------------------------------------------------------------

    async def _cycle(self) -> bool:
        """Run one cycle; True when every mailbox succeeded."""
        try:
            collector = await self._collector_for_cycle()
        except PostbridgeError as exc:  # the data folder cannot be opened, say
            self.configProblem.emit(str(exc))
            return False
        if collector is None:
            return False
        finished = await self._run_stoppable(collector.run_cycle)
        if finished is None:
            return False
        self.cycleFinished.emit(finished)
        return finished.ok

    async def _signal(self) -> None:
        """The online signal on its own timer; its outcome goes out as a SignalFinished event."""
        try:
            collector = await self._collector_for_cycle()
        except PostbridgeError as exc:
            self.configProblem.emit(str(exc))
            return
        if collector is not None and self._signal_interval():
            await self._run_stoppable(collector.run_signal)

    async def _run_stoppable(self, work: Callable[[], Awaitable[T]]) -> T | None:
        """Run a cycle or signal as a task that :meth:`_begin_stop` can cancel after the grace."""
        self._listed.clear()
        self._handled.clear()
        self._set_polling(True)
        task = asyncio.ensure_future(self._guarded(work))
        self._cycle_task = task
        try:
            return await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            log.warning("the poll did not stop within %.0f s; cancelled", self.timing.stop_grace)
            return None
        finally:
            self._cycle_task = None
            self._set_polling(False)

    async def _guarded(self, work: Callable[[], Awaitable[T]]) -> T | None:
        # run_cycle() and run_signal() clear the collector's stop flag as they begin; checking
        # ours in the same step means a stop requested just before is not lost.
        if self._stopping:
            return None
        return await work()

    def _set_polling(self, polling: bool) -> None:
        self.polling = polling
        self.pollingChanged.emit(polling)

    def _on_event(self, event: Event) -> None:
        """The collector's event sink (on the loop thread)."""
        if isinstance(event, MessagesListed):
            self._listed[event.mailbox] = self._handled.get(event.mailbox, 0) + event.new
        elif isinstance(event, MessageDelivered | MessageQuarantined | MessageDeferred):
            self._handled[event.mailbox] = self._handled.get(event.mailbox, 0) + 1
            self._report_progress()
        if isinstance(event, _FORWARDED):
            self.engineEvent.emit(event)

    def _report_progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < self.timing.progress_every:
            return
        self._last_progress = now
        done = sum(self._handled.values())
        total = max(sum(self._listed.values()), done)
        self.progress.emit(f"collecting mail: {done:,} of {total:,}")

    # -- quarantine -----------------------------------------------------------------------------

    async def _retry(self, ledger_id: int, recipients: list[str] | None) -> None:
        try:
            collector = await self._collector_for_cycle()
            if collector is None:
                self.retryFinished.emit(
                    ledger_id, False, "Postbridge cannot read its configuration file."
                )
                return
            with DataLock(collector.paths.lock):
                summary = await collector.retry_quarantined(ledger_id, recipients=recipients)
        except PostbridgeError as exc:
            self.retryFinished.emit(ledger_id, False, str(exc))
            return
        row = collector.ledger.get(ledger_id)
        if summary.delivered:
            to = ", ".join(row.recipients) if row else ""
            self.retryFinished.emit(ledger_id, True, f"Message {ledger_id} delivered to {to}.")
        else:
            reason = (row.last_error if row else None) or "see the Activity window"
            self.retryFinished.emit(
                ledger_id, False, f"Message {ledger_id} was not delivered: {reason}"
            )
