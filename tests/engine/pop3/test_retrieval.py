"""Retrieval, deletion and QUIT: byte-exact messages, faults mid-message, nothing lost."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import pytest

from postbridge.engine.errors import (
    NetworkError,
    PostbridgeError,
    ProtocolError,
    ServerTemporaryError,
)
from postbridge.engine.pop3.client import Pop3Client
from postbridge.engine.pop3.connection import READ_SIZE
from tests.engine.pop3.conftest import FAST_TIMEOUT, ClientFactory
from tests.fakes.pop3 import FakePop3Server

TRICKY = [
    b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n. a lone dot and text\r\n",
    b".first line starts with a dot\r\n\r\nbody\r\n",
    b"",
    b"Subject: bare LF\r\n\r\nline with\nbare LF and\n.dot after it\r\n",
    b"Subject: terminator look-alikes\r\n\r\nx\r\n.\rnot\r\n.\n\r\n",
    b"Subject: huge line\r\n\r\n" + b"y" * (3 * READ_SIZE + 17) + b"\r\n.\r\n",
    b"Subject: many dot lines\r\n\r\n" + b".\r\n" * 50_000,
    b"Subject: plain\r\n\r\nHello\r\n",
]


class Recorder:
    """Sinks and callbacks for retr_many that remember everything."""

    def __init__(self) -> None:
        self.sinks: dict[int, io.BytesIO] = {}
        self.completed: dict[int, bytes] = {}
        self.errors: dict[int, PostbridgeError] = {}
        self.largest_write = 0

    def open_sink(self, msgnum: int) -> Recorder.Sink:
        sink = Recorder.Sink(self)
        self.sinks[msgnum] = sink.buffer
        return sink

    async def on_complete(self, msgnum: int, sink: Recorder.Sink) -> None:
        self.completed[msgnum] = sink.buffer.getvalue()

    def on_error(self, msgnum: int, error: PostbridgeError) -> None:
        self.errors[msgnum] = error

    class Sink:
        def __init__(self, recorder: Recorder) -> None:
            self.recorder = recorder
            self.buffer = io.BytesIO()

        def write(self, data: bytes) -> int:
            self.recorder.largest_write = max(self.recorder.largest_write, len(data))
            return self.buffer.write(data)


async def fetch_all(
    client: Pop3Client, msgnums: Sequence[int], *, window: int = 16, with_on_error: bool = True
) -> Recorder:
    recorder = Recorder()
    await client.retr_many(
        msgnums,
        open_sink=recorder.open_sink,
        on_complete=recorder.on_complete,
        on_error=recorder.on_error if with_on_error else None,
        window=window,
    )
    return recorder


async def retrieve(
    make_client: ClientFactory, messages: list[bytes], *, pipelining: bool, window: int = 4
) -> tuple[Recorder, FakePop3Server]:
    server = FakePop3Server(messages, pipelining=pipelining)
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        assert client.capabilities.pipelining is pipelining
        recorder = await fetch_all(client, range(1, len(messages) + 1), window=window)
        await client.quit()
    return recorder, server


async def test_pipelined_and_sequential_are_byte_identical(make_client: ClientFactory) -> None:
    pipelined, fast = await retrieve(make_client, TRICKY, pipelining=True)
    sequential, slow = await retrieve(make_client, TRICKY, pipelining=False)
    expected = {number: body for number, body in enumerate(TRICKY, start=1)}
    assert pipelined.completed == expected
    assert sequential.completed == expected
    assert list(pipelined.completed) == list(expected)  # in order
    # Several RETRs arrived in one read only when pipelining, and never more than the window.
    assert max(fast.command_batches) == 4
    assert max(slow.command_batches) == 1
    # Nothing was deleted: no DELE was sent.
    assert fast.remaining == TRICKY and slow.remaining == TRICKY


async def test_messages_are_streamed_not_held(make_client: ClientFactory) -> None:
    big = b"Subject: big\r\n\r\n" + b"0123456789abcdef\r\n" * 400_000  # 7 MB
    recorder, _ = await retrieve(make_client, [big], pipelining=True)
    assert recorder.completed[1] == big
    # Written in chunks of at most one read (plus the few held-back bytes).
    assert 0 < recorder.largest_write <= READ_SIZE + 4


async def test_many_small_messages_pipelined(make_client: ClientFactory) -> None:
    messages = [b"Subject: %d\r\n\r\n%s\r\n" % (n, b"." * (n % 7)) for n in range(300)]
    recorder, server = await retrieve(make_client, messages, pipelining=True, window=16)
    assert [recorder.completed[n + 1] for n in range(300)] == messages
    assert 1 < max(server.command_batches) <= 16


async def test_retr_single(make_client: ClientFactory) -> None:
    server = FakePop3Server(TRICKY)
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        sink = io.BytesIO()
        assert await client.retr(1, sink) == len(TRICKY[0])
        assert sink.getvalue() == TRICKY[0]
        with pytest.raises(ProtocolError, match="did not send message 99 of office@isp"):
            await client.retr(99, io.BytesIO())
        await client.noop()  # still in step


@pytest.mark.parametrize("pipelining", [True, False])
async def test_retr_error_mid_batch_calls_on_error_and_continues(
    make_client: ClientFactory, pipelining: bool
) -> None:
    messages = [b"m%d\r\n" % n for n in range(1, 7)]
    server = FakePop3Server(messages, pipelining=pipelining)
    server.retr_error = {3, 5}
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        recorder = await fetch_all(client, range(1, 7), window=4)
        assert sorted(recorder.completed) == [1, 2, 4, 6]
        assert sorted(recorder.errors) == [3, 5]
        assert 3 not in recorder.sinks  # no sink is opened for a message that never came
        error = recorder.errors[3]
        assert isinstance(error, ProtocolError)
        assert str(error) == "127.0.0.1 did not send message 3 of office@isp"
        assert "no message 3" in str(error.detail)
        await client.noop()


async def test_retr_error_without_on_error_raises_after_the_batch(
    make_client: ClientFactory,
) -> None:
    messages = [b"m%d\r\n" % n for n in range(1, 9)]
    server = FakePop3Server(messages)
    server.retr_error = {2}
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        recorder = Recorder()
        with pytest.raises(ProtocolError, match="did not send message 2"):
            await client.retr_many(
                range(1, 9),
                open_sink=recorder.open_sink,
                on_complete=recorder.on_complete,
                window=4,
            )
        # The RETRs already in flight completed; nothing more was sent.
        assert sorted(recorder.completed) == [1, 3, 4]
        assert client.connected
        await client.noop()


async def test_async_on_error(make_client: ClientFactory) -> None:
    server = FakePop3Server([b"a\r\n", b"b\r\n"])
    server.retr_error = {1}
    seen: list[int] = []

    async def on_error(msgnum: int, error: PostbridgeError) -> None:
        seen.append(msgnum)

    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        recorder = Recorder()
        done = await client.retr_many(
            [1, 2],
            open_sink=recorder.open_sink,
            on_complete=recorder.on_complete,
            on_error=on_error,
        )
    assert done == 1 and seen == [1]


@pytest.mark.parametrize("pipelining", [True, False])
async def test_connection_dropped_mid_message(make_client: ClientFactory, pipelining: bool) -> None:
    messages = [b"Subject: %d\r\n\r\n" % n + b"z" * 50_000 + b"\r\n" for n in range(1, 5)]
    server = FakePop3Server(messages, pipelining=pipelining)
    server.drop_retr = {3: 20_000}
    async with server:
        client = make_client(server)
        async with client:
            await client.login("alice", "secret")
            await client.dele(4)
            recorder = Recorder()
            with pytest.raises(NetworkError) as caught:
                await client.retr_many(
                    range(1, 5), open_sink=recorder.open_sink, on_complete=recorder.on_complete
                )
            assert str(caught.value).startswith("The connection to 127.0.0.1 was lost")
            assert "office@isp" in str(caught.value)
            assert sorted(recorder.completed) == [1, 2]
            # Message 3 was opened and partly written, but never reported complete.
            assert 0 < len(recorder.sinks[3].getvalue()) < len(messages[2])
            assert not client.connected
            assert await client.quit() is False
            with pytest.raises(NetworkError, match="is closed"):
                await client.stat()
    # The DELE of message 4 was never committed.
    assert server.remaining == messages
    assert server.committed == []


async def test_stall_mid_message_times_out(make_client: ClientFactory) -> None:
    server = FakePop3Server([b"x" * 100_000 + b"\r\n"])
    server.stall_retr = {1: 1000}
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        with pytest.raises(NetworkError) as caught:
            await fetch_all(client, [1])
        assert str(caught.value) == (
            f"127.0.0.1 stopped answering; Postbridge gave up on office@isp "
            f"after {FAST_TIMEOUT:g} seconds"
        )
        assert not client.connected


@pytest.mark.parametrize("verb", ["LIST", "UIDL", "STAT", "DELE", "QUIT"])
async def test_stall_on_a_command(make_client: ClientFactory, verb: str) -> None:
    server = FakePop3Server([b"a\r\n"])
    server.stall = {verb}
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        call = {
            "LIST": client.list_all,
            "UIDL": client.uidl_all,
            "STAT": client.stat,
            "DELE": lambda: client.dele_many([1]),
            "QUIT": client.quit,
        }[verb]
        with pytest.raises(NetworkError, match=r"stopped answering|was lost"):
            await call()
        assert not client.connected
    assert server.remaining == [b"a\r\n"]


@pytest.mark.parametrize("verb", ["STAT", "LIST", "UIDL", "RETR", "NOOP"])
async def test_garbage_reply(make_client: ClientFactory, verb: str) -> None:
    server = FakePop3Server([b"a\r\n"])
    server.garbage = {verb: b"220 smtp.example ESMTP"}
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        call = {
            "STAT": client.stat,
            "LIST": client.list_all,
            "UIDL": client.uidl_all,
            "RETR": lambda: client.retr(1, io.BytesIO()),
            "NOOP": client.noop,
        }[verb]
        with pytest.raises(ProtocolError) as caught:
            await call()
        assert str(caught.value) == "127.0.0.1 sent a reply Postbridge does not understand"
        assert caught.value.detail == repr(b"220 smtp.example ESMTP")
        assert not client.connected  # out of step: dropped, never QUIT


async def test_garbage_in_a_listing(make_client: ClientFactory) -> None:
    server = FakePop3Server([b"a\r\n"])
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        server.garbage = {"LIST": b"+OK\r\nnot a listing\r\n."}
        with pytest.raises(ProtocolError, match="does not understand"):
            await client.list_all()
        assert client.connected  # the reply was complete: still in step
        await client.noop()


async def test_callback_failure_mid_pipeline_drops_without_quit(
    make_client: ClientFactory,
) -> None:
    messages = [b"m%d\r\n" % n for n in range(1, 9)]
    server = FakePop3Server(messages)

    async def failing_complete(msgnum: int, sink: io.BytesIO) -> None:
        if msgnum == 2:
            raise RuntimeError("spool full")

    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        await client.dele(8)
        with pytest.raises(RuntimeError, match="spool full"):
            await client.retr_many(
                range(1, 8), open_sink=lambda n: io.BytesIO(), on_complete=failing_complete
            )
        assert not client.connected  # replies were still unread
    assert server.remaining == messages


async def test_callback_failure_when_in_step_keeps_the_session(
    make_client: ClientFactory,
) -> None:
    server = FakePop3Server([b"a\r\n", b"b\r\n"], pipelining=False)

    async def failing_complete(msgnum: int, sink: io.BytesIO) -> None:
        raise RuntimeError("spool full")

    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        with pytest.raises(RuntimeError):
            await client.retr_many(
                [1, 2], open_sink=lambda n: io.BytesIO(), on_complete=failing_complete
            )
        await client.noop()


async def test_listing_commands(make_client: ClientFactory) -> None:
    messages = [b"Subject: a\r\n\r\n1\r\n2\r\n3\r\n", b"Subject: b\r\n\r\nx\r\n"]
    server = FakePop3Server(messages)
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        assert await client.stat() == (2, sum(map(len, messages)))
        assert await client.list_all() == {1: len(messages[0]), 2: len(messages[1])}
        uids = await client.uidl_all()
        assert uids == {1: server.messages[0].uid, 2: server.messages[1].uid}
        assert await client.top(1, 2) == b"Subject: a\r\n\r\n1\r\n2\r\n"
        assert await client.top(1, 0) == b"Subject: a\r\n\r\n"
        with pytest.raises(ProtocolError, match="refused the TOP command for office@isp"):
            await client.top(9, 0)


async def test_uidl_unsupported_is_none(make_client: ClientFactory) -> None:
    server = FakePop3Server([b"a\r\n"], uidl=False)
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        assert await client.uidl_all() is None
        assert await client.list_all() == {1: 3}


async def test_dele_many_and_quit_commit(make_client: ClientFactory) -> None:
    messages = [b"m%d\r\n" % n for n in range(1, 11)]
    server = FakePop3Server(messages)
    uids = server.remaining_uids
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        await client.dele(2)
        batches_before = len(server.command_batches)
        accepted = await client.dele_many([1, 2, 3, 4, 5], window=8)
        # Message 2 was already marked: the server says -ERR, the rest are marked.
        assert accepted == [1, 3, 4, 5]
        assert max(server.command_batches[batches_before:]) == 5  # one write
        assert await client.quit() is True
        assert not client.connected
    assert server.remaining == messages[5:]
    assert server.committed == [uids[:5]]


async def test_dele_many_without_pipelining(make_client: ClientFactory) -> None:
    messages = [b"m%d\r\n" % n for n in range(1, 5)]
    server = FakePop3Server(messages, pipelining=False)
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        assert await client.dele_many([1, 3]) == [1, 3]
        assert await client.quit()
    assert max(server.command_batches) == 1
    assert server.remaining == [messages[1], messages[3]]


@pytest.mark.parametrize("how", ["close", "exit", "rset"])
async def test_nothing_deleted_without_confirmed_quit(make_client: ClientFactory, how: str) -> None:
    messages = [b"a\r\n", b"b\r\n"]
    server = FakePop3Server(messages)
    async with server:
        async with make_client(server) as client:
            await client.login("alice", "secret")
            await client.dele_many([1, 2])
            if how == "close":
                await client.close()
                assert not client.connected
            elif how == "rset":
                await client.rset()
                assert await client.quit() is True
        assert server.remaining == messages


async def test_quit_refused(make_client: ClientFactory) -> None:
    server = FakePop3Server([b"a\r\n"])
    server.quit_error = True
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        await client.dele(1)
        with pytest.raises(ServerTemporaryError) as caught:
            await client.quit()
        assert "did not confirm" in str(caught.value)
        assert "stay on the server" in str(caught.value)
        assert not client.connected
    assert server.remaining == [b"a\r\n"]


async def test_line_lost_during_quit(make_client: ClientFactory) -> None:
    server = FakePop3Server([b"a\r\n"])
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        server.hang_up_at_quit()
        with pytest.raises(NetworkError, match="may still be on the server"):
            await client.quit()


async def test_bad_message_numbers_are_bugs(make_client: ClientFactory) -> None:
    server = FakePop3Server([b"a\r\n"])
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        with pytest.raises(ValueError):
            await client.retr(0, io.BytesIO())
        with pytest.raises(ValueError):
            await client.dele_many([1, -1])
        await client.noop()


async def test_traffic_log_shows_commands_not_bodies(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="postbridge.pop3")
    server = FakePop3Server([b"Subject: private\r\n\r\nconfidential\r\n"])
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        await fetch_all(client, [1])
    assert "C: RETR 1" in caplog.text
    assert "confidential" not in caplog.text


@pytest.mark.parametrize("pipelining", [True, False])
async def test_on_nearly_done_comes_once_when_few_replies_are_left(
    make_client: ClientFactory, pipelining: bool
) -> None:
    """The caller's cue to open the next session's connection: once, when the last RETR
    is out and at most ``nearly_done`` replies are still to come."""
    messages = [b"Subject: %d\r\n\r\nbody\r\n" % n for n in range(1, 11)]
    server = FakePop3Server(messages, pipelining=pipelining)
    completed_at_cue: list[int] = []
    async with server, make_client(server) as client:
        await client.login("alice", "secret")
        recorder = Recorder()
        await client.retr_many(
            range(1, 11),
            open_sink=recorder.open_sink,
            on_complete=recorder.on_complete,
            window=4,
            on_nearly_done=lambda: completed_at_cue.append(len(recorder.completed)),
            nearly_done=3,
        )
        await client.quit()
    assert len(recorder.completed) == 10
    # Pipelined, the last RETR is out after six replies (topped up at half the window of 4),
    # and three replies are left after seven; in lock step it goes out after nine replies.
    assert completed_at_cue == ([7] if pipelining else [9])
