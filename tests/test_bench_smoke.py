"""The benchmark's own parts on tiny data, so tests/bench/collect.py does not rot between runs.

The benchmark itself is not a test (it takes twenty minutes and needs root for its servers);
this checks in about a second that its proxy delays and forwards, that a child's time, CPU and
peak memory are measured, that the corpus has the promised sizes and that arrivals are counted
exactly once, and that the module and its command line still load.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench import collect
from tests.bench.harness import (
    Dataset,
    exactly_once,
    expected_ids,
    maildir_message_ids,
    make_corpus,
    make_message,
    measure,
)
from tests.bench.proxy import DelayProxy

ONE_WAY = 0.03


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A line echo server on loopback, in a thread."""
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    def run() -> None:
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(echo, "127.0.0.1", 0, limit=1 << 20))
        holder.update(loop=loop, port=server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(5)
    yield holder["port"]  # type: ignore[misc]
    loop = holder["loop"]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_proxy_adds_the_round_trip_and_passes_bytes_unchanged(echo_port: int) -> None:
    payload = b"x" * 300_000 + b"\n"
    with DelayProxy(target_port=echo_port, one_way=ONE_WAY) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            start = time.perf_counter()
            sock.sendall(b"ping\n")
            assert sock.recv(100) == b"ping\n"
            round_trip = time.perf_counter() - start
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = sock.recv(65536)
                assert chunk
                got += chunk
        assert proxy.connections == 1
    assert got == payload
    assert 2 * ONE_WAY * 0.9 <= round_trip < 2 * ONE_WAY + 0.5


def test_measure_reports_time_cpu_and_the_childs_own_peak_memory() -> None:
    code = (
        "import time\n"
        "b = bytearray(60_000_000)\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.2: pass\n"
        "print('ok')"
    )
    result = measure([sys.executable, "-c", code], timeout=30)
    assert result.returncode == 0 and result.output.strip() == "ok"
    assert result.cpu >= 0.2
    assert result.wall >= result.cpu * 0.5
    assert 60_000_000 <= result.peak_rss < 200_000_000


def test_corpus_sizes_and_exactly_once_counting(tmp_path: Path) -> None:
    assert len(make_message("t", 1, 20_000)) == 20_000
    assert len(make_message("t", 2, 1_000_000)) == 1_000_000
    corpus = make_corpus("t", Dataset("3 x 5 KB", 3, 5_000))
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for index, data in enumerate(corpus):
        (maildir / "new" / f"m{index}").write_bytes(data.replace(b"\r\n", b"\n"))
    found = maildir_message_ids(maildir)
    assert exactly_once(found, expected_ids("t", 3)) is None
    (maildir / "cur" / "again").write_bytes(corpus[0])
    found = maildir_message_ids(maildir)
    assert exactly_once(found, expected_ids("t", 3)) == "1 delivered more than once"
    assert exactly_once(collections.Counter(), expected_ids("t", 2)) == "2 missing"


def test_collect_parses_its_command_line() -> None:
    args = collect.parse_args(["--quick", "--tools", "ceiling,postbridge-maildir", "--rtt", "0"])
    assert args.runs == 1 and args.rtt == [0] and args.many == 1000
    assert args.tools == ["ceiling", "postbridge-maildir"]
    with pytest.raises(SystemExit):
        collect.parse_args(["--tools", "outlook"])
