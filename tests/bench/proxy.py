"""A delaying TCP proxy on loopback: the ISP's round trip, simulated inside the benchmark.

Every chunk read from one side is written to the other ``one_way`` seconds later, in both
directions, so a request and its reply cost ``2 * one_way`` (the round trip) while throughput
is not capped: chunks are delayed, not serialised (a delay line, like ``netem delay``). Each
direction buffers at most ``MAX_CHUNKS`` chunks of up to ``READ_SIZE`` bytes; beyond that the
proxy stops reading, and TCP flow control slows the sender down.

It runs on an event loop of its own in a background thread (``with DelayProxy(...)``, or
``start_in_thread()`` / ``stop_thread()``), so the benchmark's main thread can
drive child processes synchronously. TLS passes through untouched: clients still verify the
server's certificate for ``localhost``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

from tests.fakes.base import LoopbackServer, run_in_thread

LOOPBACK = "127.0.0.1"
READ_SIZE = 256 * 1024
MAX_CHUNKS = 64
START_TIMEOUT = 10.0


class DelayProxy(LoopbackServer):
    """Forwards ``LOOPBACK:port`` to ``target_host:target_port``, ``one_way`` seconds late.

    The listening, session tracking and thread plumbing are the fake servers' own
    (:mod:`tests.fakes.base`); this class only forwards.
    """

    def __init__(self, *, target_port: int, one_way: float, target_host: str = LOOPBACK) -> None:
        if one_way < 0:
            raise ValueError(f"delay must not be negative, got {one_way}")
        super().__init__()
        self.target_host = target_host
        self.target_port = target_port
        self.one_way = one_way
        self._stop_thread: Callable[[], None] | None = None

    @property
    def connections(self) -> int:
        return self.sessions

    # -- lifecycle (main thread) ----------------------------------------------------------------

    def start_in_thread(self) -> None:
        _, self._stop_thread = run_in_thread(self)

    def stop_thread(self) -> None:
        stop, self._stop_thread = self._stop_thread, None
        if stop is not None:
            stop()

    def __enter__(self) -> DelayProxy:
        self.start_in_thread()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_thread()

    # -- the proxy (its own thread) -------------------------------------------------------------

    async def handle_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(START_TIMEOUT):
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
        except (OSError, TimeoutError):
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # stopped by stop(); start_server would log a cancelled handler
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction through a delay line; at EOF or error, close the other side."""
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(MAX_CHUNKS)

        async def feed() -> None:
            try:
                # Bounded by the connection: it ends at EOF or with an error.
                while data := await reader.read(READ_SIZE):
                    await line.put((loop.time() + self.one_way, data))
            except OSError:
                pass
            await line.put((loop.time() + self.one_way, b""))

        feeder = asyncio.create_task(feed())
        try:
            while True:  # bounded: ends with the feeder's empty chunk
                due, data = await line.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await feeder
            writer.close()
