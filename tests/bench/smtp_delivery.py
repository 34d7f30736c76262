"""SMTP (and LMTP) delivery alone: Postbridge's client against minimal references, one process.

Run it as root (the private Postfix and Dovecot need it), from the repository::

    uv run python tests/bench/smtp_delivery.py                 # 1,000 x 20 KB to Postfix, 3 runs
    uv run python tests/bench/smtp_delivery.py --lmtp          # ... and to Dovecot's LMTP
    uv run python tests/bench/smtp_delivery.py --count 200 --runs 1 --only postbridge raw-data

Issue 7 asks for SMTP delivery at 10x fetchmail (>= 200 msg/s for the whole poll, start-up
included). This isolates the delivery half: the messages are already in memory, as the poll
cycle's fast path holds small ones, and each contender hands them to the office Postfix of the
interop tests (tests/servers/postfix.py) one after another over one kept-open connection:

* ``postbridge``: :class:`SmtpTarget.deliver` per in-memory :class:`DeliveryJob`, awaited one
  at a time, exactly as the poll cycle calls it;
* ``smtplib``: CPython's client, ``sendmail`` per message (MAIL, RCPT, DATA, content: four
  round trips, no pipelining);
* ``raw-data``: a bare asyncio loop, MAIL+RCPT+DATA in one write, then the content: the least
  any DATA client can wait (two round trips per message);
* ``raw-stream``: MAIL+RCPT+BDAT LAST and the content in one write (CHUNKING, RFC 3030), up to
  32 messages in flight without waiting: what the server takes at most, whatever the client;
* ``raw-bdat`` (only when asked for): the same one message at a time, one round trip each. It
  runs at ~23 msg/s: Postfix answers MAIL and RCPT in one segment and BDAT in a second, which
  its Nagle algorithm holds until the client's delayed ACK (40 ms); TCP_QUICKACK on the client
  makes it ~250 msg/s. That is Linux-only and fragile, so Postbridge sends DATA.

The time runs from connecting to the last reply (250 = in Postfix's queue, fsynced by
cleanup(8)). Afterwards, untimed, every run is checked like tests/bench/collect.py does: after
the queue has drained, each Message-ID is in the recipient's Maildir exactly once. Figures are
medians. ``client CPU`` is this process's CPU time over the run; ``server CPU`` is that of the
server's processes until the queue has drained (so Postfix's delivery into the Maildir, which
runs beside the timed part on the same cores, is in it). Other work on the machine moves these
figures a lot: compare contenders of one run, which take turns so drift hits them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import smtplib
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

if __package__ in (None, ""):
    # Run as a script: make ``tests`` (and the package, via uv) importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from postbridge.engine.delivery.base import DeliveryJob
from postbridge.engine.delivery.lmtp import LmtpTarget
from postbridge.engine.delivery.smtp import SmtpTarget
from tests.bench.harness import (
    Dataset,
    exactly_once,
    expected_ids,
    maildir_message_ids,
    make_corpus,
    median,
)
from tests.servers.certs import make_certificates
from tests.servers.common import make_root, remove_tree
from tests.servers.dovecot import Dovecot
from tests.servers.postfix import PostfixOffice

SENDER = "sender@outside.example"
RECIPIENT = "alice@example.com"
LMTP_USER = "alice"
STREAM_WINDOW = 32
CONTENDERS = ("postbridge", "postbridge-parallel", "smtplib", "raw-data", "raw-stream")
ALL_CONTENDERS = (*CONTENDERS, "raw-bdat")
LMTP_CONTENDERS = ("postbridge", "postbridge-parallel", "smtplib", "raw-data")


@dataclass(frozen=True)
class Server:
    """Where to deliver, and how to see what arrived (and clear it) afterwards."""

    name: str
    host: str
    port: int
    lmtp: bool
    arrived: Callable[[int], collections.Counter[str]]  # waits for n; Message-IDs found
    clear: Callable[[], None]
    processes: Callable[[], list[psutil.Process]]

    def cpu(self) -> float:
        """CPU seconds of the server's processes so far, reaped children included."""
        total = 0.0
        for number, proc in enumerate(self.processes()):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
                if number == 0:  # the master has reaped the children that already exited
                    total += times.children_user + times.children_system
        return total


# -- the contenders -------------------------------------------------------------------------


async def run_postbridge(server: Server, corpus: Sequence[bytes]) -> float:
    kind = LmtpTarget if server.lmtp else SmtpTarget
    target = kind(host=server.host, port=server.port, security="none", timeout=30)
    jobs = [
        DeliveryJob(key=f"bench{i}", path=None, data=data, sender=SENDER, recipients=(RECIPIENT,))
        for i, data in enumerate(corpus)
    ]
    start = time.perf_counter()
    for job in jobs:
        results = await target.deliver(job)
        if results[RECIPIENT].status != "accepted":
            raise RuntimeError(results[RECIPIENT].reason)
    elapsed = time.perf_counter() - start
    await target.aclose()
    return elapsed


async def run_postbridge_parallel(server: Server, corpus: Sequence[bytes]) -> float:
    """As the poll cycle hands a batch to a server: ``target.parallel`` deliveries at once."""
    kind = LmtpTarget if server.lmtp else SmtpTarget
    target = kind(host=server.host, port=server.port, security="none", timeout=30)
    jobs = [
        DeliveryJob(key=f"bench{i}", path=None, data=data, sender=SENDER, recipients=(RECIPIENT,))
        for i, data in enumerate(corpus)
    ]

    async def one(job: DeliveryJob) -> None:
        results = await target.deliver(job)
        if results[RECIPIENT].status != "accepted":
            raise RuntimeError(results[RECIPIENT].reason)

    start = time.perf_counter()
    await asyncio.gather(*(one(job) for job in jobs))
    elapsed = time.perf_counter() - start
    await target.aclose()
    return elapsed


def run_smtplib(server: Server, corpus: Sequence[bytes]) -> float:
    kind = smtplib.LMTP if server.lmtp else smtplib.SMTP
    start = time.perf_counter()
    client = kind(server.host, server.port, timeout=30)
    try:
        for data in corpus:
            refused = client.sendmail(SENDER, [RECIPIENT], data)
            if refused:
                raise RuntimeError(str(refused))
        elapsed = time.perf_counter() - start
    finally:
        client.quit()
    return elapsed


class Raw:
    """A bare pipelined client: no parsing beyond the reply code, no checks, no timeouts."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: Server) -> Raw:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw = cls(reader, writer)
        await raw.expect(b"2")
        writer.write(b"LHLO bench\r\n" if server.lmtp else b"EHLO bench\r\n")
        await raw.expect(b"2")
        return raw

    async def expect(self, first: bytes) -> None:
        while True:
            line = await self.reader.readline()
            if not line.startswith(first):
                raise RuntimeError(f"unexpected reply {line!r}")
            if line[3:4] != b"-":
                return

    async def close(self) -> None:
        self.writer.write(b"QUIT\r\n")
        await self.expect(b"2")
        self.writer.close()
        await self.writer.wait_closed()


ENVELOPE = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\n".encode()


async def run_raw_data(server: Server, corpus: Sequence[bytes]) -> float:
    start = time.perf_counter()
    raw = await Raw.open(server)
    for data in corpus:
        raw.writer.write(ENVELOPE + b"DATA\r\n")
        for first in (b"2", b"2", b"3"):
            await raw.expect(first)
        raw.writer.write(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        await raw.expect(b"2")
    elapsed = time.perf_counter() - start
    await raw.close()
    return elapsed


def bdat(data: bytes) -> bytes:
    return ENVELOPE + b"BDAT %d LAST\r\n" % len(data) + data


async def run_raw_bdat(server: Server, corpus: Sequence[bytes]) -> float:
    start = time.perf_counter()
    raw = await Raw.open(server)
    for data in corpus:
        raw.writer.write(bdat(data))
        for _ in range(3):
            await raw.expect(b"2")
    elapsed = time.perf_counter() - start
    await raw.close()
    return elapsed


async def run_raw_stream(server: Server, corpus: Sequence[bytes]) -> float:
    start = time.perf_counter()
    raw = await Raw.open(server)
    in_flight: asyncio.Queue[None] = asyncio.Queue(STREAM_WINDOW)

    async def replies() -> None:
        for _ in corpus:
            for _ in range(3):
                await raw.expect(b"2")
            in_flight.get_nowait()

    reading = asyncio.create_task(replies())
    for data in corpus:
        await in_flight.put(None)
        raw.writer.write(bdat(data))
        await raw.writer.drain()
    await reading
    elapsed = time.perf_counter() - start
    await raw.close()
    return elapsed


def run(contender: str, server: Server, corpus: Sequence[bytes]) -> tuple[float, float]:
    """Wall seconds of the timed part, and this process's CPU seconds over the whole run."""
    cpu = time.process_time()
    if contender == "smtplib":
        wall = run_smtplib(server, corpus)
    else:
        runner = {
            "postbridge": run_postbridge,
            "postbridge-parallel": run_postbridge_parallel,
            "raw-data": run_raw_data,
            "raw-bdat": run_raw_bdat,
            "raw-stream": run_raw_stream,
        }[contender]
        wall = asyncio.run(runner(server, corpus))
    return wall, time.process_time() - cpu


# -- the servers ----------------------------------------------------------------------------


def postfix_server(office: PostfixOffice) -> Server:
    def arrived(count: int) -> collections.Counter[str]:
        wait = 60 + count * 0.1
        office.wait_for(RECIPIENT, count, timeout=wait)
        office.wait_for_empty_queue(timeout=wait)
        return maildir_message_ids(office.maildir(RECIPIENT))

    return Server(
        "Postfix SMTP",
        office.host,
        office.smtp_port,
        False,
        arrived,
        office.reset,
        office.processes,
    )


def dovecot_server(dovecot: Dovecot) -> Server:
    maildir = dovecot.maildir(LMTP_USER)

    def arrived(count: int) -> collections.Counter[str]:
        # LMTP has delivered before it answers: nothing to wait for.
        return maildir_message_ids(maildir)

    def clear() -> None:
        for sub in ("new", "cur"):
            for path in (maildir / sub).iterdir():
                path.unlink()

    return Server(
        "Dovecot LMTP", dovecot.host, dovecot.lmtp_port, True, arrived, clear, dovecot.processes
    )


# -- the run --------------------------------------------------------------------------------


def measure_all(
    server: Server, contenders: Sequence[str], dataset: Dataset, runs: int
) -> dict[str, list[tuple[float, float, float]]]:
    tags = (f"r{n}" for n in itertools.count())
    times: dict[str, list[tuple[float, float, float]]] = {c: [] for c in contenders}
    for _ in range(runs):
        for contender in contenders:  # round-robin, so drift hits every contender alike
            tag = next(tags)
            corpus = make_corpus(tag, dataset)
            server_cpu = server.cpu()
            wall, cpu = run(contender, server, corpus)
            found = server.arrived(dataset.count)
            server_cpu = server.cpu() - server_cpu
            problem = exactly_once(found, expected_ids(tag, dataset.count))
            server.clear()
            print(
                f"{server.name:>13} {contender:<11} {wall:7.3f} s "
                f"{dataset.count / wall:7.0f} msg/s  client CPU {1000 * cpu / dataset.count:.2f} "
                f"ms/msg, server CPU {1000 * server_cpu / dataset.count:.2f} ms/msg  "
                f"{problem or 'exactly once'}",
                file=sys.stderr,
                flush=True,
            )
            if problem:
                raise SystemExit(f"{contender}: {problem}")
            times[contender].append((wall, cpu, server_cpu))
    return times


def report(
    server: Server, dataset: Dataset, times: dict[str, list[tuple[float, float, float]]]
) -> None:
    runs = len(next(iter(times.values())))
    print(f"\n{server.name}, {dataset.name}, {runs} run(s), medians")
    print(
        "| contender | msg/s | ms/msg | client CPU ms/msg | server CPU ms/msg | wall s |\n"
        "|---|---|---|---|---|---|"
    )
    for contender, values in times.items():
        wall, cpu, server_cpu = (median(v[i] for v in values) for i in range(3))
        print(
            f"| {contender} | {dataset.count / wall:,.0f} | {1000 * wall / dataset.count:.2f} "
            f"| {1000 * cpu / dataset.count:.2f} | {1000 * server_cpu / dataset.count:.2f} "
            f"| {wall:.2f} |"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=ALL_CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--lmtp", action="store_true", help="also deliver to Dovecot's LMTP")
    args = parser.parse_args(argv)
    dataset = Dataset(f"{args.count:,} x {args.size // 1000} KB", args.count, args.size)
    root = make_root("pb-smtp-bench-")
    certs = make_certificates(root / "certs")
    office = PostfixOffice(certificates=certs)
    dovecot = Dovecot(certificates=certs) if args.lmtp else None
    try:
        office.start()
        server = postfix_server(office)
        report(server, dataset, measure_all(server, args.only, dataset, args.runs))
        if dovecot is not None:
            dovecot.start()
            dovecot.add_user(LMTP_USER, "bench-pass")
            server = dovecot_server(dovecot)
            contenders = [c for c in args.only if c in LMTP_CONTENDERS]
            report(server, dataset, measure_all(server, contenders, dataset, args.runs))
    finally:
        office.stop()
        if dovecot is not None:
            dovecot.stop()
        remove_tree(root)


if __name__ == "__main__":
    main()
