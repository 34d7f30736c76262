"""One poll cycle: the only place that orchestrates the engine.

For each ISP mailbox the cycle

1. delivers what earlier cycles left spooled (a 4xx from the office server,
   a crash after download);
2. logs in, lists the messages (UIDL + LIST) and records the new ones in the
   ledger as ``listed``, each with the delivery key it will keep for good;
3. downloads them (pipelined) while the ones before are routed, delivered and
   recorded, a batch at a time (``BatchDelivery._deliver_window``): a small
   message goes from memory to the target, a big one through its spool file;
   one that cannot be delivered completely now is made durable in the spool
   before the ledger says ``spooled`` (retry later) or ``quarantined``;
4. sends DELE only for messages the ledger holds as delivered or quarantined
   (quarantined mail is kept in the spool), after a durable ledger commit, and
   QUIT to commit the deletions, every ``delete_batch`` messages, so a crash
   late in a big download does not leave thousands of delivered messages at
   the ISP.

Every state change is committed to the ledger before the next step that
depends on it. Killed at any instant, the next cycle finds each message
either still at the ISP and not yet recorded as delivered (download again),
spooled (deliver from the spool), or delivered (only DELE it). Maildir
delivery names files by the message's ledger key, so even a kill between the
rename into ``new/`` and the ledger commit delivers nothing twice: the message
downloads again and its copy is found under the same key. A server's 250 is
recorded in the ledger in the very next transaction, durably.

Servers without UIDL: every message is downloaded each session and identified
by the SHA-256 of its content instead; one already delivered is then only
deleted (or, with leave-on-server, downloaded again and discarded).

This module holds the sessions; :class:`Collector` inherits the delivery steps
from batch.py (a batch of fresh downloads at a time) and delivering.py (one
ledger row at a time: leftovers, ATRN mail, the quarantine).
"""

from __future__ import annotations

import asyncio
import logging
import secrets as pysecrets
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from postbridge.engine import meta as metamod
from postbridge.engine.batch import Arrival, BatchDelivery, SessionWork
from postbridge.engine.config import SIGNAL_SOURCE as INBOUND_SOURCE
from postbridge.engine.config import Config, MailboxConfig, signal_before_poll
from postbridge.engine.delivering import DAY
from postbridge.engine.delivery.base import DeliveryTarget
from postbridge.engine.errors import NetworkError, PostbridgeError, ProtocolError
from postbridge.engine.events import (
    CycleFinished,
    CycleStarted,
    EventSink,
    MailboxFinished,
    MailboxStarted,
    MailboxSummary,
    MessagesListed,
    MessageSpooled,
    Notice,
    SignalSummary,
    ignore_events,
)
from postbridge.engine.ledger import (
    DELETING,
    DELIVERED,
    LISTED,
    QUARANTINED,
    REMOVED,
    SPOOLED,
    Ledger,
    Row,
)
from postbridge.engine.lock import DataLock
from postbridge.engine.paths import DataPaths
from postbridge.engine.pipeline import Pipeline
from postbridge.engine.pop3.client import DEFAULT_RETR_WINDOW, Pop3Client
from postbridge.engine.secrets import SecretStore
from postbridge.engine.spool import Spool, SpoolWriter
from postbridge.engine.tls import client_context

log = logging.getLogger("postbridge.cycle")

# Downloaded messages that may wait for delivery while the next ones download
# (pipeline.py). Each holds a spool file and at most its first 256 KB in memory.
PIPELINE_DEPTH = 32


def make_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verification on, the system's trust store, plus the optional extra anchor."""
    return client_context(ca_file, used_for="this mailbox")


Pop3Factory = Callable[[MailboxConfig], Pop3Client]


async def _close_ahead(ahead: asyncio.Task[Pop3Client]) -> None:
    """A connection opened ahead for a session that will not run: closed, errors ignored."""
    if not ahead.done():
        ahead.cancel()
    (outcome,) = await asyncio.gather(ahead, return_exceptions=True)
    if isinstance(outcome, Pop3Client):
        await outcome.close()


class _GuessMissed(Exception):
    """The RETRs sent with the login were not for the session's first new messages."""


def _check_guess(client: Pop3Client, batch: Sequence[int]) -> None:
    """Raise _GuessMissed unless the RETRs in flight are the first of ``batch``."""
    in_flight = client.retr_in_flight
    if in_flight and list(batch[: len(in_flight)]) != in_flight:
        raise _GuessMissed


def _renumbered(
    sizes: dict[int, int], deleted: Sequence[int], new: Sequence[int], *, limit: int
) -> list[int]:
    """The numbers ``new`` messages will have in the next session (RFC 1939 numbers
    the messages left after a QUIT from 1 up, in their order), at most ``limit``."""
    gone = set(deleted)
    order = {num: i for i, num in enumerate((n for n in sorted(sizes) if n not in gone), 1)}
    return [order[n] for n in new if n in order][:limit]


class Collector(BatchDelivery):
    """Runs poll cycles for one configuration; owns the ledger, spool and target."""

    def __init__(
        self,
        config: Config,
        *,
        secrets: SecretStore | None = None,
        events: EventSink = ignore_events,
        target: DeliveryTarget | None = None,
        pop3_factory: Pop3Factory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.secrets = secrets or SecretStore()
        self.emit = events
        self.paths = DataPaths(config.data_dir)
        self.paths.ensure()
        self.ledger = Ledger(self.paths.ledger, clock=clock)
        self.spool = Spool(self.paths.spool)
        self._target = target
        self._pop3_factory = pop3_factory or self._default_pop3
        self._clock = clock
        self._slots: asyncio.Semaphore | None = None
        self.stop_requested = False
        # Per mailbox, the message numbers the next session is expected to download
        # first, guessed at the end of the session before (see _session).
        self._guesses: dict[str, list[int]] = {}
        # Mailboxes whose server lost commands sent ahead of their turn (a CAPA before
        # the greeting, commands along with AUTH PLAIN): sent one at a time there.
        self._lockstep_login: set[str] = set()

    # -- set-up ------------------------------------------------------------

    def _default_pop3(self, mailbox: MailboxConfig) -> Pop3Client:
        return self.pop3_for(mailbox)

    @staticmethod
    def pop3_for(mailbox: MailboxConfig) -> Pop3Client:
        """A POP3 client for ``mailbox`` with its security settings."""
        return Pop3Client(
            host=mailbox.host,
            port=mailbox.port,
            security=mailbox.security,
            # A plaintext mailbox needs no trust store (reading it costs 20-50 ms).
            ssl_context=None if mailbox.security == "none" else make_ssl_context(mailbox.ca_file),
            timeout=mailbox.timeout,
            allow_plaintext_login=mailbox.allow_plaintext_login,
            label=mailbox.name,
        )

    async def aclose(self) -> None:
        if self._target is not None:
            await self._target.aclose()
        self.ledger.close()

    # -- the cycle ---------------------------------------------------------

    async def run_cycle(self, *, mailboxes: Sequence[str] | None = None) -> CycleFinished:
        """Collect every (or the named) enabled mailbox once, concurrently."""
        self.stop_requested = False
        if mailboxes:
            selected = [self.config.mailbox(name) for name in mailboxes]
        else:
            selected = [m for m in self.config.mailboxes if m.enabled]
        self.emit(CycleStarted(tuple(m.name for m in selected)))
        lock = DataLock(self.paths.lock)
        try:
            lock.acquire()
        except PostbridgeError as exc:
            summaries = tuple(self._failed_summary(m.name, exc) for m in selected)
            finished = CycleFinished(summaries)
            self.emit(finished)
            return finished
        try:
            self.spool.clean_partial()
            signalled = not mailboxes and signal_before_poll(self.config)
            if signalled:
                await self._send_signal()  # ETRN/ATRN first; its outcome is a SignalFinished
            results = list(await asyncio.gather(*(self._run_mailbox(m) for m in selected)))
            if not mailboxes and not signalled:
                leftover = await self._deliver_leftover_inbound()
                if leftover is not None:
                    results.append(leftover)
        finally:
            lock.release()
        finished = CycleFinished(tuple(results))
        self.emit(finished)
        return finished

    async def _deliver_leftover_inbound(self) -> MailboxSummary | None:
        """Mail that arrived by ATRN but could not be delivered then (a 4xx, a crash).

        It is retried on every cycle, so it never waits for the next ATRN session,
        nor forever when the signal has since been switched off.
        """
        if not self.ledger.in_state(SPOOLED, source=INBOUND_SOURCE):
            return None
        from postbridge.engine.signals import signal_mailbox  # loaded only when needed

        cfg = self.config.signal
        mailbox = (
            signal_mailbox(cfg)
            if cfg is not None
            else MailboxConfig(
                name=INBOUND_SOURCE,
                kind="global",
                host="",
                port=0,
                security="none",
                username="",
            )
        )
        summary = MailboxSummary(mailbox=INBOUND_SOURCE)
        try:
            await self.deliver_pending(mailbox, summary)
        except PostbridgeError as exc:
            summary.error = str(exc)
            summary.error_transient = exc.transient
            summary.error_needs_user = exc.needs_user
        return summary

    async def run_signal(self) -> SignalSummary:
        """Send the configured online signal (ETRN/ATRN) once, holding the data lock.

        Raises ConfigError when no signal is configured; every other failure is
        in the summary's ``error``.
        """
        self.stop_requested = False
        lock = DataLock(self.paths.lock)
        try:
            lock.acquire()
        except PostbridgeError as exc:
            from postbridge.engine.signals import failed_signal

            return failed_signal(self.config, exc, events=self.emit)
        try:
            self.spool.clean_partial()
            return await self._send_signal()
        finally:
            lock.release()

    async def _send_signal(self) -> SignalSummary:
        from postbridge.engine.signals import send_signal  # ETRN, the SMTP client: a few ms

        return await send_signal(self.config, host=self, secrets=self.secrets, events=self.emit)

    @staticmethod
    def _failed_summary(name: str, exc: PostbridgeError) -> MailboxSummary:
        return MailboxSummary(
            mailbox=name,
            error=str(exc),
            error_transient=exc.transient,
            error_needs_user=exc.needs_user,
        )

    async def _run_mailbox(self, mailbox: MailboxConfig) -> MailboxSummary:
        summary = MailboxSummary(mailbox=mailbox.name)
        self.emit(MailboxStarted(mailbox.name))
        try:
            await self.deliver_pending(mailbox, summary)
            await self._collect(mailbox, summary)
        except PostbridgeError as exc:
            log.warning("%s: %s", mailbox.name, exc.describe())
            summary.error = str(exc)
            summary.error_transient = exc.transient
            summary.error_needs_user = exc.needs_user
        except Exception as exc:  # a bug: keep the traceback, keep the other mailboxes going
            log.exception("%s: internal error", mailbox.name)
            summary.error = (
                f"Postbridge hit an internal error ({type(exc).__name__}: {exc}). "
                "Nothing was deleted at the ISP that was not delivered; see the log file."
            )
        self.ledger.set_status(mailbox.name, error=summary.error)
        self.emit(MailboxFinished(summary))
        return summary

    def _should_delete(self, mailbox: MailboxConfig, row: Row) -> bool:
        if row.state not in (DELIVERED, QUARANTINED):
            return False
        if mailbox.leave_on_server_days == 0:
            return True
        since = row.delivered_at or row.spooled_at or row.listed_at
        return self._clock() - since >= mailbox.leave_on_server_days * DAY

    async def _collect(self, mailbox: MailboxConfig, summary: MailboxSummary) -> None:
        # The system's trust store loads in a thread (20-50 ms, without the interpreter
        # lock) while the keyring is asked for the password; the session finds it cached.
        # (Asking the keyring in a thread too was slower: its imports need the lock.)
        loop = asyncio.get_running_loop()
        trust: asyncio.Future[object] = loop.create_future()
        if mailbox.security == "none":
            trust.set_result(None)
        else:  # submitted now: a task would only start once require() has returned
            trust = loop.run_in_executor(None, make_ssl_context, mailbox.ca_file)
        try:
            password = self.secrets.require(mailbox.secret_account)
        except BaseException:
            await asyncio.gather(trust, return_exceptions=True)  # its error says less
            raise
        await trust
        # The next session's connection (TCP, TLS, greeting and capabilities: three
        # round trips) opens when this one has sent its last RETR and has at most 64
        # replies to read, while it downloads and delivers its last messages and QUITs.
        # It does not log in before that QUIT, so the maildrop is never open twice.
        ahead: asyncio.Task[Pop3Client] | None = None

        def connect_ahead() -> None:
            nonlocal ahead
            if ahead is None:
                ahead = asyncio.ensure_future(self._connected(mailbox))

        self._guesses.pop(mailbox.name, None)
        try:
            # Bounded: each session handles up to delete_batch new messages.
            for _session in range(10_000):
                self._check_stop()
                connected, ahead = ahead, None
                more = await self._session(mailbox, summary, password, connected, connect_ahead)
                if not more:
                    return
        finally:
            if ahead is not None:
                await _close_ahead(ahead)
        raise ProtocolError(f"{mailbox.host} kept offering new messages; stopping for now.")

    async def _login(
        self,
        client: Pop3Client,
        mailbox: MailboxConfig,
        password: str,
        guess: Sequence[int] = (),
    ) -> tuple[dict[int, int], dict[int, str] | None]:
        return await client.login_and_list(
            mailbox.username,
            password,
            method=mailbox.auth,
            with_auth=mailbox.name not in self._lockstep_login,
            retr=guess,
        )

    async def _connected(self, mailbox: MailboxConfig) -> Pop3Client:
        """A client connected to ``mailbox``'s server (greeting and capabilities read)."""
        client = self._pop3_factory(mailbox)
        client.capa_before_greeting = mailbox.name not in self._lockstep_login
        try:
            await client.connect()
        except NetworkError as error:
            if not client.capa_sent_early:
                raise
            # Connected, CAPA sent before the greeting was read, then nothing: a server
            # may throw away what arrives before it greets. Once more, waiting for it.
            self._lockstep(mailbox, "the CAPA sent before its greeting", error)
            client = self._pop3_factory(mailbox)
            client.capa_before_greeting = False
            await client.connect()
        return client

    def _lockstep(self, mailbox: MailboxConfig, what: str, error: PostbridgeError) -> None:
        """From now on (this process), send ``mailbox``'s commands one at a time at login."""
        self._lockstep_login.add(mailbox.name)
        log.warning(
            "%s: %s did not answer %s (%s); sending one command at a time, from now on",
            mailbox.name,
            mailbox.host,
            what,
            error,
        )

    async def _session(
        self,
        mailbox: MailboxConfig,
        summary: MailboxSummary,
        password: str,
        connected: Awaitable[Pop3Client] | None = None,
        connect_ahead: Callable[[], None] | None = None,
    ) -> bool:
        """One POP3 session; returns True when new messages remain for another session.

        ``connected``: the session's client, connected ahead (if that failed, the
        session connects again itself); ``connect_ahead`` is called when another
        session will follow this one and its last downloads are under way.

        A session that follows another in the same cycle asks for its first messages
        with the login: their numbers after the QUIT before are known (RFC 1939
        numbers what is left from 1 up). They are used only if this session's own
        listing makes them its first new messages; otherwise the connection, with
        the replies to those RETRs, is dropped and the session starts over.
        """
        client: Pop3Client | None = None
        if connected is not None:
            try:
                client = await connected
            except PostbridgeError as error:
                # Some servers take one connection per address at a time: connect as usual.
                log.info("%s: the connection opened ahead failed (%s)", mailbox.name, error)
        fresh = client is None
        if client is None:
            client = await self._connected(mailbox)
        committed = False
        guess = self._guesses.pop(mailbox.name, [])
        try:
            try:
                sizes, uidls = await self._login(client, mailbox, password, guess)
            except NetworkError as error:
                if client.login_pipelined:
                    # The login was accepted, what followed it in the same write went
                    # unanswered: RFC 2449 allows commands to follow AUTH PLAIN, but a
                    # server may lose them (handing the connection over after the login).
                    self._lockstep(mailbox, "the commands sent along with the login", error)
                elif fresh:
                    raise
                else:
                    # Opened ahead, it may have waited past the server's limit for a login.
                    log.info("%s: the connection opened ahead was lost (%s)", mailbox.name, error)
                client, sizes, uidls = await self._start_over(client, mailbox, password)
            caps = client.capabilities
            if caps.expire == "0" and mailbox.leave_on_server_days > 0:
                self.emit(
                    Notice(
                        mailbox.name,
                        f"{mailbox.host} deletes messages as soon as they are downloaded "
                        "(it advertises EXPIRE 0), so “leave a copy on the server” cannot work "
                        "for this mailbox.",
                    )
                )
            # A login delay makes reconnecting costly: then take everything in one session.
            another = not (caps.login_delay or 0) > 0
            session = SessionWork(
                mailbox,
                summary,
                ids={},
                deletable=[],
                connect_ahead=connect_ahead if another else None,
            )
            try:
                more = await self._session_body(client, session, sizes, uidls)
            except _GuessMissed:
                # The messages guessed at were not this session's first new ones: the
                # replies to their RETRs go with the connection, and it starts over.
                log.info(
                    "%s: the messages asked for with the login were not the next", mailbox.name
                )
                client, sizes, uidls = await self._start_over(client, mailbox, password)
                session.ids.clear()
                session.deletable.clear()
                more = await self._session_body(client, session, sizes, uidls)
            deleted: list[int] = []
            if session.deletable:
                to_delete = sorted(set(session.deletable))
                ids = [session.ids[n] for n in to_delete]
                self.ledger.mark_server(ids, DELETING)
                deleted = await client.delete_and_quit(to_delete)  # those the server took
                committed = True
                self.ledger.mark_server(ids, REMOVED)
                summary.removed += len(ids)
            else:
                committed = await client.quit()
            if more and another and committed:
                self._guesses[mailbox.name] = _renumbered(
                    sizes,
                    deleted,
                    session.next_new,
                    limit=min(mailbox.delete_batch, DEFAULT_RETR_WINDOW),
                )
            return more and another
        finally:
            if not committed:
                await client.close()

    async def _start_over(
        self, client: Pop3Client, mailbox: MailboxConfig, password: str
    ) -> tuple[Pop3Client, dict[int, int], dict[int, str] | None]:
        """Drop ``client`` (nothing committed), log in on a new connection, list again;
        with nothing sent ahead of the listing."""
        await client.close()
        client = await self._connected(mailbox)
        return client, *await self._login(client, mailbox, password)

    async def _session_body(
        self,
        client: Pop3Client,
        session: SessionWork,
        sizes: dict[int, int],
        uidls: dict[int, str] | None,
    ) -> bool:
        if uidls is None:
            return await self._session_without_uidl(client, session, sizes)
        return await self._session_with_uidl(client, session, sizes, uidls)

    async def _session_with_uidl(
        self,
        client: Pop3Client,
        session: SessionWork,
        sizes: dict[int, int],
        uidls: dict[int, str],
    ) -> bool:
        mailbox, summary = session.mailbox, session.summary
        known = self.ledger.by_uid(mailbox.name, uidls.values())
        self.ledger.mark_gone(mailbox.name, set(uidls.values()))
        fetch: list[int] = []
        kept = 0
        for num in sorted(uidls):
            row = known.get(uidls[num])
            if row is None or row.state == LISTED:
                fetch.append(num)
            elif self._should_delete(mailbox, row):
                session.ids[num] = row.id
                session.deletable.append(num)
            else:
                kept += 1
        batch = fetch[: mailbox.delete_batch]
        _check_guess(client, batch)
        summary.kept = kept
        self.emit(MessagesListed(mailbox.name, on_server=len(uidls), new=len(fetch)))
        if not batch:
            return False
        ids = self.ledger.add_listed(mailbox.name, [(uidls[n], sizes.get(n, 0)) for n in batch])
        for num in batch:
            session.ids[num] = ids[uidls[num]]
        keys = self.ledger.keys([session.ids[num] for num in batch])
        writers: dict[int, SpoolWriter] = {}

        def open_sink(num: int) -> SpoolWriter:
            writer = self.spool.writer(session.ids[num])
            writers[num] = writer
            return writer

        async def deliver(arrivals: list[Arrival]) -> None:
            await self._deliver_window(session, arrivals)

        # The next messages download while the ones before are delivered, in
        # order, in batches of what arrived meanwhile (pipeline.py).
        pipeline: Pipeline[Arrival] = Pipeline(deliver, depth=PIPELINE_DEPTH)

        async def on_complete(num: int, sink: Any) -> None:
            ledger_id = session.ids[num]
            await pipeline.put(Arrival(num, ledger_id, keys[ledger_id], writers.pop(num)))

        def on_error(num: int, error: PostbridgeError) -> None:
            writer = writers.pop(num, None)
            if writer is not None:
                writer.abort()
            log.info("%s: message %d could not be retrieved: %s", mailbox.name, num, error)
            self.ledger.forget_listed(mailbox.name, [uidls[num]])
            failed.append(num)

        failed: list[int] = []
        # The next session's connection opens near the end of the downloads: its round
        # trips then overlap this session's last downloads and its QUIT.
        ahead = session.connect_ahead if len(fetch) > len(batch) else None
        try:
            try:
                await client.retr_many(
                    batch,
                    open_sink=open_sink,
                    on_complete=on_complete,
                    on_error=on_error,
                    on_nearly_done=ahead,
                )
            except PostbridgeError:
                # Complete downloads are delivered even when the line dropped after them.
                await pipeline.finish()
                raise
            await pipeline.finish()
        finally:
            for writer in writers.values():
                writer.abort()
            for arrival in await pipeline.close():
                # Never delivered (a step failed first): the message stays at the ISP.
                arrival.discard()
        # New again next session: what could not be retrieved, then what is left.
        session.next_new = sorted({*failed, *fetch[len(batch) :]})
        return len(fetch) > len(batch)

    async def _session_without_uidl(
        self, client: Pop3Client, session: SessionWork, sizes: dict[int, int]
    ) -> bool:
        """Identify messages by content hash: download each, keep what is new."""
        mailbox = session.mailbox
        nums = sorted(sizes)[: mailbox.delete_batch]
        _check_guess(client, nums)
        self.emit(MessagesListed(mailbox.name, on_server=len(sizes), new=len(nums)))
        writers: dict[int, SpoolWriter] = {}

        def open_sink(num: int) -> SpoolWriter:
            writer = self.spool.anonymous_writer(f"nouidl-{num}")
            writers[num] = writer
            return writer

        async def on_complete(num: int, sink: Any) -> None:
            writer = writers.pop(num)
            spooled = writer.commit()
            uid = f"sha256:{spooled.sha256}"
            row = self.ledger.by_single_uid(mailbox.name, uid)
            if row is not None and row.state != LISTED:
                spooled.path.unlink(missing_ok=True)
                if self._should_delete(mailbox, row):
                    session.ids[num] = row.id
                    session.deletable.append(num)
                return
            ids = self.ledger.add_listed(mailbox.name, [(uid, spooled.size)])
            session.ids[num] = ids[uid]
            self.spool.adopt(spooled.path, ids[uid])
            await self._after_spool(
                session, num, ids[uid], spooled.size, spooled.sha256, spooled.head
            )

        def on_error(num: int, error: PostbridgeError) -> None:
            writer = writers.pop(num, None)
            if writer is not None:
                writer.abort()

        try:
            await client.retr_many(
                nums, open_sink=open_sink, on_complete=on_complete, on_error=on_error
            )
        finally:
            for writer in writers.values():
                writer.abort()
        return len(sizes) > len(nums) and bool(session.deletable)

    async def _after_spool(
        self,
        session: SessionWork,
        num: int,
        ledger_id: int,
        size: int,
        sha256: str,
        head: bytes,
    ) -> None:
        mailbox, summary = session.mailbox, session.summary
        key = f"{int(self._clock())}.pb{ledger_id}_{pysecrets.token_hex(4)}"
        meta = metamod.extract(head)  # reads the header block only; parsed once, cached
        self.ledger.mark_spooled(ledger_id, key=key, size=size, sha256=sha256, meta=meta)
        summary.downloaded += 1
        self.emit(MessageSpooled(mailbox.name, ledger_id, size))
        state = await self._deliver(mailbox, ledger_id, summary, head=head)
        row = self.ledger.get(ledger_id)
        if (
            row is not None
            and state in (DELIVERED, QUARANTINED)
            and self._should_delete(mailbox, row)
        ):
            session.deletable.append(num)
        elif state in (DELIVERED, QUARANTINED):
            summary.kept += 1
        self._check_stop()
