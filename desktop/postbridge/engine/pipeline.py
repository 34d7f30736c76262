"""An in-order, bounded hand-off from the POP3 download to the delivery of messages.

Without it the download waits while every message is routed, delivered and
recorded, and the disk waits while the next message is downloaded. With it
the poll cycle downloads the next messages while the ones before are being
delivered. The delivery step takes everything that has arrived since it last
ran, in download order, as one batch: when delivery is the slower side the
batches grow, so its fixed costs (a thread hop, an fsync of a directory, a
ledger transaction) are shared by more messages; when the download is slower
a batch is a single message and nothing waits for company. Batches run one
at a time, in order.

A failure of a step is raised by the next :meth:`Pipeline.put` (so the
download stops, as it would have without the pipeline) or by
:meth:`Pipeline.finish`. :meth:`Pipeline.close` stops the worker and returns
the items it never took, for the caller to clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Pipeline(Generic[T]):
    """Feeds items to ``step`` in order, in batches of what waits, at most ``depth`` waiting."""

    def __init__(self, step: Callable[[list[T]], Awaitable[object]], *, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._step = step
        self._depth = depth
        self._items: deque[T] = deque()
        self._changed = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None

    async def put(self, item: T) -> None:
        """Queue ``item``; waits while ``depth`` items wait; raises a failed step's error."""
        self._raise_failure()
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        # Bounded: each turn waits for the worker to take an item or to fail.
        while len(self._items) >= self._depth:
            self._changed.clear()
            await self._wait_changed()
            self._raise_failure()
        self._items.append(item)
        self._changed.set()

    async def finish(self) -> None:
        """Wait until every queued item went through ``step``; raise its first failure."""
        self._closing = True
        self._changed.set()
        if self._worker is not None:
            await asyncio.shield(self._worker)

    async def close(self) -> list[T]:
        """Stop the worker (cancelling a step in progress); return the items never taken."""
        self._closing = True
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
        if worker is not None:
            with contextlib.suppress(BaseException):
                await worker
        left = list(self._items)
        self._items.clear()
        return left

    def _raise_failure(self) -> None:
        worker = self._worker
        if worker is not None and worker.done():
            error = worker.exception()
            if error is not None:
                raise error
            raise RuntimeError("the delivery pipeline stopped early")  # pragma: no cover

    async def _wait_changed(self) -> None:
        worker = self._worker
        assert worker is not None
        waiter = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({waiter, worker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def _run(self) -> None:
        # Bounded by the items put: it ends once closing and drained.
        while True:
            if self._items:
                batch = list(self._items)
                self._items.clear()
                self._changed.set()
                await self._step(batch)
                continue
            if self._closing:
                return
            self._changed.clear()
            await self._changed.wait()
