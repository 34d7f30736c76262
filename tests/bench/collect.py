"""Postbridge against fetchmail and getmail6 on the same job, side by side in one run.

Run it as root (the private Dovecot and Postfix need it), from the repository::

    uv run python tests/bench/collect.py            # the full run, ~20 minutes on 2 cores
    uv run python tests/bench/collect.py --quick    # a smoke run: 1 repetition, small data

It starts the private Dovecot (the ISP, POP3S) and Postfix (the office server) of the interop
tests, and for each data set (1,000 x 20 KB, 100 x 1 MB, 1 x 100 MB) and each simulated ISP
round trip (0 ms: direct; 50 ms: through :class:`~tests.bench.proxy.DelayProxy`) fills a fresh
ISP mailbox with the same messages before every single run of every tool:

* ``ceiling``: a bare pipelined POP3 read, no delivery, no DELE (tests/bench/ceiling.py);
* ``postbridge-maildir`` / ``postbridge-smtp``: ``postbridge poll --once`` into its Maildir
  target / by SMTP to the office Postfix;
* ``fetchmail-smtp``: Debian's fetchmail, ``--nokeep``, SMTP to the same Postfix;
* ``getmail6-maildir``: Debian's getmail6 into a Maildir.

Every run is checked: each message arrived exactly once (by Message-ID) and the ISP mailbox is
empty afterwards (the ceiling leaves it full). Figures are medians over the repetitions; peak
RSS is the child's VmHWM, CPU is user + system seconds of the child. Last, a 10,000-message
mailbox checks that Postbridge's memory stays flat however much mail is waiting.

Each run writes into a folder of its own under one marked as a "top directory" for ext4
(``chattr +T``, here with the ioctl), which makes the file system place each such folder in a
block group of its own. Without it every run's files landed in the block group where the runs
before had just deleted thousands of files (their output, and Dovecot's expunges): ext4 without
a journal, as on this VM, checks every inode freed in the last minute or more before reusing
one (``recently_deleted``), so each file a tool created first scanned past thousands of them.
That charged the tools that create many files (Postbridge's and getmail6's Maildirs) with the
benchmark's own clean-up: 1,000 x 20 KB into Maildir took 0.82 s of CPU instead of 0.59 s. An
office PC's mail folders see no such churn; the flag changes where files go, not what any tool
does.

fetchmail (~23 messages/s as Debian ships it) and getmail6 dominate the running time, most of
all behind a 50 ms round trip; there they run once instead of three times, and the table says
so in its ``runs`` column.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime
import fcntl
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (uv run python tests/bench/collect.py): make ``tests`` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench import tools
from tests.bench.harness import (
    Dataset,
    Measured,
    exactly_once,
    expected_ids,
    maildir_message_ids,
    make_corpus,
    median,
)
from tests.bench.proxy import DelayProxy
from tests.servers.certs import make_certificates
from tests.servers.common import make_root, remove_tree
from tests.servers.dovecot import Dovecot
from tests.servers.postfix import PostfixConfig, PostfixOffice

PASSWORD = "bench-pass"
RECIPIENT = "alice@example.com"
MB = 1e6

FULL_DATASETS = (
    Dataset("1,000 x 20 KB", 1000, 20_000),
    Dataset("100 x 1 MB", 100, 1_000_000),
    Dataset("1 x 100 MB", 1, 100_000_000),
)
QUICK_DATASETS = (
    Dataset("200 x 20 KB", 200, 20_000),
    Dataset("20 x 1 MB", 20, 1_000_000),
    Dataset("1 x 10 MB", 1, 10_000_000),
)
RTTS_MS = (0, 50)
TOOLS = ("ceiling", "postbridge-maildir", "postbridge-smtp", "fetchmail-smtp", "getmail6-maildir")
SLOW_TOOLS = ("fetchmail-smtp", "getmail6-maildir")
PACKAGES = ("dovecot-core", "postfix", "fetchmail", "getmail6")

# The targets of issue 7, checked at the end.
TARGET_FETCHMAIL_X = 50.0
TARGET_GETMAIL_X = 10.0
TARGET_CEILING_SHARE = 0.25
TARGET_BIG_MBS_X = 5.0
TARGET_SMTP_X = 10.0
TARGET_RTT_KEEP = 0.5
TARGET_RSS_MB = 120.0


# ioctl numbers of Linux's FS_IOC_GETFLAGS / FS_IOC_SETFLAGS and the ext4 "top directory" flag.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def spread_root(prefix: str) -> Path:
    """A fresh folder whose subfolders ext4 places each in a block group of its own.

    The "top directory" flag (``chattr +T``) makes ext4's allocator treat the folder's
    subfolders like top-level ones. Anywhere it is not supported the folder is plain.
    """
    root = make_root(prefix)
    with contextlib.suppress(OSError):
        fd = os.open(root, os.O_RDONLY)
        try:
            flags = array.array("i", [0])
            fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
            flags[0] |= _FS_TOPDIR_FL
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags, True)
        finally:
            os.close(fd)
    return root


class BenchOffice(PostfixOffice):
    """The office Postfix, taking messages of any size (the 100 MB one; Postfix's default is 10)."""

    def _build_config(self, smtp_port: int) -> PostfixConfig:
        config = super()._build_config(smtp_port)
        config.main["message_size_limit"] = "0"
        return config


@dataclass
class Row:
    dataset: Dataset
    rtt_ms: int
    tool: str
    runs: list[Measured] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    failed: int = 0

    def add(self, result: Measured, problem: str | None) -> None:
        """A run that failed (non-zero exit) is reported but kept out of the medians."""
        if problem:
            self.problems.append(problem)
        if result.returncode == 0:
            self.runs.append(result)
        else:
            self.failed += 1

    def _median(self, pick: Callable[[Measured], float]) -> float:
        return median(pick(m) for m in self.runs)

    @property
    def wall(self) -> float:
        return self._median(lambda m: m.wall)

    @property
    def rate(self) -> float:
        return self.dataset.count / self.wall if self.runs else float("nan")

    @property
    def mbs(self) -> float:
        return self.dataset.total_bytes / MB / self.wall if self.runs else float("nan")

    @property
    def cpu(self) -> float:
        return self._median(lambda m: m.cpu)

    @property
    def rss_mb(self) -> float:
        return max((m.peak_rss for m in self.runs), default=0) / MB


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = make_root("pb-bench-")
        self.names = (f"b{n:04d}" for n in itertools.count())
        self.dovecot: Dovecot | None = None
        self.office: BenchOffice | None = None
        self.postbridge: tools.Postbridge | None = None
        self.skipped: dict[str, str] = {}
        self.runs_root = spread_root("pb-bench-runs-")

    # -- set-up ---------------------------------------------------------------------------

    def start(self) -> None:
        certs = make_certificates(self.root / "certs")
        self.dovecot = Dovecot(certificates=certs)
        self.dovecot.start()
        self.office = BenchOffice(certificates=certs)
        self.office.start()
        self.postbridge = tools.Postbridge(
            self.root / "pb-home", PASSWORD, profile=self.args.profile
        )
        for tool, check in (
            ("fetchmail-smtp", tools.fetchmail_available),
            ("getmail6-maildir", tools.getmail_available),
        ):
            reason = check()
            if reason:
                self.skipped[tool] = reason

    def stop(self) -> None:
        for server in (self.dovecot, self.office):
            if server is not None:
                server.stop()
        remove_tree(self.runs_root)
        remove_tree(self.root)

    # -- one run --------------------------------------------------------------------------

    def fill(self, corpus: Sequence[bytes]) -> str:
        assert self.dovecot is not None
        user = next(self.names)
        self.dovecot.add_user(user, PASSWORD)
        self.dovecot.add_messages(user, corpus)
        return user

    def run_once(
        self, tool: str, dataset: Dataset, corpus: Sequence[bytes], tag: str, port: int
    ) -> tuple[Measured, str | None]:
        assert self.dovecot is not None and self.office is not None
        assert self.postbridge is not None
        user = self.fill(corpus)
        isp = tools.Isp("localhost", port, user, PASSWORD, self.dovecot.ca_file)
        office = tools.Office(self.office.host, self.office.smtp_port, RECIPIENT)
        work = make_root("run-", self.runs_root)
        # Every tool starts on a quiet disk: what the runs before wrote (and the mailbox just
        # filled) is written back now, not while the next tool's fsyncs wait behind it.
        os.sync()
        try:
            if tool == "ceiling":
                result = tools.run_ceiling(isp)
            elif tool == "postbridge-maildir":
                result = self.postbridge.run(work, isp, None)
            elif tool == "postbridge-smtp":
                result = self.postbridge.run(work, isp, office)
            elif tool == "fetchmail-smtp":
                result = tools.run_fetchmail(work, isp, office)
            elif tool == "getmail6-maildir":
                result = tools.run_getmail(work, isp)
            else:
                raise ValueError(tool)
            problem = self.check(tool, dataset, tag, user, work, result)
        finally:
            remove_tree(work)
            remove_tree(self.dovecot.maildir(user).parent)
        return result, problem

    def check(
        self, tool: str, dataset: Dataset, tag: str, user: str, work: Path, result: Measured
    ) -> str | None:
        assert self.dovecot is not None and self.office is not None
        if result.returncode != 0:
            return f"exit {result.returncode}: {result.output.strip()[-300:]}"
        if tool == "ceiling":
            expected = f"{dataset.count} messages"
            return None if result.output.startswith(expected) else result.output.strip()
        left = self.dovecot.count(user)
        if tool.endswith("-smtp"):
            # Postfix delivers after its 250; waiting for it is not part of the timing.
            wait = 60 + dataset.count * 0.1 + dataset.total_bytes / 10e6
            try:
                self.office.wait_for(RECIPIENT, dataset.count, timeout=wait)
                self.office.wait_for_empty_queue(timeout=wait)
                found = maildir_message_ids(self.office.maildir(RECIPIENT))
            finally:
                self.office.reset(timeout=wait)
        elif tool == "postbridge-maildir":
            found = maildir_message_ids(tools.Postbridge.maildir(work))
        else:
            found = maildir_message_ids(tools.getmail_maildir(work))
        problem = exactly_once(found, expected_ids(tag, dataset.count))
        if left:
            problem = f"{problem + '; ' if problem else ''}{left} left at the ISP"
        return problem

    # -- the matrix -----------------------------------------------------------------------

    def runs_for(self, tool: str, rtt_ms: int, dataset: Dataset) -> int:
        runs: int = self.args.runs
        if tool in SLOW_TOOLS and rtt_ms and dataset.count >= 1000:
            runs = min(runs, self.args.slow_runs)
        return runs

    def matrix(self, datasets: Sequence[Dataset]) -> list[Row]:
        assert self.dovecot is not None
        rows: list[Row] = []
        selected = [t for t in TOOLS if t in self.args.tools and t not in self.skipped]
        for number, dataset in enumerate(datasets):
            tag = f"d{number}"
            corpus = make_corpus(tag, dataset)
            for rtt_ms in self.args.rtt:
                proxy = None
                port = self.dovecot.pop3s_port
                if rtt_ms:
                    proxy = DelayProxy(target_port=port, one_way=rtt_ms / 2000)
                    proxy.start_in_thread()
                    port = proxy.port
                try:
                    block = [Row(dataset, rtt_ms, tool) for tool in selected]
                    rounds = max((self.runs_for(r.tool, rtt_ms, dataset) for r in block), default=0)
                    # Round-robin, so drift (page cache, Postfix queue) hits every tool alike.
                    for repetition in range(rounds):
                        for row in block:
                            if repetition >= self.runs_for(row.tool, rtt_ms, dataset):
                                continue
                            result, problem = self.run_once(row.tool, dataset, corpus, tag, port)
                            row.add(result, problem)
                            progress(
                                f"{dataset.name:>14} {rtt_ms:3d} ms {row.tool:<19} "
                                f"{result.wall:7.2f} s {dataset.count / result.wall:8.0f} msg/s "
                                f"{result.peak_rss / MB:6.0f} MB  {problem or 'ok'}"
                            )
                    rows.extend(block)
                finally:
                    if proxy is not None:
                        proxy.stop_thread()
            del corpus
        return rows

    def many_messages(self, count: int) -> Row:
        """A mailbox with ``count`` small messages: memory must not grow with it."""
        assert self.dovecot is not None
        dataset = Dataset(f"{count:,} x 2 KB", count, 2_000)
        row = Row(dataset, 0, "postbridge-maildir")
        corpus = make_corpus("many", dataset)
        result, problem = self.run_once(row.tool, dataset, corpus, "many", self.dovecot.pop3s_port)
        row.add(result, problem)
        progress(f"{dataset.name:>14}   0 ms {row.tool:<19} {result.wall:7.2f} s {problem or 'ok'}")
        return row


# -- the report ---------------------------------------------------------------------------


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        versions[package] = result.stdout.strip() or "not installed"
    return {
        "date": datetime.date.today().isoformat(),
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        **versions,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def find(rows: Sequence[Row], dataset: Dataset, rtt_ms: int, tool: str) -> Row | None:
    for row in rows:
        if row.dataset == dataset and row.rtt_ms == rtt_ms and row.tool == tool and row.runs:
            return row
    return None


def table(rows: Sequence[Row]) -> str:
    header = (
        "| data set | RTT | tool | runs | msg/s | MB/s | peak RSS MB | CPU s | wall s "
        "| × fetchmail | exactly once |"
    )
    lines = [header, "|" + "---|" * 11]
    for row in rows:
        if not row.runs:
            if row.failed:
                lines.append(
                    f"| {row.dataset.name} | {row.rtt_ms} ms | {row.tool} | 0 "
                    f"| | | | | | | NO: {'; '.join(row.problems)[:80]} |"
                )
            continue
        fetchmail = find(rows, row.dataset, row.rtt_ms, "fetchmail-smtp")
        ratio = ""
        if row.tool.startswith("postbridge") and fetchmail is not None:
            ratio = f"{row.rate / fetchmail.rate:.1f}×"
        check = "yes" if not row.problems else "NO: " + "; ".join(row.problems)[:80]
        if row.tool == "ceiling" and not row.problems:
            check = "(no delivery)"
        runs = f"{len(row.runs)}" + (f" (+{row.failed} failed)" if row.failed else "")
        lines.append(
            f"| {row.dataset.name} | {row.rtt_ms} ms | {row.tool} | {runs} "
            f"| {row.rate:,.0f} | {row.mbs:,.1f} | {row.rss_mb:.0f} | {row.cpu:.2f} "
            f"| {row.wall:.2f} | {ratio} | {check} |"
        )
    return "\n".join(lines)


def targets(rows: Sequence[Row], datasets: Sequence[Dataset], many: Row | None) -> list[str]:
    """Each target of issue 7 as 'met'/'NOT met' with the figures behind it."""
    out: list[str] = []

    def verdict(ok: bool, text: str) -> None:
        out.append(f"[{'met' if ok else 'NOT met'}] {text}")

    small, big_set, huge = datasets
    pb = find(rows, small, 0, "postbridge-maildir")
    fm = find(rows, small, 0, "fetchmail-smtp")
    gm = find(rows, small, 0, "getmail6-maildir")
    ceiling = find(rows, small, 0, "ceiling")
    if pb and fm:
        x = pb.rate / fm.rate
        verdict(x >= TARGET_FETCHMAIL_X, f"{small.name} → Maildir: {x:.1f}× fetchmail (≥ 50×)")
    if pb and gm:
        x = pb.rate / gm.rate
        verdict(x >= TARGET_GETMAIL_X, f"{small.name} → Maildir: {x:.1f}× getmail6 (≥ 10×)")
    if pb and ceiling:
        share = pb.rate / ceiling.rate
        verdict(
            share >= TARGET_CEILING_SHARE,
            f"{small.name} → Maildir: {share:.0%} of the bare pipelined read (≥ 25%)",
        )
    pb_big = find(rows, big_set, 0, "postbridge-maildir")
    fm_big = find(rows, big_set, 0, "fetchmail-smtp")
    if pb_big and fm_big:
        x = pb_big.mbs / fm_big.mbs
        verdict(x >= TARGET_BIG_MBS_X, f"{big_set.name}: {x:.1f}× fetchmail's MB/s (≥ 5×)")
    pb_smtp = find(rows, small, 0, "postbridge-smtp")
    if pb_smtp and fm:
        x = pb_smtp.rate / fm.rate
        verdict(x >= TARGET_SMTP_X, f"{small.name} by SMTP to Postfix: {x:.1f}× fetchmail (≥ 10×)")
    for dataset in (small, big_set):
        for tool in ("postbridge-maildir", "postbridge-smtp"):
            near, far = find(rows, dataset, 0, tool), find(rows, dataset, 50, tool)
            if near and far:
                keep = far.rate / near.rate
                verdict(
                    keep >= TARGET_RTT_KEEP,
                    f"{dataset.name} {tool} at 50 ms keeps {keep:.0%} of its 0 ms rate (≥ 50%)",
                )
    for tool in ("postbridge-maildir", "postbridge-smtp"):
        row = find(rows, huge, 0, tool)
        if row:
            verdict(
                row.rss_mb < TARGET_RSS_MB,
                f"{huge.name} {tool}: peak RSS {row.rss_mb:.0f} MB (< 120 MB)",
            )
    if many is not None and many.runs:
        verdict(
            many.rss_mb < TARGET_RSS_MB and not many.problems,
            f"{many.dataset.name} in one mailbox: peak RSS {many.rss_mb:.0f} MB (< 120 MB), "
            f"{many.rate:,.0f} msg/s, exactly once: {'yes' if not many.problems else 'NO'}",
        )
    out.append("[not measured here] GUI-thread stall during a 1,000-message poll (tray app)")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run, small data: a smoke test")
    parser.add_argument("--runs", type=int, help="repetitions per tool (default 3; quick 1)")
    parser.add_argument(
        "--slow-runs",
        type=int,
        default=1,
        help="repetitions of fetchmail/getmail6 at 50 ms for 1,000+ messages (default 1)",
    )
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    parser.add_argument("--rtt", default="0,50", help="round trips in ms (default 0,50)")
    parser.add_argument("--datasets", default="0,1,2", help="indices of the data sets to run")
    parser.add_argument("--many", type=int, help="messages in the memory check (default 10000)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        help="profile each Postbridge run into this folder (needs pyinstrument: "
        "uv run --with pyinstrument python tests/bench/collect.py --profile DIR)",
    )
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(args.tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; known: {', '.join(TOOLS)}")
    args.rtt = [int(v) for v in args.rtt.split(",") if v.strip()]
    args.datasets = [int(v) for v in args.datasets.split(",") if v.strip()]
    if args.many is None:
        args.many = 1000 if args.quick else 10_000
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("The private Dovecot and Postfix need root; run this as root.", file=sys.stderr)
        return 2
    all_sets = QUICK_DATASETS if args.quick else FULL_DATASETS
    datasets = [all_sets[i] for i in args.datasets]
    info = machine()
    load_before = os.getloadavg()[0]
    bench = Bench(args)
    started = time.monotonic()
    try:
        bench.start()
        rows = bench.matrix(datasets)
        many = bench.many_messages(args.many) if args.many else None
    finally:
        bench.stop()
    elapsed = time.monotonic() - started
    info["load"] = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    print()
    print(
        f"Postbridge benchmark, {info['date']}: {info['cores']} cores ({info['cpu']}), "
        f"Python {info['python']}; Debian dovecot {info['dovecot-core']}, postfix "
        f"{info['postfix']}, fetchmail {info['fetchmail']}, getmail6 {info['getmail6']}"
    )
    print(
        "POP3S from a private Dovecot on loopback; 50 ms = a delaying proxy in front of it. "
        "MB = 10^6 bytes; medians of the runs; peak RSS = the child's VmHWM."
    )
    print(
        f"1-minute load average: {info['load']} (anything else running competes with the "
        "CPU-bound tools, Postbridge most, and hardly with fetchmail, which mostly waits)"
    )
    for tool, reason in bench.skipped.items():
        print(f"skipped {tool}: {reason}")
    print()
    print(table([*rows, *([many] if many else [])]))
    print()
    if len(all_sets) == len(datasets):
        for line in targets(rows, datasets, many):
            print(line)
    print(f"\n(total {elapsed / 60:.1f} minutes)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "rows": [
                        {
                            "dataset": r.dataset.name,
                            "rtt_ms": r.rtt_ms,
                            "tool": r.tool,
                            "runs": len(r.runs),
                            "failed": r.failed,
                            "msg_s": r.rate,
                            "mb_s": r.mbs,
                            "rss_mb": r.rss_mb,
                            "cpu_s": r.cpu,
                            "wall_s": r.wall,
                            "problems": r.problems,
                        }
                        for r in [*rows, *([many] if many else [])]
                        if r.runs
                    ],
                },
                indent=1,
            )
        )
    failed = any(r.problems for r in rows) or bool(many and many.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
