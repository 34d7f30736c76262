"""Round trips a session costs: with PIPELINING, the post-login CAPA, LIST and UIDL go out
in one write, and QUIT with the last DELEs. At an ISP 50 ms away each round trip saved is
50 ms of every session; without PIPELINING the same calls stay in lock step.

``FakePop3Server.command_batches`` counts the commands of each read: a client that waits
for each reply can never put two commands in one read, so a batch of n proves n commands
sent before the first reply came back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

import pytest

from postbridge.engine.errors import AuthError, NetworkError, ServerTemporaryError
from tests.engine.pop3.conftest import Certs, ClientFactory
from tests.fakes.pop3 import FakePop3Server, FakePop3Session

MESSAGES = [b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(1, 8)]


class ExpiresAfterLogin(FakePop3Session):
    """Says EXPIRE 0 only once logged in (RFC 2449 §6.7: it may be per user)."""

    async def cmd_capa(self, arg: str) -> None:
        self.server.expire = "0" if self.state == "TRANSACTION" else None
        await super().cmd_capa(arg)


# (server options, reads after the greeting's CAPA with PIPELINING, without it)
LOGINS: dict[str, tuple[dict[str, Any], list[int], list[int]]] = {
    # AUTH PLAIN is one line: it leads the batch, one round trip for everything.
    "plain": ({"apop": False}, [4], [1, 1, 1, 1]),
    # APOP goes alone, then the rest together.
    "apop": ({}, [1, 3], [1, 1, 1, 1]),
    # USER and PASS in lock step: a password never follows a refused user name.
    "user": ({"apop": False, "sasl": ()}, [1, 1, 3], [1, 1, 1, 1, 1]),
}


@pytest.mark.parametrize("login", sorted(LOGINS))
@pytest.mark.parametrize("pipelining", [True, False])
async def test_login_and_list_gives_what_the_separate_calls_give(
    make_client: ClientFactory, pipelining: bool, login: str
) -> None:
    options, with_pipelining, without = LOGINS[login]
    server = FakePop3Server(
        MESSAGES, pipelining=pipelining, session_class=ExpiresAfterLogin, **options
    )
    async with server, make_client(server) as client:
        assert client.capabilities.expire is None
        before = len(server.command_batches)
        sizes, uids = await client.login_and_list("alice", "secret")
        after_login = server.command_batches[before:]
        assert sizes == {n: len(m) for n, m in enumerate(MESSAGES, 1)}
        assert uids == {n: m.uid for n, m in enumerate(server.messages, 1)}
        assert client.capabilities.expire == "0"  # the capabilities after login
        assert client.login_pipelined is (pipelining and login == "plain")
        await client.quit()
    assert after_login == (with_pipelining if pipelining else without)


async def test_a_wrong_password_in_a_pipelined_login_is_an_auth_error(
    make_client: ClientFactory,
) -> None:
    server = FakePop3Server(MESSAGES, apop=False)
    server.login_error = "[AUTH] Authentication failed."
    async with server, make_client(server) as client:
        with pytest.raises(AuthError, match="rejected the password for alice"):
            await client.login_and_list("alice", "wrong")
        assert not client.connected  # the replies behind it are not read: dropped
    assert server.remaining == MESSAGES


async def test_login_and_list_without_uidl_is_none(make_client: ClientFactory) -> None:
    server = FakePop3Server(MESSAGES[:2], uidl=False)
    async with server, make_client(server) as client:
        sizes, uids = await client.login_and_list("alice", "secret")
        assert sizes == {1: len(MESSAGES[0]), 2: len(MESSAGES[1])} and uids is None
        await client.quit()


@pytest.mark.parametrize("pipelining", [True, False])
async def test_delete_and_quit_commits_in_one_round_trip_fewer(
    make_client: ClientFactory, pipelining: bool
) -> None:
    server = FakePop3Server(MESSAGES, pipelining=pipelining)
    uids = server.remaining_uids
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        await client.dele(2)
        before = len(server.command_batches)
        accepted = await client.delete_and_quit([1, 2, 3, 4, 5], window=2)
        batches = server.command_batches[before:]
        assert accepted == [1, 3, 4, 5]  # 2 was marked already: -ERR, the rest go ahead
        assert not client.connected
    assert server.remaining == MESSAGES[5:]
    assert server.committed == [uids[:5]]
    # Windows of 2 DELEs; the QUIT rides with the last one.
    assert batches == ([2, 2, 2] if pipelining else [1, 1, 1, 1, 1, 1])


async def test_delete_and_quit_refused_keeps_everything(make_client: ClientFactory) -> None:
    server = FakePop3Server(MESSAGES[:3])
    server.quit_error = True
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        with pytest.raises(ServerTemporaryError, match="stay on the server"):
            await client.delete_and_quit([1, 2, 3])
        assert not client.connected
    assert server.remaining == MESSAGES[:3]


async def test_delete_and_quit_with_the_line_lost_says_so(make_client: ClientFactory) -> None:
    server = FakePop3Server(MESSAGES[:3])
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        server.hang_up_at_quit()
        with pytest.raises(NetworkError, match="may still be on the server"):
            await client.delete_and_quit([1, 2])
        assert not client.connected
    assert server.remaining == MESSAGES[:3]


async def test_delete_and_quit_with_nothing_to_delete_just_quits(
    make_client: ClientFactory,
) -> None:
    server = FakePop3Server(MESSAGES[:2])
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        assert await client.delete_and_quit([]) == []
        assert not client.connected
    assert server.remaining == MESSAGES[:2]


async def test_login_and_list_can_wait_for_the_login_before_the_rest(
    make_client: ClientFactory,
) -> None:
    """For a server that loses what arrives with AUTH: the login alone, then the rest."""
    server = FakePop3Server(MESSAGES, apop=False)
    async with server, make_client(server) as client:
        before = len(server.command_batches)
        sizes, uids = await client.login_and_list("alice", "secret", with_auth=False)
        after_login = server.command_batches[before:]
        assert not client.login_pipelined
        assert sizes == {n: len(m) for n, m in enumerate(MESSAGES, 1)}
        assert uids == {n: m.uid for n, m in enumerate(server.messages, 1)}
        await client.quit()
    assert after_login == [1, 3]


class GreetsLate(FakePop3Session):
    """Greets only after up to 0.2 s, noting what the client sent before it."""

    before_greeting: ClassVar[list[bytes]] = []

    async def run(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                while b"\n" not in self.buffer and (chunk := await self.reader.read(65536)):
                    self.buffer += chunk
        GreetsLate.before_greeting.append(self.buffer)
        await super().run()


@pytest.mark.parametrize("early", [True, False])
async def test_capa_goes_out_before_the_greeting_is_read(
    make_client: ClientFactory, early: bool
) -> None:
    """The greeting and the capabilities come back together: a round trip fewer per
    connection. ``capa_before_greeting = False`` (a server that lost it) waits first."""
    GreetsLate.before_greeting = []
    async with FakePop3Server(MESSAGES, session_class=GreetsLate) as server:
        client = make_client(server)
        client.capa_before_greeting = early
        async with client:
            assert client.capa_sent_early is early
            assert client.capabilities.pipelining and client.apop_timestamp
            await client.login_and_list("alice", "secret")
            await client.quit()
    assert GreetsLate.before_greeting == [b"CAPA\r\n" if early else b""]


async def test_with_stls_nothing_goes_out_before_the_greeting(
    certs: Certs, make_client: ClientFactory
) -> None:
    GreetsLate.before_greeting = []
    async with FakePop3Server(
        MESSAGES, stls_context=certs.server, session_class=GreetsLate
    ) as server:
        client = make_client(server, security="starttls", ssl_context=certs.client)
        async with client:
            assert client.encrypted and not client.capa_sent_early
    assert GreetsLate.before_greeting == [b""]


async def test_retrs_guessed_with_the_login_go_in_its_write_and_retr_many_reads_them(
    make_client: ClientFactory,
) -> None:
    """The first downloads need no round trip of their own: RETR 1 and 2 go out with
    AUTH PLAIN, CAPA, LIST and UIDL; retr_many reads their replies, then asks for 3."""
    from tests.engine.pop3.test_retrieval import Recorder

    server = FakePop3Server(MESSAGES, apop=False)
    async with server, make_client(server) as client:
        before = len(server.command_batches)
        sizes, _ = await client.login_and_list("alice", "secret", retr=[1, 2])
        assert sizes == {n: len(m) for n, m in enumerate(MESSAGES, 1)}
        assert client.retr_in_flight == [1, 2]
        with pytest.raises(ValueError, match="already sent"):
            await client.retr_many([2, 3], open_sink=Recorder().open_sink, on_complete=None)  # type: ignore[arg-type]
        recorder = Recorder()
        await client.retr_many(
            [1, 2, 3], open_sink=recorder.open_sink, on_complete=recorder.on_complete
        )
        assert client.retr_in_flight == []
        await client.quit()
    assert server.command_batches[before] == 6  # AUTH, CAPA, LIST, UIDL, RETR 1, RETR 2
    assert recorder.completed == {n: MESSAGES[n - 1] for n in (1, 2, 3)}


async def test_a_quit_with_guessed_retrs_unread_drops_the_connection_instead(
    make_client: ClientFactory,
) -> None:
    server = FakePop3Server(MESSAGES, apop=False)
    async with server, make_client(server) as client:
        await client.login_and_list("alice", "secret", retr=[1])
        with pytest.raises(RuntimeError, match="unread"):
            await client.stat()  # its reply would be taken for RETR 1's
        assert await client.quit() is False  # nothing committed, nothing mis-paired
        assert not client.connected
    assert "QUIT" not in server.commands


async def test_without_pipelining_nothing_is_guessed(make_client: ClientFactory) -> None:
    server = FakePop3Server(MESSAGES, apop=False, pipelining=False)
    async with server, make_client(server) as client:
        await client.login_and_list("alice", "secret", retr=[1, 2])
        assert client.retr_in_flight == []
        await client.quit()
    assert not any(command.startswith("RETR") for command in server.commands)
