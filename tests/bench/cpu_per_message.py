"""Micro-benchmark of the pure CPU work the poll cycle does per message (issue 7).

Not a test (tests/bench is not collected). Run it with::

    uv run python tests/bench/cpu_per_message.py [--repeat N] [--profile STEP]

Two message sets: the benchmark's own 20 KB messages (:func:`harness.make_corpus`)
and the shared real-world corpus (../shared/corpus, 373 files, many malformed),
each passed as the cycle passes it: the first ``HEAD_LIMIT`` bytes of the message.
The corpus is shown twice, the second time without its two giant header
blocks (a 206 KB Subject, a 133 KB To), which otherwise dominate its average.

Each step is timed *cold*, on a fresh copy of every message, with the header
block cache emptied, so a step never profits from another's parse. The
"cycle" lines then time the sequence the cycle really runs on one head
(cycle.py ``_after_spool`` and ``_deliver``): ``meta.extract``, ``route``,
``to_json``, ``split_header_block``, and ``message_id`` for a global mailbox,
which is where the steps share one parse.

The POP3 lines feed the pipelined RETR stream of the 20 KB set (each message
dot-stuffed behind its ``+OK`` line) in 64 KB chunks, as the socket delivers
it: to :class:`DotUnstuffer` alone, then through ``Pop3Connection.readline`` +
``read_body``, then into a ``SpoolWriter`` too (spool.py; shown for the whole
picture). The last line adds the global mailbox's cycle to ``read_body``: the
CPU a 20 KB message costs on the event loop in these steps.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make "tests" importable
    sys.path.insert(0, str(REPO))

from postbridge.engine import meta  # noqa: E402
from postbridge.engine.config import MailboxConfig  # noqa: E402
from postbridge.engine.pop3.connection import (  # noqa: E402
    READ_SIZE,
    Pop3Connection,
    asyncio_open_connection,
)
from postbridge.engine.pop3.replies import DotUnstuffer, dot_stuff  # noqa: E402
from postbridge.engine.routing import recipients  # noqa: E402
from postbridge.engine.routing.router import RouteDecision, route  # noqa: E402
from postbridge.engine.spool import HEAD_LIMIT, SpoolWriter  # noqa: E402
from tests.bench.harness import Dataset, make_corpus  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"
GIANT = 100 * 1024
READ_BODY = "readline + read_body"
clock = time.perf_counter
NOT_MESSAGES = {"README.md", "manifest.tsv"}

USER = MailboxConfig(
    name="alice",
    kind="user",
    host="pop.isp.example",
    port=995,
    security="tls",
    username="alice@isp.example",
    recipient="alice@example.com",
)
GLOBAL = MailboxConfig(
    name="office",
    kind="global",
    host="pop.isp.example",
    port=995,
    security="tls",
    username="company@isp.example",
    local_domains=("example.com", "example.net", "example.org"),
    postmaster="admin@example.com",
    address_map={
        "sales@example.com": ("alice@example.com", "bob@example.com"),
        "*@example.net": ("dave@example.com",),
    },
)


def clear_caches() -> None:
    """Empty every per-head cache, so the next call on a head parses it."""
    for name in ("parse_header_block", "_parse_header_block"):
        func = getattr(recipients, name, None)
        clear = getattr(func, "cache_clear", None)
        if clear is not None:
            clear()
    clear = getattr(recipients, "clear_cache", None)
    if clear is not None:
        clear()


def fresh(messages: Sequence[bytes]) -> list[bytes]:
    """New bytes objects with the same content (no cached hash, no identity hits)."""
    return [bytes(bytearray(m)) for m in messages]


def per_message_us(
    heads: Sequence[bytes], step: Callable[[bytes], object], *, repeat: int
) -> float:
    """µs per message of ``step``, each head cold: the sum of each head's best of ``repeat``.

    Best per message rather than best per pass: on a shared machine nearly
    every pass is interrupted somewhere, but not every try of one message.
    """
    total = 0.0
    for head in heads:
        best = float("inf")
        for _ in range(repeat):
            copy = bytes(bytearray(head))  # new object: no cached hash, no identity hit
            clear_caches()
            start = clock()
            step(copy)
            best = min(best, clock() - start)
        total += best
    return total / len(heads) * 1e6


def cycle_global(head: bytes) -> None:
    """What the cycle does with one head of a global mailbox (To/Cc-routed: message_id too)."""
    meta.extract(head)
    decision = route(GLOBAL, head)
    decision.to_json()
    recipients.message_id(head)
    recipients.split_header_block(head)


def cycle_user(head: bytes) -> None:
    meta.extract(head)
    decision = route(USER, head)
    decision.to_json()
    recipients.split_header_block(head)


# --- POP3 ------------------------------------------------------------------------------------


def retr_stream(messages: Sequence[bytes]) -> bytes:
    """The bytes a pipelining server sends for RETR of every message, one after another."""
    return b"".join(b"+OK %d octets\r\n" % len(m) + dot_stuff(m) for m in messages)


def chunked(data: bytes, size: int = READ_SIZE) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def unstuff_all(chunks: Sequence[bytes], count: int) -> int:
    """Decode ``count`` replies from the chunked stream with DotUnstuffer, as read_body does."""
    it = iter(chunks)
    buf = b""
    total = 0
    for _ in range(count):
        while b"\n" not in buf:
            buf += next(it)
        buf = buf[buf.index(b"\n") + 1 :]  # the +OK line
        decoder = DotUnstuffer()
        data = buf
        while True:
            body, done, leftover = decoder.feed(data)
            total += len(body)
            if done:
                buf = leftover
                break
            data = next(it)
    return total


class Counter:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


class _NullWriter:
    """Enough of a StreamWriter for Pop3Connection.read_body (it only reads)."""


class ChunkReader:
    """Hands out the stream in the chunks a socket would (StreamReader fed the whole
    stream at once would move the rest of it on every read, which no socket does)."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = iter(chunks)

    async def read(self, limit: int) -> bytes:
        return next(self._chunks, b"")


async def read_bodies(
    chunks: Sequence[bytes], count: int, sink: Callable[[], Callable[[bytes], object]]
) -> None:
    conn = Pop3Connection(  # never opened: the reader is handed in below
        host="bench", port=0, label="bench", timeout=30, open_connection=asyncio_open_connection
    )
    conn._reader = ChunkReader(chunks)  # type: ignore[assignment]
    conn._writer = _NullWriter()  # type: ignore[assignment]
    for _ in range(count):
        status = await conn.read_status()
        assert status.ok
        await conn.read_body(sink())


def time_pop3(messages: Sequence[bytes], *, repeat: int) -> dict[str, float]:
    stream = retr_stream(messages)
    chunks = chunked(stream)
    expected = sum(len(m) + (0 if m.endswith(b"\r\n") else 2) for m in messages)
    out: dict[str, float] = {}

    best = float("inf")
    for _ in range(repeat):
        start = clock()
        got = unstuff_all(chunks, len(messages))
        best = min(best, clock() - start)
        assert got == expected, (got, expected)
    out["DotUnstuffer.feed (64 KB chunks)"] = best

    def counter_sink() -> Callable[[bytes], object]:
        return Counter().write

    best = float("inf")
    for _ in range(repeat):
        start = clock()
        asyncio.run(read_bodies(chunks, len(messages), counter_sink))
        best = min(best, clock() - start)
    out[READ_BODY] = best

    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp)
        writers: list[SpoolWriter] = []

        def spool_sink() -> Callable[[bytes], object]:
            writer = SpoolWriter(spool / f"{len(writers)}.eml", spool / f"{len(writers)}.part")
            writers.append(writer)
            return writer.write

        best = float("inf")
        for _ in range(repeat):
            writers.clear()
            start = clock()
            asyncio.run(read_bodies(chunks, len(messages), spool_sink))
            for writer in writers:
                writer.head  # noqa: B018 - the cycle takes the head of each
            best = min(best, clock() - start)
        out["  ... into SpoolWriter.write (spool.py, not ours)"] = best
    return {name: seconds / len(messages) * 1e6 for name, seconds in out.items()}


# --- main ------------------------------------------------------------------------------------


def corpus_heads() -> list[bytes]:
    if not CORPUS.is_dir():
        return []
    paths = sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and "LICENSES" not in p.parts and p.name not in NOT_MESSAGES
    )
    return [p.read_bytes()[:HEAD_LIMIT] for p in paths]


STEPS: dict[str, Callable[[bytes], object]] = {
    "meta.extract": meta.extract,
    "route (user mailbox)": lambda h: route(USER, h),
    "route (global mailbox)": lambda h: route(GLOBAL, h),
    "split_header_block": recipients.split_header_block,
    "message_id": recipients.message_id,
}


def report(label: str, heads: Sequence[bytes], *, repeat: int) -> float:
    print(
        f"\n{label}: {len(heads)} messages, {sum(map(len, heads)) / len(heads) / 1024:.1f} KB avg"
    )
    for name, step in STEPS.items():
        print(f"  {name:<44} {per_message_us(heads, step, repeat=repeat):8.1f} µs")
    user = [route(USER, h) for h in heads]
    glob = [route(GLOBAL, h) for h in heads]
    for name, decisions in (("to_json (user decision)", user), ("to_json (global decision)", glob)):
        total = 0.0
        for d in decisions:
            best = float("inf")
            for _ in range(repeat):
                start = clock()
                d.to_json()
                best = min(best, clock() - start)
            total += best
        print(f"  {name:<44} {total / len(heads) * 1e6:8.1f} µs")
    assert all(RouteDecision.from_json(d.to_json()) == d for d in glob)
    totals = {}
    for name, seq in (("cycle, user mailbox", cycle_user), ("cycle, global mailbox", cycle_global)):
        totals[name] = per_message_us(heads, seq, repeat=repeat)
        print(f"  {name + ' (all of the above, shared)':<44} {totals[name]:8.1f} µs")
    return totals["cycle, global mailbox"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="best of N tries (default 5)")
    parser.add_argument("--count", type=int, default=1000, help="20 KB messages (default 1000)")
    parser.add_argument(
        "--profile",
        choices=["cycle-global", "cycle-user", "pop3"],
        help="cProfile one step over both sets instead of timing",
    )
    args = parser.parse_args()
    bench = [m[:HEAD_LIMIT] for m in make_corpus("cpu", Dataset("20k", args.count, 20 * 1024))]
    corpus = corpus_heads()
    if args.profile:
        profiler = cProfile.Profile()
        heads = fresh(bench + corpus)
        clear_caches()
        if args.profile == "pop3":
            chunks = chunked(retr_stream(bench))
            profiler.enable()
            asyncio.run(read_bodies(chunks, len(bench), lambda: Counter().write))
        else:
            step = cycle_global if args.profile == "cycle-global" else cycle_user
            profiler.enable()
            for head in heads:
                step(head)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    print(f"Python {sys.version.split()[0]}; µs per message (each its best of {args.repeat} tries)")
    cycle = report("benchmark messages (harness.make_corpus, 20 KB)", bench, repeat=args.repeat)
    if corpus:
        report(f"real-world corpus ({CORPUS})", corpus, repeat=args.repeat)
        # A 206 KB Subject and a 133 KB To field take most of the corpus's time;
        # the rest shows what ordinary odd mail costs.
        ordinary = [h for h in corpus if len(recipients.split_header_block(h)[0]) < GIANT]
        label = f"the corpus without its {len(corpus) - len(ordinary)} header blocks over 100 KB"
        report(label, ordinary, repeat=args.repeat)
    else:
        print(f"\n(no real-world corpus at {CORPUS})")
    print("\nPOP3 download of the 20 KB set, pipelined stream in 64 KB chunks")
    pop3 = time_pop3(bench, repeat=args.repeat)
    for name, us in pop3.items():
        print(f"  {name:<44} {us:8.1f} µs")
    total = cycle + pop3[READ_BODY]
    print(f"\nPer 20 KB message, global mailbox cycle + {READ_BODY}: {total:.1f} µs")


if __name__ == "__main__":
    main()
