"""A delaying TCP proxy on loopback: the ISP's round trip, simulated inside the benchmark.

Every chunk read from one side is written to the other ``one_way`` seconds later, in both
directions, so a request and its reply cost ``2 * one_way`` (the round trip) while throughput
is not capped: chunks are delayed, not serialised (a delay line, like ``netem delay``). Each
direction buffers at most ``MAX_CHUNKS`` chunks of up to ``READ_SIZE`` bytes; beyond that the
proxy stops reading, and TCP flow control slows the sender down.

It runs on an event loop of its own in a background thread, so the benchmark's main thread can
drive child processes synchronously. TLS passes through untouched: clients still verify the
server's certificate for ``localhost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

LOOPBACK = "127.0.0.1"
READ_SIZE = 256 * 1024
MAX_CHUNKS = 64
START_TIMEOUT = 10.0


class DelayProxy:
    """Forwards ``LOOPBACK:port`` to ``target_host:target_port``, ``one_way`` seconds late."""

    def __init__(self, *, target_port: int, one_way: float, target_host: str = LOOPBACK) -> None:
        if one_way < 0:
            raise ValueError(f"delay must not be negative, got {one_way}")
        self.target_host = target_host
        self.target_port = target_port
        self.one_way = one_way
        self.port = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle (main thread) ----------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, LOOPBACK, 0)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="delay-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError("the delay proxy did not start")
        if failure:
            raise failure[0]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT)
        self._loop = self._thread = None

    def __enter__(self) -> DelayProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the proxy (its own thread) -------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            async with asyncio.timeout(START_TIMEOUT):
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
        except (OSError, TimeoutError):
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)

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
