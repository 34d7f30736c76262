"""The ``postbridge`` command.

``postbridge`` alone starts the tray app (``--hidden``: without opening a
window, as the login autostart does); ``status`` prints the status; the other
subcommands run the engine headless:
``poll --once`` (one cycle), ``signal --once`` (send the ETRN/ATRN online
signal), ``run`` (poll on the configured interval, for a
server or a service manager), ``check`` (test every connection and login
without changing anything), ``secret`` (passwords in the keyring),
``quarantine`` and ``history``. Exit status: 0 success, 1 a mailbox or
delivery failed, 2 a configuration problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import getpass
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from postbridge import __version__
from postbridge.engine import config as configmod
from postbridge.engine import logsetup
from postbridge.engine.errors import ConfigError, PostbridgeError
from postbridge.engine.events import (
    CycleFinished,
    Event,
    MailboxSummary,
    MessageDeferred,
    MessageQuarantined,
    Notice,
    SignalFinished,
    SignalSummary,
)
from postbridge.engine.ledger import QUARANTINED, Ledger
from postbridge.engine.paths import DataPaths, default_config_file, default_log_dir
from postbridge.engine.secrets import SecretStore, backend_info

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _out(text: str = "") -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postbridge",
        description="Collect the office's mail from the ISP and deliver it to the office.",
    )
    parser.add_argument("--version", action="version", version=f"postbridge {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        help=f"configuration file (default: $POSTBRIDGE_CONFIG or {default_config_file()})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug output")
    parser.add_argument(
        "--hidden", action="store_true", help="start the app in the tray without opening a window"
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="check this installation (modules, Qt, keyring, folders, ledger) and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("status", help="show the configuration and each mailbox's last poll")

    poll = sub.add_parser("poll", help="collect mail now")
    poll.add_argument("--once", action="store_true", help="run one cycle and exit (the default)")
    poll.add_argument("--mailbox", action="append", metavar="NAME", help="only this mailbox")
    poll.add_argument(
        "--dry-run",
        action="store_true",
        help="show where each message would go; deliver and delete nothing",
    )

    suggest = sub.add_parser(
        "suggest-envelope", help="say which envelope header the ISP writes (global mailboxes)"
    )
    suggest.add_argument("mailbox", metavar="MAILBOX")
    suggest.add_argument("--count", type=int, default=20, help="how many recent messages to read")

    sig = sub.add_parser("signal", help="send the online signal (ETRN/ATRN) now")
    sig.add_argument("--once", action="store_true", help="send it once and exit (the default)")

    sub.add_parser("run", help="poll on the configured interval until stopped (headless)")
    sub.add_parser("check", help="test every connection and login without changing anything")

    secret = sub.add_parser("secret", help="manage passwords in the keyring")
    secret_sub = secret.add_subparsers(dest="secret_command", metavar="ACTION", required=True)
    s_set = secret_sub.add_parser("set", help="store a password (reads stdin when not a terminal)")
    s_set.add_argument("name", help="mailbox name, 'delivery' or 'signal'")
    s_del = secret_sub.add_parser("delete", help="remove a stored password")
    s_del.add_argument("name")
    secret_sub.add_parser("backend", help="say which keyring holds the passwords")

    quarantine = sub.add_parser("quarantine", help="messages that could not be delivered")
    q_sub = quarantine.add_subparsers(dest="quarantine_command", metavar="ACTION", required=True)
    q_sub.add_parser("list", help="list quarantined messages")
    q_retry = q_sub.add_parser("retry", help="deliver a quarantined message again")
    q_retry.add_argument("id", type=int)
    q_retry.add_argument("--to", action="append", metavar="ADDRESS", help="deliver to this address")

    history = sub.add_parser("history", help="recent messages and where they went")
    history.add_argument("--message", type=int, metavar="ID", help="explain one message")
    history.add_argument("--limit", type=int, default=30)
    return parser


def _load(args: argparse.Namespace) -> configmod.Config:
    return configmod.load(args.config)


def _print_event(event: Event) -> None:
    if isinstance(event, Notice):
        _out(f"[{event.mailbox}] Note: {event.text}")
    elif isinstance(event, MessageDeferred):
        _out(f"[{event.mailbox}] message {event.ledger_id} kept for a later try: {event.reason}")
    elif isinstance(event, MessageQuarantined):
        _out(f"[{event.mailbox}] message {event.ledger_id} quarantined: {event.reason}")
    elif isinstance(event, SignalFinished):
        _out(_signal_line(event.summary))


def _signal_line(s: SignalSummary) -> str:
    line = f"signal ({s.kind.upper()}): {s.words}"
    if s.error and s.error not in s.words:
        line += f"\n  ERROR: {s.error}"
    return line


def _summary_line(s: MailboxSummary) -> str:
    parts = [
        f"{s.downloaded} downloaded",
        f"{s.delivered} delivered",
        f"{s.kept} kept on server",
        f"{s.removed} removed from server",
        f"{s.quarantined} quarantined",
    ]
    if s.deferred:
        parts.append(f"{s.deferred} waiting for a retry")
    line = f"{s.mailbox}: " + ", ".join(parts)
    if s.error:
        line += f"\n  ERROR: {s.error}"
    return line


async def _poll(
    config: configmod.Config, mailboxes: Sequence[str] | None
) -> tuple[CycleFinished, bool]:
    """One cycle; also says whether the online signal (sent first with before-poll) failed."""
    from postbridge.engine.cycle import Collector

    signal_ok = True

    def events(event: Event) -> None:
        nonlocal signal_ok
        if isinstance(event, SignalFinished):
            signal_ok = event.ok
        _print_event(event)

    collector = Collector(config, events=events)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, collector.request_stop)
    try:
        return await collector.run_cycle(mailboxes=mailboxes), signal_ok
    finally:
        await collector.aclose()


def cmd_poll(args: argparse.Namespace) -> int:
    config = _load(args)
    if not config.mailboxes and not configmod.signal_before_poll(config):
        _err(f"No mailboxes are configured in {config.path}; add a [[mailbox]] section.")
        return EXIT_CONFIG
    if args.mailbox:
        for name in args.mailbox:
            config.mailbox(name)
    if args.dry_run:
        return asyncio.run(_dry_run(config, args.mailbox))
    finished, signal_ok = asyncio.run(_poll(config, args.mailbox))
    for summary in finished.summaries:
        _out(_summary_line(summary))
    return EXIT_OK if finished.ok and signal_ok else EXIT_FAILED


async def _signal(config: configmod.Config) -> SignalSummary:
    from postbridge.engine.cycle import Collector

    collector = Collector(config, events=_print_event)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, collector.request_stop)
    try:
        return await collector.run_signal()
    finally:
        await collector.aclose()


def cmd_signal(args: argparse.Namespace) -> int:
    """Send the configured ETRN/ATRN once; "no mail waiting" is a success."""
    config = _load(args)
    if config.signal is None or not config.signal.enabled:
        _err(
            f"No online signal is configured in {config.path}; add a [signal] section "
            'with kind = "etrn" or kind = "atrn".'
        )
        return EXIT_CONFIG
    summary = asyncio.run(_signal(config))  # _print_event prints its words
    return EXIT_OK if summary.ok else EXIT_FAILED


async def _dry_run(config: configmod.Config, mailboxes: Sequence[str] | None) -> int:
    from postbridge.engine.cycle import Collector
    from postbridge.engine.preview import dry_run

    factory = Collector.pop3_for
    items = await dry_run(config, mailboxes=mailboxes, secrets=SecretStore(), factory=factory)
    if not items:
        _out("No messages are waiting at the ISP.")
    for item in items:
        _out(item.describe())
    _out(f"Dry run: {len(items)} messages examined; nothing was delivered or deleted.")
    return EXIT_OK


def cmd_suggest(args: argparse.Namespace) -> int:
    from postbridge.engine.cycle import Collector
    from postbridge.engine.preview import suggest

    config = _load(args)
    result = asyncio.run(
        suggest(
            config,
            args.mailbox,
            secrets=SecretStore(),
            factory=Collector.pop3_for,
            count=args.count,
        )
    )
    _out(result.explain())
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    interval = config.schedule.interval_minutes * 60
    sig_cfg = config.signal
    # when = "interval": the signal keeps its own timer instead of preceding each poll.
    timed_signal = sig_cfg is not None and sig_cfg.enabled and sig_cfg.when == "interval"
    signal_every = ((sig_cfg.interval_minutes if sig_cfg else 0) * 60) or interval

    async def forever() -> int:
        from postbridge.engine.cycle import Collector

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        collector = Collector(config, events=_print_event)

        def on_signal() -> None:
            collector.request_stop()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
        next_poll = next_signal = loop.time()
        try:
            while not stop.is_set():
                if timed_signal and loop.time() >= next_signal:
                    next_signal = loop.time() + signal_every
                    await collector.run_signal()
                if loop.time() >= next_poll and not stop.is_set():
                    next_poll = loop.time() + interval
                    finished = await collector.run_cycle()
                    stamp = _when(dt.datetime.now().timestamp())
                    for summary in finished.summaries:
                        _out(f"{stamp} {_summary_line(summary)}")
                wake = min(next_poll, next_signal) if timed_signal else next_poll
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, wake - loop.time()))
        finally:
            await collector.aclose()
        return EXIT_OK

    return asyncio.run(forever())


async def _check(config: configmod.Config, secrets: SecretStore) -> bool:
    from postbridge.engine.checks import check_delivery, check_pop3

    ok = True
    for mailbox in config.mailboxes:
        try:
            words = await check_pop3(mailbox, secrets.require(mailbox.secret_account))
            _out(f"OK    mailbox {mailbox.name}: {words}")
        except PostbridgeError as exc:
            ok = False
            _out(f"FAIL  mailbox {mailbox.name}: {exc}")
            if exc.detail:
                _out(f"      ({exc.detail})")
    try:
        _out(f"OK    delivery: {await check_delivery(config, secrets)}")
    except PostbridgeError as exc:
        ok = False
        _out(f"FAIL  delivery: {exc}")
    return ok


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    info = backend_info()
    _out(f"Config: {config.path}")
    _out(f"Data:   {config.data_dir}")
    _out(f"Keyring: {info.describe()}")
    ok = asyncio.run(_check(config, SecretStore()))
    if not info.usable:
        ok = False
    return EXIT_OK if ok else EXIT_FAILED


def cmd_secret(args: argparse.Namespace) -> int:
    store = SecretStore()
    info = backend_info()
    if args.secret_command == "backend":
        _out(info.describe())
        return EXIT_OK if info.usable else EXIT_FAILED
    if args.secret_command == "delete":
        removed = store.delete(args.name)
        _out(f"Password for “{args.name}” removed." if removed else "No password was stored.")
        return EXIT_OK
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        _err("No password given; nothing stored.")
        return EXIT_FAILED
    store.set(args.name, password)
    _out(f"Password for “{args.name}” stored. {info.describe()}")
    return EXIT_OK


def cmd_quarantine(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.quarantine_command == "list":
        ledger = Ledger(DataPaths(config.data_dir).ledger)
        try:
            rows = ledger.in_state(QUARANTINED)
        finally:
            ledger.close()
        if not rows:
            _out("The quarantine is empty.")
        for row in rows:
            _out(
                f"{row.id:>6}  {_when(row.spooled_at)}  from {row.sender or '?'}  "
                f"“{row.subject or ''}”  [{row.source}]\n        {row.last_error or ''}"
            )
        return EXIT_OK

    async def retry() -> int:
        from postbridge.engine.cycle import Collector

        collector = Collector(config, events=_print_event)
        try:
            summary = await collector.retry_quarantined(args.id, recipients=args.to)
        finally:
            await collector.aclose()
        if summary.delivered:
            _out(f"Message {args.id} delivered.")
            return EXIT_OK
        _out(f"Message {args.id} was not delivered.")
        return EXIT_FAILED

    return asyncio.run(retry())


def cmd_history(args: argparse.Namespace) -> int:
    config = _load(args)
    ledger = Ledger(DataPaths(config.data_dir).ledger)
    try:
        if args.message is not None:
            row = ledger.get(args.message)
            if row is None:
                _err(f"There is no message {args.message}.")
                return EXIT_FAILED
            _out(f"Message {row.id} from mailbox {row.source}")
            _out(f"  From:    {row.sender or ''}")
            _out(f"  Subject: {row.subject or ''}")
            _out(f"  Status:  {row.state} (at the ISP: {row.server})")
            if row.route:
                from postbridge.engine.routing.router import RouteDecision

                try:
                    _out("  Route:   " + RouteDecision.from_json(row.route).explain())
                except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                    _out("  Route:   " + row.route)  # a plain note (mail that came by ATRN)
            for state in ledger.recipient_states(row.id).values():
                _out(f"  {state.address}: {state.state} {state.reason or ''}".rstrip())
            if row.last_error:
                _out(f"  Last problem: {row.last_error}")
            return EXIT_OK
        for row in ledger.recent(limit=args.limit):
            to = ", ".join(row.recipients) or "-"
            _out(f"{row.id:>6}  {_when(row.spooled_at or row.listed_at)}  {row.state:<11} {to}")
            _out(f"        from {row.sender or '?'}  “{row.subject or ''}”")
    finally:
        ledger.close()
    return EXIT_OK


def cmd_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    path = args.config or default_config_file()
    _out(f"Postbridge {__version__}")
    try:
        config = configmod.load(path)
    except ConfigError as exc:
        _out(str(exc))
        _out("")
        parser.print_help()
        return EXIT_OK
    _out(f"Config:  {config.path}")
    _out(f"Data:    {config.data_dir}")
    _out(f"Deliver: {config.delivery.kind}")
    paths = DataPaths(config.data_dir)
    if paths.ledger.exists():
        ledger = Ledger(paths.ledger)
        try:
            counts = ledger.counts()
            statuses = {s.mailbox: s for s in ledger.status()}
        finally:
            ledger.close()
        _out("Ledger:  " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty"))
    else:
        statuses = {}
    for mailbox in config.mailboxes:
        status = statuses.get(mailbox.name)
        line = f"  {mailbox.name}: {mailbox.username} at {mailbox.host}"
        if status:
            line += f"; last success {_when(status.last_success)}"
            if status.last_error and (status.last_error_at or 0) > (status.last_success or 0):
                line += f"; last error: {status.last_error}"
        _out(line)
    _out("")
    parser.print_help()
    return EXIT_OK


def no_display_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the tray app cannot open a window here (Linux without a desktop), or None.

    Without this, Qt aborts with a message about platform plugins that tells a user
    nothing; on a server the headless ``postbridge run`` is what they want.
    """
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return (
        "The Postbridge app needs a desktop session, and this one has none (neither DISPLAY "
        "nor WAYLAND_DISPLAY is set). On a server, run it headless instead: "
        "“postbridge run” polls on the configured interval, “postbridge poll --once” "
        "polls once."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return _run(parser, parser.parse_args(argv))


def console() -> NoReturn:
    """The ``postbridge`` command: console script, ``python -m postbridge``, frozen app.

    A command (``poll --once``, ``secret set`` ...) leaves without the interpreter's
    teardown, which frees every object one by one and joins idle worker threads:
    ~20 ms of a 0.6 s poll of 1,000 messages, for nothing. By then :func:`_run` has
    closed the ledger (each command closes what it opened, awaiting every worker
    thread's task) and the log files; only the standard streams are flushed here.
    The tray app and the self-test (no command) exit the ordinary way.
    """
    parser = build_parser()
    args = parser.parse_args()
    one_shot = args.command is not None and not args.self_test
    if one_shot:
        # The cyclic garbage collector looked at the young objects every 700
        # allocations: ~100 collections and ~11 ms of a 1,000-message poll, for
        # objects that mostly die young anyway. A command is short-lived.
        gc.set_threshold(20_000, 50, 100)
    code = _run(parser, args)
    if not one_shot:
        raise SystemExit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (postbridge ... | head)
            stream.flush()
    os._exit(code)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.self_test:  # before logging: the self-test writes nothing outside a temp folder
        from postbridge.app.selftest import run_self_test

        return run_self_test(out=sys.stdout, verbose=args.verbose)
    logsetup.setup(default_log_dir(), verbose=args.verbose)
    handlers = {
        "poll": cmd_poll,
        "signal": cmd_signal,
        "run": cmd_run,
        "check": cmd_check,
        "secret": cmd_secret,
        "quarantine": cmd_quarantine,
        "history": cmd_history,
        "suggest-envelope": cmd_suggest,
    }
    try:
        if args.command is None:
            problem = no_display_problem()
            if problem:
                _err(problem)
                return EXIT_CONFIG
            from postbridge.app.main import main as app_main  # Qt loads only for the app

            return app_main(config_path=args.config, hidden=args.hidden)
        if args.command == "status":
            return cmd_status(args, parser)
        return handlers[args.command](args)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except PostbridgeError as exc:
        _err(str(exc))
        if exc.detail and args.verbose:
            _err(f"({exc.detail})")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("Stopped.")
        return EXIT_FAILED
    finally:
        logsetup.shutdown()


if __name__ == "__main__":
    console()
