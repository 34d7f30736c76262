"""Python's cycle collector runs on the GUI thread only, never on a worker thread.

CPython runs the cyclic garbage collector on whichever thread happens to
allocate when a generation's count passes its threshold. In this app that can
be the poll worker's thread or a Qt pool thread (the settings dialog's checks),
and what it frees can be Qt objects of the GUI thread: a closed window's
widgets, actions, timers. PySide hands widgets over to the main thread but
destroys other QObjects on the spot, and ``~QObject`` takes one of Qt's shared
signal/slot mutexes, then calls back into Python and so waits for the
interpreter lock. Seen in a CI run: the worker thread held such a mutex and
waited for the lock while the GUI thread, holding the lock, destroyed a
handed-over widget and waited for the same mutex. Both waited forever.

So while the GUI runs, automatic collection is off and a timer on the GUI
thread does what it would have done: every tick it collects the oldest
generation whose count has passed its threshold, as ``gc`` itself would have
on its next allocation. Reference counting still frees everything that is not
in a cycle at once, on any thread; only cycles wait for the next tick.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

TICK_MS = 100  # a busy poll allocates a generation-0 threshold's worth in well under this


class GuiThreadCollector(QObject):
    """Disables automatic ``gc`` and collects from a GUI-thread timer instead."""

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self.tick)
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer.start()

    def tick(self) -> int | None:
        """Collect the generation ``gc`` would collect now; the generation, or None."""
        counts = gc.get_count()
        thresholds = gc.get_threshold()
        for generation in (2, 1, 0):
            threshold = thresholds[generation]
            if threshold and counts[generation] > threshold:
                gc.collect(generation)
                return generation
        return None

    def remove(self) -> None:
        """Give collection back to ``gc`` (as it was before this guard)."""
        self._timer.stop()
        if self._was_enabled:
            gc.enable()


def collect_on_gui_thread(app: QObject) -> GuiThreadCollector:
    """Install the guard for ``app`` (the QApplication), once; it lives as long as the app."""
    existing = app.findChild(GuiThreadCollector)
    if isinstance(existing, GuiThreadCollector):
        return existing
    return GuiThreadCollector(app)
