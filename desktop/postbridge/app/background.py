"""Run one engine coroutine off the GUI thread and hear about its end on the GUI thread.

The settings dialog's Test and Detect buttons talk to servers that may take
seconds to answer or never answer at all; the window must stay responsive
meanwhile (DESIGN.md: "the GUI thread never blocks on the network"). The
poll worker has its own long-lived loop, but these checks are one-offs that
must not queue behind a running poll, so each runs ``asyncio.run`` on a
thread of Qt's pool.

:class:`BackgroundTask` lives on the GUI thread; the pool thread only emits
its private signal, which Qt queues to the GUI thread, where the task
re-emits ``succeeded`` or ``failed`` (Anki's ``QueryOp`` shape: every
operation reports success *or* failure, never nothing). A task keeps itself
alive until it has reported, so a dialog closed mid-test loses nothing but
the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from postbridge.engine.errors import PostbridgeError

log = logging.getLogger("postbridge.app")

CoroutineFactory = Callable[[], Coroutine[Any, Any, object]]

_running: set[BackgroundTask] = set()


class BackgroundTask(QObject):
    """One coroutine on a pool thread; ``succeeded(result)`` or ``failed(error)`` once."""

    succeeded = Signal(object)
    failed = Signal(object)  # a PostbridgeError, or another Exception for a bug
    _done = Signal(bool, object)

    def __init__(self, factory: CoroutineFactory) -> None:
        super().__init__()
        self._factory = factory
        self._done.connect(self._report)
        self.finished = False

    def start(self, pool: QThreadPool | None = None) -> None:
        _running.add(self)
        (pool or QThreadPool.globalInstance()).start(_Runner(self))

    def _run(self) -> None:
        """On the pool thread: run the coroutine on a loop of its own."""
        try:
            result = asyncio.run(self._factory())
        except PostbridgeError as error:
            self._done.emit(False, error)
        except Exception as error:  # a bug: keep the traceback in the log
            log.exception("background task failed")
            self._done.emit(False, error)
        else:
            self._done.emit(True, result)

    def _report(self, ok: bool, payload: object) -> None:
        """On the GUI thread (queued from the pool thread)."""
        self.finished = True
        _running.discard(self)
        if ok:
            self.succeeded.emit(payload)
        else:
            self.failed.emit(payload)
        self.deleteLater()


class _Runner(QRunnable):
    def __init__(self, task: BackgroundTask) -> None:
        super().__init__()
        self._task = task

    def run(self) -> None:
        self._task._run()


def run_in_background(
    factory: CoroutineFactory,
    *,
    on_success: Callable[[object], None],
    on_failure: Callable[[object], None],
) -> BackgroundTask:
    """Start ``factory()`` on a pool thread; the callbacks run on the GUI thread.

    Pass bound methods of widgets as callbacks: Qt then drops the call when
    the widget is gone.
    """
    task = BackgroundTask(factory)
    task.succeeded.connect(on_success)
    task.failed.connect(on_failure)
    task.start()
    return task


def failure_words(error: object) -> str:
    """What to show for a failure: the user-facing sentence and the server's own words."""
    if isinstance(error, PostbridgeError):
        text = str(error).rstrip()
        if error.detail and error.detail not in text:
            text += f"\n(Details: {error.detail})"
        return text
    return (
        f"Postbridge hit an internal error ({type(error).__name__}: {error}). "
        "The details are in the log file."
    )


def running_tasks() -> int:
    """How many tasks have not reported yet (tests wait for zero)."""
    return len(_running)
