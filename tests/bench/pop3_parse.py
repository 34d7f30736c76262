"""Micro-benchmark of POP3 retrieval: the dot-unstuffer alone, then RETR over loopback.

Not a test (tests/bench is not collected). Run it with::

    uv run python -m tests.bench.pop3_parse

Targets (DESIGN.md): at least 50 MB/s through the parser, and thousands of
20 KB messages per second on loopback. The loopback figure includes the fake
server, which is Python too, so the client alone is faster than shown; the
poplib line gives a reference point on the same fake server.
"""

from __future__ import annotations

import asyncio
import logging
import poplib
import time

from postbridge.engine.pop3.client import Pop3Client
from postbridge.engine.pop3.connection import READ_SIZE
from postbridge.engine.pop3.replies import DotUnstuffer, dot_stuff
from tests.fakes.pop3 import FakePop3Server, run_in_thread


class Counter:
    """A sink that only counts, so the figures measure parsing, not storage."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def realistic_body(size: int) -> bytes:
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod t\r\n"
    dotted = b".leading dot line that the server stuffed\r\n"
    block = line * 20 + dotted
    return b"Subject: bench\r\n\r\n" + block * (size // len(block) + 1)


def bench_parser(label: str, body: bytes, repeat: int = 3) -> None:
    wire = dot_stuff(body)
    chunks = [wire[i : i + READ_SIZE] for i in range(0, len(wire), READ_SIZE)]
    best = float("inf")
    for _ in range(repeat):
        decoder = DotUnstuffer()
        sink = Counter()
        start = time.perf_counter()
        for chunk in chunks:
            data, done, _ = decoder.feed(chunk)
            sink.write(data)
            if done:
                break
        best = min(best, time.perf_counter() - start)
    assert sink.size == len(body) + (0 if body.endswith(b"\r\n") else 2)
    print(f"parser, {label}: {len(wire) / best / 1e6:8.0f} MB/s ({len(wire) / 1e6:.0f} MB)")


async def bench_loopback(count: int, size: int, *, pipelining: bool) -> None:
    body = realistic_body(size)[:size] + b"\r\n"
    server = FakePop3Server([body] * count, pipelining=pipelining)
    async with server:
        client = Pop3Client(
            host=server.host,
            port=server.port,
            security="none",
            allow_plaintext_login=True,
            timeout=30,
        )
        async with client:
            await client.login("alice", "secret")
            total = 0

            async def done(msgnum: int, sink: Counter) -> None:
                nonlocal total
                total += sink.size

            start = time.perf_counter()
            completed = await client.retr_many(
                range(1, count + 1), open_sink=lambda n: Counter(), on_complete=done, window=32
            )
            elapsed = time.perf_counter() - start
    assert completed == count and total == count * len(body)
    mode = "pipelined" if pipelining else "one by one"
    print(
        f"loopback, {count} x {size // 1000} KB, {mode}: "
        f"{count / elapsed:8.0f} messages/s, {total / elapsed / 1e6:6.0f} MB/s"
    )


def bench_poplib(count: int, size: int) -> None:
    body = realistic_body(size)[:size] + b"\r\n"
    server = FakePop3Server([body] * count)
    (host, port), stop = run_in_thread(server)
    try:
        pop = poplib.POP3(host, port, timeout=30)
        pop.user("alice")
        pop.pass_("secret")
        start = time.perf_counter()
        for number in range(1, count + 1):
            pop.retr(number)
        elapsed = time.perf_counter() - start
        pop.quit()
    finally:
        stop()
    print(f"poplib reference, {count} x {size // 1000} KB: {count / elapsed:8.0f} messages/s")


def main() -> None:
    # The client warns (rightly) that this benchmark allows plaintext login.
    logging.getLogger("postbridge.pop3").setLevel(logging.ERROR)
    bench_parser("realistic mail", realistic_body(64_000_000))
    bench_parser("every line a dot", b".\r\n" * 10_000_000)
    bench_parser("one huge line", b"x" * 64_000_000 + b"\r\n")
    asyncio.run(bench_loopback(5000, 20_000, pipelining=True))
    asyncio.run(bench_loopback(5000, 20_000, pipelining=False))
    asyncio.run(bench_loopback(20, 5_000_000, pipelining=True))
    bench_poplib(5000, 20_000)


if __name__ == "__main__":
    main()
