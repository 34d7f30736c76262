"""Connecting: greeting, CAPA, TLS, STLS, and every way a connection fails, in words."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from typing import Any

import pytest

from postbridge.engine.errors import (
    MailboxBusy,
    NetworkError,
    ProtocolError,
    ServerTemporaryError,
    TLSError,
)
from postbridge.engine.pop3.client import Pop3Client
from tests.engine.pop3.conftest import FAST_TIMEOUT, Certs, ClientFactory
from tests.fakes.pop3 import FakePop3Server, FakePop3Session

MESSAGE = b"Subject: hello\r\n\r\nbody\r\n"


async def test_greeting_timestamp_and_capabilities(make_client: ClientFactory) -> None:
    server = FakePop3Server([MESSAGE], expire="0", login_delay=900)
    async with server, make_client(server) as client:
        assert client.connected and not client.encrypted
        assert client.apop_timestamp is not None
        assert client.apop_timestamp.startswith("<")
        caps = client.capabilities
        assert caps.pipelining and caps.uidl and caps.top and caps.user and caps.resp_codes
        assert caps.sasl == frozenset({"PLAIN"})
        assert caps.expire == "0"
        assert caps.login_delay == 900
        assert caps.implementation == "Postbridge-Fake"
        assert not caps.stls


async def test_server_without_capa_still_works(make_client: ClientFactory) -> None:
    async with FakePop3Server([MESSAGE], capa=False) as server, make_client(server) as client:
        assert client.capabilities.names == frozenset()
        await client.login("alice", "secret", method="user")
        assert await client.stat() == (1, len(MESSAGE))
        assert await client.quit() is True


async def test_connection_refused(make_client: ClientFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Pop3Client(host="127.0.0.1", port=port, security="none", timeout=FAST_TIMEOUT)
    with pytest.raises(NetworkError) as caught:
        await client.connect()
    assert str(caught.value).startswith(f"Could not connect to 127.0.0.1:{port}")
    assert "refused" in str(caught.value)
    assert not client.connected


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "name was not found"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "could not reach"),
    ],
)
async def test_dns_failure_and_unreachable(error: OSError, words: str) -> None:
    async def failing_open(*args: Any, **kwargs: Any) -> Any:
        raise error

    client = Pop3Client(
        host="pop.isp.example", port=995, open_connection=failing_open, timeout=FAST_TIMEOUT
    )
    with pytest.raises(NetworkError) as caught:
        await client.connect()
    assert str(caught.value).startswith("Could not connect to pop.isp.example:995")
    assert words in str(caught.value)
    assert caught.value.detail and error.strerror and error.strerror in caught.value.detail


async def test_connect_timeout_through_the_seam() -> None:
    async def black_hole(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(3600)

    client = Pop3Client(host="pop.isp.example", port=110, open_connection=black_hole, timeout=0.2)
    with pytest.raises(NetworkError, match=r"no answer after 0\.2 seconds"):
        await client.connect()


async def test_the_seam_receives_host_port_and_tls_arguments(certs: Certs) -> None:
    calls: list[tuple[Any, ...]] = []
    async with FakePop3Server([MESSAGE], tls_context=certs.server) as server:

        async def recording_open(
            host: str, port: int, *, ssl: ssl.SSLContext | None, server_hostname: str | None
        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            calls.append((host, port, ssl, server_hostname))
            return await asyncio.open_connection(
                host, port, ssl=ssl, server_hostname=server_hostname
            )

        client = Pop3Client(
            host=server.host,
            port=server.port,
            security="tls",
            ssl_context=certs.client,
            open_connection=recording_open,
            timeout=FAST_TIMEOUT,
        )
        async with client:
            assert client.encrypted
    assert calls == [(server.host, server.port, certs.client, server.host)]


class SilentSession(FakePop3Session):
    """Accepts the connection and never greets."""

    async def run(self) -> None:
        await self.hang()


async def test_no_greeting_times_out(make_client: ClientFactory) -> None:
    async with FakePop3Server(session_class=SilentSession) as server:
        client = make_client(server)
        with pytest.raises(NetworkError) as caught:
            await client.connect()
    assert str(caught.value).startswith("127.0.0.1 stopped answering")
    assert f"after {FAST_TIMEOUT:g} seconds" in str(caught.value)
    assert not client.connected


class HangUpSession(FakePop3Session):
    async def run(self) -> None:
        self.push_raw(b"+OK half a gree")
        await self.writer.drain()
        self.writer.close()


async def test_connection_closed_during_greeting(make_client: ClientFactory) -> None:
    async with FakePop3Server(session_class=HangUpSession) as server:
        with pytest.raises(NetworkError, match=r"^The connection to 127\.0\.0\.1 was lost"):
            await make_client(server).connect()


async def test_garbage_greeting(make_client: ClientFactory) -> None:
    async with FakePop3Server(greeting="* OK IMAP4rev1 ready") as server:
        with pytest.raises(ProtocolError) as caught:
            await make_client(server).connect()
    assert str(caught.value) == "127.0.0.1 sent a reply Postbridge does not understand"
    assert caught.value.detail is not None and "IMAP4rev1" in caught.value.detail


@pytest.mark.parametrize(
    ("greeting", "error"),
    [
        ("-ERR [IN-USE] busy", MailboxBusy),
        ("-ERR [SYS/TEMP] overloaded", ServerTemporaryError),
        ("-ERR go away", ServerTemporaryError),
    ],
)
async def test_negative_greeting(
    make_client: ClientFactory, greeting: str, error: type[Exception]
) -> None:
    async with FakePop3Server(greeting=greeting, apop=False) as server:
        with pytest.raises(error) as caught:
            await make_client(server).connect()
    assert "127.0.0.1" in str(caught.value)


async def test_implicit_tls(certs: Certs, make_client: ClientFactory) -> None:
    async with FakePop3Server([MESSAGE], tls_context=certs.server) as server:
        client = make_client(
            server, security="tls", ssl_context=certs.client, allow_plaintext_login=False
        )
        async with client:
            assert client.encrypted
            await client.login("alice", "secret")
            assert await client.stat() == (1, len(MESSAGE))


async def test_untrusted_certificate(certs: Certs, make_client: ClientFactory) -> None:
    async with FakePop3Server([MESSAGE], tls_context=certs.server) as server:
        client = make_client(server, security="tls", ssl_context=certs.untrusting_client)
        with pytest.raises(TLSError) as caught:
            await client.connect()
    assert str(caught.value).startswith("The certificate of 127.0.0.1 is not trusted")
    assert caught.value.detail is not None and "certificate" in caught.value.detail
    assert server.commands == []  # nothing, let alone a password, was sent


async def test_default_context_verifies(certs: Certs, make_client: ClientFactory) -> None:
    """Without a context the system trust store is used, which does not know our CA."""
    async with FakePop3Server([MESSAGE], tls_context=certs.server) as server:
        with pytest.raises(TLSError, match="not trusted"):
            await make_client(server, security="tls", ssl_context=None).connect()


async def test_stls_upgrades_and_refreshes_capabilities(
    certs: Certs, make_client: ClientFactory
) -> None:
    async with FakePop3Server([MESSAGE], stls_context=certs.server) as server:
        client = make_client(
            server, security="starttls", ssl_context=certs.client, allow_plaintext_login=False
        )
        async with client:
            assert client.encrypted
            # Capabilities come from the CAPA after TLS: STLS is no longer offered.
            assert not client.capabilities.stls
            await client.login("alice", "secret")
        assert [c.split()[0] for c in server.commands[:3]] == ["CAPA", "STLS", "CAPA"]
        assert server.commands[3].startswith("AUTH PLAIN")


async def test_stls_with_untrusted_certificate(certs: Certs, make_client: ClientFactory) -> None:
    async with FakePop3Server([MESSAGE], stls_context=certs.server) as server:
        client = make_client(server, security="starttls", ssl_context=certs.untrusting_client)
        with pytest.raises(TLSError, match="not trusted"):
            await client.connect()
        assert not any(c.startswith(("USER", "PASS", "AUTH", "APOP")) for c in server.commands)


async def test_stls_not_offered_refuses_to_continue(make_client: ClientFactory) -> None:
    async with FakePop3Server([MESSAGE]) as server:
        client = make_client(server, security="starttls")
        with pytest.raises(TLSError) as caught:
            await client.connect()
        assert "will not continue unencrypted" in str(caught.value)
        assert "127.0.0.1" in str(caught.value)
        assert not client.connected
        assert not any(c.startswith(("USER", "PASS", "AUTH", "APOP")) for c in server.commands)


class InjectingSession(FakePop3Session):
    """Sends a forged reply right after +OK to STLS, before the handshake."""

    async def cmd_stls(self, arg: str) -> None:
        self.push("+OK Begin TLS negotiation now.\r\n+OK injected")
        await self.hang()


async def test_stls_rejects_data_injected_before_handshake(
    certs: Certs, make_client: ClientFactory
) -> None:
    async with FakePop3Server(
        [MESSAGE], stls_context=certs.server, session_class=InjectingSession
    ) as server:
        client = make_client(server, security="starttls", ssl_context=certs.client)
        with pytest.raises(ProtocolError, match="before encryption started"):
            await client.connect()


class HangUpAtStlsSession(FakePop3Session):
    """Says +OK to STLS, then hangs up instead of starting the handshake."""

    async def cmd_stls(self, arg: str) -> None:
        self.push("+OK Begin TLS negotiation now.")
        await self.writer.drain()
        self.writer.close()
        self.closed = True


async def test_server_hangs_up_during_stls_handshake(
    certs: Certs, make_client: ClientFactory
) -> None:
    async with FakePop3Server(
        [MESSAGE], stls_context=certs.server, session_class=HangUpAtStlsSession
    ) as server:
        client = make_client(server, security="starttls", ssl_context=certs.client)
        with pytest.raises(NetworkError, match=r"^The connection to 127\.0\.0\.1 was lost"):
            await client.connect()
        assert not client.connected
        await client.close()


async def test_garbage_to_capa(make_client: ClientFactory) -> None:
    async with FakePop3Server([MESSAGE]) as server:
        server.garbage["CAPA"] = b"HELLO THERE"
        with pytest.raises(ProtocolError) as caught:
            await make_client(server).connect()
    assert caught.value.detail == repr(b"HELLO THERE")


def test_bad_arguments_are_bugs() -> None:
    with pytest.raises(ValueError):
        Pop3Client(host="h", port=1, security="ssl")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Pop3Client(host="h", port=1, timeout=0)
