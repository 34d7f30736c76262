"""The plumbing every fake server in tests/fakes shares: listen on loopback, track the
sessions, and stop for sure (abort the connections, let the handlers end, cancel stragglers).

Subclasses implement :meth:`handle_session`; they keep their own protocol and fault knobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self


class LoopbackServer:
    """An asyncio server on 127.0.0.1 with a free port; ``async with`` starts and stops it."""

    #: How long stop() lets aborted sessions end by themselves before cancelling them.
    stop_grace = 1.0

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.sessions = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def server_ssl(self) -> ssl.SSLContext | None:
        """TLS from the first byte (POP3S); None for a plain listener."""
        return None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0, ssl=self.server_ssl())
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        # Aborted transports end their sessions (EOF) within a loop turn or two;
        # cancel only what is still running after that.
        tasks = list(self._tasks)
        if tasks:
            _, running = await asyncio.wait(tasks, timeout=self.stop_grace)
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running, timeout=5)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
            self._server = None
        # Let aborted transports run connection_lost and close their sockets.
        await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.sessions += 1
        try:
            await self.handle_session(reader, writer)
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def handle_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        raise NotImplementedError


def run_in_thread(server: LoopbackServer) -> tuple[tuple[str, int], Callable[[], None]]:
    """Serve ``server`` from its own event loop in a thread, for synchronous tests.

    Returns ``((host, port), stop)``; ``stop()`` shuts the server down and joins
    the thread. Read the server's records only after ``stop()``.
    """
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as error:
            failure.append(error)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(server.stop())
            loop.close()

    thread = threading.Thread(target=serve, name=f"fake-{type(server).__name__}", daemon=True)
    thread.start()
    if not ready.wait(timeout=10):
        raise RuntimeError(f"{type(server).__name__} did not start within 10 s")
    if failure:
        raise failure[0]

    def stop() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    return (server.host, server.port), stop
