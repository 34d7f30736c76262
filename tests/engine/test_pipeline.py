"""The download→delivery hand-off: in order, bounded, and failures stop the download."""

from __future__ import annotations

import asyncio

import pytest

from postbridge.engine.errors import StorageError
from postbridge.engine.pipeline import Pipeline


async def test_items_go_through_in_order_one_at_a_time() -> None:
    seen: list[int] = []
    running = 0

    async def step(item: int) -> None:
        nonlocal running
        running += 1
        assert running == 1
        await asyncio.sleep(0)
        seen.append(item)
        running -= 1

    pipeline: Pipeline[int] = Pipeline(step, depth=3)
    for n in range(20):
        await pipeline.put(n)
    await pipeline.finish()
    assert seen == list(range(20))
    assert await pipeline.close() == []


async def test_put_waits_while_depth_items_wait() -> None:
    release = asyncio.Event()

    async def step(item: int) -> None:
        await release.wait()

    pipeline: Pipeline[int] = Pipeline(step, depth=2)
    await pipeline.put(1)  # taken by the worker, which then blocks
    await asyncio.sleep(0)
    await pipeline.put(2)
    await pipeline.put(3)
    blocked = asyncio.ensure_future(pipeline.put(4))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    release.set()
    await asyncio.wait_for(blocked, 1)
    await pipeline.finish()


async def test_a_failed_step_stops_the_producer_and_leaves_the_rest() -> None:
    async def step(item: int) -> None:
        if item == 2:
            raise StorageError("disk full")

    pipeline: Pipeline[int] = Pipeline(step, depth=100)
    with pytest.raises(StorageError):
        for n in range(1, 1000):
            await pipeline.put(n)
            await asyncio.sleep(0)
    with pytest.raises(StorageError):
        await pipeline.finish()
    left = await pipeline.close()
    assert 2 not in left
    assert left == sorted(left)


async def test_close_cancels_a_step_in_progress_and_returns_what_was_never_taken() -> None:
    started = asyncio.Event()

    async def step(item: int) -> None:
        started.set()
        await asyncio.sleep(3600)

    pipeline: Pipeline[int] = Pipeline(step, depth=5)
    for n in range(4):
        await pipeline.put(n)
    await asyncio.wait_for(started.wait(), 1)
    assert await pipeline.close() == [1, 2, 3]


def test_depth_must_be_positive() -> None:
    async def step(item: int) -> None:
        return None

    with pytest.raises(ValueError):
        Pipeline(step, depth=0)
