"""The download→delivery hand-off: in order, bounded, and failures stop the download."""

from __future__ import annotations

import asyncio

import pytest

from postbridge.engine.errors import StorageError
from postbridge.engine.pipeline import Pipeline


async def test_items_go_through_in_order_one_batch_at_a_time() -> None:
    seen: list[int] = []
    batches: list[list[int]] = []
    running = 0

    async def step(batch: list[int]) -> None:
        nonlocal running
        running += 1
        assert running == 1
        await asyncio.sleep(0)
        seen.extend(batch)
        batches.append(batch)
        running -= 1

    pipeline: Pipeline[int] = Pipeline(step, depth=3)
    for n in range(20):
        await pipeline.put(n)
    await pipeline.finish()
    assert seen == list(range(20))
    assert all(1 <= len(batch) <= 3 for batch in batches)
    assert await pipeline.close() == []


async def test_a_slow_step_gets_what_waited_as_one_batch() -> None:
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def step(batch: list[int]) -> None:
        batches.append(batch)
        await release.wait()

    pipeline: Pipeline[int] = Pipeline(step, depth=10)
    await pipeline.put(0)
    await asyncio.sleep(0)  # the worker takes [0] and blocks
    for n in range(1, 6):
        await pipeline.put(n)
    release.set()
    await pipeline.finish()
    assert batches == [[0], [1, 2, 3, 4, 5]]


async def test_put_waits_while_depth_items_wait() -> None:
    release = asyncio.Event()

    async def step(batch: list[int]) -> None:
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
    async def step(batch: list[int]) -> None:
        if 2 in batch:
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

    async def step(batch: list[int]) -> None:
        started.set()
        await asyncio.sleep(3600)

    pipeline: Pipeline[int] = Pipeline(step, depth=5)
    await pipeline.put(0)
    await asyncio.wait_for(started.wait(), 1)
    for n in range(1, 4):
        await pipeline.put(n)
    assert await pipeline.close() == [1, 2, 3]


def test_depth_must_be_positive() -> None:
    async def step(batch: list[int]) -> None:
        return None

    with pytest.raises(ValueError):
        Pipeline(step, depth=0)
