"""In-process mail servers on loopback for the delivery tests.

aiosmtpd's SMTP/LMTP protocol objects run on the test's own event loop
(``loop.create_server`` on port 0: no thread, no port race); certificates come
from trustme. The handler and the connection seam live in :mod:`mailservers`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from tests.engine.delivery.fakeserver import FakeMailServer
from tests.engine.delivery.mailservers import Dialer, Handler, Running, StartServer


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    running: list[Running] = []
    loop = asyncio.get_running_loop()

    async def start(
        handler: Handler,
        *,
        lmtp: bool = False,
        implicit_tls: ssl.SSLContext | None = None,
        **kw: Any,
    ) -> Running:
        protocols: list[Any] = []
        kw.setdefault("authenticator", handler.authenticate)

        def factory() -> SMTP:
            protocol = (LMTP if lmtp else SMTP)(handler, loop=loop, hostname="mail.test", **kw)
            protocols.append(protocol)
            return protocol

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=implicit_tls)
        run = Running(server.sockets[0].getsockname()[1], server, protocols)
        running.append(run)
        return run

    yield start
    for run in running:
        run.server.close()
        run.drop_all()
        await run.server.wait_closed()
    await asyncio.sleep(0)


@pytest.fixture
async def fake_server() -> AsyncIterator[Callable[..., Awaitable[FakeMailServer]]]:
    servers: list[FakeMailServer] = []

    async def start(**kw: Any) -> FakeMailServer:
        server = FakeMailServer(**kw)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
def dialer() -> Dialer:
    return Dialer()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_pem(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "office-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def spool(tmp_path: Path) -> Callable[[bytes], Path]:
    counter = iter(range(1_000_000))

    def write(content: bytes) -> Path:
        path = tmp_path / f"spooled-{next(counter)}.eml"
        path.write_bytes(content)
        return path

    return write
