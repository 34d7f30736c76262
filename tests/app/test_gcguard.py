"""Cycles are collected on the GUI thread only while the app runs (app/gcguard.py).

The hang this prevents: the poll worker's thread ran the collector, which destroyed a Qt
object of the GUI thread there, while the GUI thread destroyed another: each held what the
other waited for (a Qt mutex, the interpreter lock).
"""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from postbridge.app.gcguard import collect_on_gui_thread
from postbridge.app.main import make_application


class Node(QObject):
    """A Qt object in a reference cycle: only the cycle collector can free it."""

    def __init__(self) -> None:
        super().__init__()
        self.me = self


def test_a_cycle_dropped_while_a_worker_allocates_is_freed_on_the_gui_thread(
    qtbot: QtBot, qapp: QApplication
) -> None:
    assert make_application() is qapp
    guard = collect_on_gui_thread(qapp)
    assert collect_on_gui_thread(qapp) is guard  # one per application
    assert not gc.isenabled()

    collections: list[int] = []
    freed_on: list[int] = []

    def started(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append(threading.get_ident())

    node = Node()
    ref = weakref.ref(node, lambda _: freed_on.append(threading.get_ident()))
    del node  # garbage now, but only a collection can tell

    kept: list[list[int]] = []

    def allocate() -> None:
        # Many times the generation-0 threshold, kept alive (freeing them would lower the
        # count again): with automatic collection on, gc would certainly run here, on this
        # thread, and free the Node.
        kept.extend([i] for i in range(gc.get_threshold()[0] * 50))

    gc.callbacks.append(started)
    try:
        worker = threading.Thread(target=allocate)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert collections == [], "the collector ran on the worker thread"
        assert ref() is not None

        qtbot.waitUntil(lambda: ref() is None, timeout=5_000)  # the guard's next tick
    finally:
        gc.callbacks.remove(started)
    kept.clear()
    gui = threading.get_ident()
    assert freed_on == [gui]
    assert collections and set(collections) == {gui}


def test_tick_collects_only_a_generation_past_its_threshold(qapp: QApplication) -> None:
    guard = collect_on_gui_thread(qapp)
    gc.collect()
    assert guard.tick() is None  # every count is below its threshold right after a collection
    kept = [[i] for i in range(gc.get_threshold()[0] + 10)]
    assert guard.tick() == 0
    assert gc.get_count()[0] < gc.get_threshold()[0]
    kept.clear()
