"""One poll cycle: the only place that orchestrates the engine.

For each ISP mailbox the cycle

1. delivers what earlier cycles left spooled (a 4xx from the office server,
   a crash after download);
2. logs in, lists the messages (UIDL + LIST) and records the new ones in the
   ledger as ``listed``, each with the delivery key it will keep for good;
3. downloads them (pipelined) while the ones before are routed, delivered and
   recorded, a batch at a time (:meth:`Collector._deliver_window`): a small
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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets as pysecrets
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postbridge.engine import meta as metamod
from postbridge.engine.config import Config, MailboxConfig
from postbridge.engine.delivery.base import DeliveryJob, DeliveryTarget, RecipientResult
from postbridge.engine.errors import Cancelled, PostbridgeError, ProtocolError
from postbridge.engine.events import (
    CycleFinished,
    CycleStarted,
    EventSink,
    MailboxFinished,
    MailboxStarted,
    MailboxSummary,
    MessageDeferred,
    MessageDelivered,
    MessageQuarantined,
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
    Settlement,
)
from postbridge.engine.lock import DataLock
from postbridge.engine.paths import DataPaths
from postbridge.engine.pipeline import Pipeline
from postbridge.engine.pop3.client import Pop3Client
from postbridge.engine.routing.recipients import message_id
from postbridge.engine.routing.router import (
    REASON_HEADER,
    RouteDecision,
    header_line,
    route,
    split_header_block,
)
from postbridge.engine.secrets import SecretStore
from postbridge.engine.signals import SOURCE as INBOUND_SOURCE
from postbridge.engine.signals import (
    failed_signal,
    send_signal,
    signal_before_poll,
    signal_mailbox,
)
from postbridge.engine.spool import Spool, SpoolWriter, file_sha256
from postbridge.engine.tls import client_context

log = logging.getLogger("postbridge.cycle")

DAY = 86400.0
# Copies of one message (same Message-ID and body) to the same recipient within this
# window are delivered once; ISPs store one copy per recipient in a global mailbox.
DUPLICATE_WINDOW = 7 * DAY
# Downloaded messages that may wait for delivery while the next ones download
# (pipeline.py). Each holds a spool file and at most its first 256 KB in memory.
PIPELINE_DEPTH = 32


def make_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verification on, the system's trust store, plus the optional extra anchor."""
    return client_context(ca_file, used_for="this mailbox")


def make_target(config: Config, secrets: SecretStore) -> DeliveryTarget:
    d = config.delivery
    if d.kind == "maildir":
        from postbridge.engine.delivery.maildir import MaildirTarget

        return MaildirTarget(root=config.maildir_root)
    password = secrets.require("delivery") if d.username else None
    kwargs: dict[str, Any] = {
        "host": d.host,
        "port": d.port,
        "security": d.security,
        "username": d.username or None,
        "password": password,
        "ca_file": d.ca_file,
        "allow_plaintext_login": d.allow_plaintext_login,
        "timeout": d.timeout,
    }
    if d.kind == "smtp":
        from postbridge.engine.delivery.smtp import SmtpTarget

        return SmtpTarget(**kwargs)
    from postbridge.engine.delivery.lmtp import LmtpTarget

    return LmtpTarget(**kwargs)


Pop3Factory = Callable[[MailboxConfig], Pop3Client]


_DUPLICATE = "an identical copy (same Message-ID and body) was already delivered"


@dataclass
class _Arrival:
    """A message downloaded in this session, on its way to delivery."""

    num: int
    ledger_id: int
    key: str
    writer: SpoolWriter
    path: Path | None = None  # its spool file, for a message too big to hold in memory
    data: bytes | None = None  # the whole message, when small
    sha256: str = ""

    def body_sha256(self, offset: int) -> str:
        if self.data is not None:
            return hashlib.sha256(memoryview(self.data)[offset:]).hexdigest()
        assert self.path is not None
        return file_sha256(self.path, offset=offset)

    def discard(self) -> None:
        """Forget a download that was never recorded: the message stays at the ISP."""
        self.writer.abort()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass
class _Plan:
    """What the fast path decided for one arrival, and (after delivery) its state."""

    arrival: _Arrival
    head: bytes
    meta: dict[str, str | None]
    decision: RouteDecision
    recipients: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    copies: tuple[str, str, tuple[str, ...]] | None = None
    job: DeliveryJob | None = None
    state: str = LISTED
    error: str | None = None


def _take_over(arrivals: list[_Arrival]) -> None:
    """Take each download from its writer: the bytes, or the (not yet durable) file."""
    for arrival in arrivals:
        writer = arrival.writer
        if writer.in_memory:
            arrival.data = writer.content()
        else:
            arrival.path = writer.finish(durable=False).path
        arrival.sha256 = writer.sha256


async def _close_ahead(ahead: asyncio.Task[Pop3Client]) -> None:
    """A connection opened ahead for a session that will not run: closed, errors ignored."""
    if not ahead.done():
        ahead.cancel()
    (outcome,) = await asyncio.gather(ahead, return_exceptions=True)
    if isinstance(outcome, Pop3Client):
        await outcome.close()


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


@dataclass
class _Session:
    """What one POP3 session is working on."""

    mailbox: MailboxConfig
    summary: MailboxSummary
    ids: dict[int, int]  # message number -> ledger id
    deletable: list[int]  # message numbers safe to DELE
    # Called once the downloads of a session that another will follow are done.
    connect_ahead: Callable[[], None] | None = None


class Collector:
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

    @property
    def target(self) -> DeliveryTarget:
        if self._target is None:
            self._target = make_target(self.config, self.secrets)
        return self._target

    async def aclose(self) -> None:
        if self._target is not None:
            await self._target.aclose()
        self.ledger.close()

    def request_stop(self) -> None:
        """Stop after the messages being delivered now (safe from the loop's thread)."""
        self.stop_requested = True

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
            return failed_signal(self.config, exc, events=self.emit)
        try:
            self.spool.clean_partial()
            return await self._send_signal()
        finally:
            lock.release()

    async def _send_signal(self) -> SignalSummary:
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

    def _check_stop(self) -> None:
        if self.stop_requested:
            raise Cancelled("Collection was stopped; the rest of the mail stays at the ISP.")

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
        # The next session's connection (TCP, TLS, greeting, capabilities: four round
        # trips) opens while this one delivers its last messages and QUITs. It does not
        # log in before then, so the maildrop is never open twice.
        ahead: asyncio.Task[Pop3Client] | None = None

        def connect_ahead() -> None:
            nonlocal ahead
            if ahead is None:
                ahead = asyncio.ensure_future(self._connected(mailbox))

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

    async def _connected(self, mailbox: MailboxConfig) -> Pop3Client:
        client = self._pop3_factory(mailbox)
        await client.connect()
        return client

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
        session will follow this one and its downloads are done.
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
            client = self._pop3_factory(mailbox)
        committed = False
        try:
            if fresh:
                await client.connect()
            sizes, uidls = await client.login_and_list(
                mailbox.username, password, method=mailbox.auth
            )
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
            session = _Session(
                mailbox,
                summary,
                ids={},
                deletable=[],
                connect_ahead=connect_ahead if another else None,
            )
            if uidls is None:
                more = await self._session_without_uidl(client, session, sizes)
            else:
                more = await self._session_with_uidl(client, session, sizes, uidls)
            if session.deletable:
                to_delete = sorted(set(session.deletable))
                ids = [session.ids[n] for n in to_delete]
                self.ledger.mark_server(ids, DELETING)
                await client.delete_and_quit(to_delete)
                committed = True
                self.ledger.mark_server(ids, REMOVED)
                summary.removed += len(ids)
            else:
                committed = await client.quit()
            return more and another
        finally:
            if not committed:
                await client.close()

    async def _session_with_uidl(
        self,
        client: Pop3Client,
        session: _Session,
        sizes: dict[int, int],
        uidls: dict[int, str],
    ) -> bool:
        mailbox, summary = session.mailbox, session.summary
        known = self.ledger.by_uid(mailbox.name)
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
        summary.kept = kept
        self.emit(MessagesListed(mailbox.name, on_server=len(uidls), new=len(fetch)))
        batch = fetch[: mailbox.delete_batch]
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

        async def deliver(arrivals: list[_Arrival]) -> None:
            await self._deliver_window(session, arrivals)

        # The next messages download while the ones before are delivered, in
        # order, in batches of what arrived meanwhile (pipeline.py).
        pipeline: Pipeline[_Arrival] = Pipeline(deliver, depth=PIPELINE_DEPTH)

        async def on_complete(num: int, sink: Any) -> None:
            ledger_id = session.ids[num]
            await pipeline.put(_Arrival(num, ledger_id, keys[ledger_id], writers.pop(num)))

        def on_error(num: int, error: PostbridgeError) -> None:
            writer = writers.pop(num, None)
            if writer is not None:
                writer.abort()
            log.info("%s: message %d could not be retrieved: %s", mailbox.name, num, error)
            self.ledger.forget_listed(mailbox.name, [uidls[num]])

        try:
            try:
                await client.retr_many(
                    batch, open_sink=open_sink, on_complete=on_complete, on_error=on_error
                )
            except PostbridgeError:
                # Complete downloads are delivered even when the line dropped after them.
                await pipeline.finish()
                raise
            if session.connect_ahead is not None and len(fetch) > len(batch):
                session.connect_ahead()
            await pipeline.finish()
        finally:
            for writer in writers.values():
                writer.abort()
            for arrival in await pipeline.close():
                # Never delivered (a step failed first): the message stays at the ISP.
                arrival.discard()
        return len(fetch) > len(batch)

    async def _session_without_uidl(
        self, client: Pop3Client, session: _Session, sizes: dict[int, int]
    ) -> bool:
        """Identify messages by content hash: download each, keep what is new."""
        mailbox = session.mailbox
        nums = sorted(sizes)[: mailbox.delete_batch]
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
        session: _Session,
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

    # -- delivery of what a session downloaded ------------------------------

    async def _deliver_window(self, session: _Session, arrivals: list[_Arrival]) -> None:
        """Route, deliver and record a batch of freshly downloaded messages.

        The fast path of the cycle. A message is delivered straight from
        memory (or, when big, from its spool file, not yet fsynced), and one
        ledger transaction records the whole batch: a message the target took
        for every recipient goes from ``listed`` to ``delivered`` without a
        durable spool copy, which it no longer needs. Only a message that stays
        (a recipient deferred or refused, or a quarantine) is made durable in
        the spool before that transaction says ``spooled`` or ``quarantined``;
        its redirect to the postmaster and the rest then follow the ordinary
        path (:meth:`_deliver`).

        Why nothing is lost or doubled: the ISP copy is deleted only after
        this transaction and a durable commit (``mark_server``). A kill before
        the transaction leaves the rows ``listed``: the messages download
        again, and a Maildir copy already written is found under the row's
        key (assigned when listed). Servers (SMTP, LMTP) are not idempotent:
        for them each message's outcome is recorded as soon as it is known.
        """
        mailbox = session.mailbox
        settled: set[int] = set()
        try:
            # Hashing (which lets go of the GIL) and closing big files happen
            # beside the download, not on the event loop.
            await asyncio.to_thread(_take_over, arrivals)
            seen: dict[tuple[str, str], set[str]] = {}
            plans = [self._plan(session, arrival, seen) for arrival in arrivals]
            done: list[tuple[_Plan, dict[str, RecipientResult]]] = []
            if self.target.idempotent:
                jobs = [p.job for p in plans if p.job is not None]
                async with self._delivery_slots():
                    results = iter(await self.target.deliver_many(jobs) if jobs else [])
                done = [(p, next(results) if p.job is not None else {}) for p in plans]
                await self._settle(session, done, settled, durable=False)
            else:
                await self._deliver_each(session, plans, done, settled)
        finally:
            for arrival in arrivals:
                if arrival.ledger_id not in settled:
                    arrival.discard()
        for plan, outcome in done:
            if plan.state == SPOOLED:
                state = await self._deliver(
                    mailbox,
                    plan.arrival.ledger_id,
                    session.summary,
                    head=plan.head,
                    retry_temporary=False,
                    accepted_before=[r for r, res in outcome.items() if res.status == "accepted"],
                )
                self._note_done(session, plan.arrival.num, state)
        self._check_stop()

    async def _deliver_each(
        self,
        session: _Session,
        plans: list[_Plan],
        done: list[tuple[_Plan, dict[str, RecipientResult]]],
        settled: set[int],
    ) -> None:
        """Deliver to a server, ``target.parallel`` messages at a time, each recorded at once.

        The window between a server's 250 and the ledger is that one transaction.
        A delivery that fails for good (a wrong password, say) does not cut short
        the others in flight: their server may have the message already, so
        their answers are awaited and recorded before the failure is raised.
        """

        async def one(plan: _Plan) -> None:
            outcome: dict[str, RecipientResult] = {}
            if plan.job is not None:
                async with self._delivery_slots():
                    outcome = await self.target.deliver(plan.job)
            accepted = any(r.status == "accepted" for r in outcome.values())
            await self._settle(session, [(plan, outcome)], settled, durable=accepted)
            done.append((plan, outcome))

        if self.target.parallel <= 1:
            for plan in plans:
                await one(plan)
            return
        failures = [
            error
            for error in await asyncio.gather(*(one(p) for p in plans), return_exceptions=True)
            if isinstance(error, BaseException)
        ]
        if failures:
            raise failures[0]

    def _delivery_slots(self) -> asyncio.Semaphore:
        """How many deliveries may be with the target at once (one for Maildir)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(1, self.target.parallel))
        return self._slots

    def _plan(
        self, session: _Session, arrival: _Arrival, seen: dict[tuple[str, str], set[str]]
    ) -> _Plan:
        """Route one arrival and make its delivery job (CPU only, no I/O but the ledger's)."""
        mailbox, summary = session.mailbox, session.summary
        head = arrival.writer.head
        meta = metamod.extract(head)  # reads the header block only; parsed once, cached
        summary.downloaded += 1
        self.emit(MessageSpooled(mailbox.name, arrival.ledger_id, arrival.writer.size))
        decision = self._decide(mailbox, head)
        plan = _Plan(arrival, head, meta, decision)
        if decision.quarantine:
            return plan
        recipients = list(decision.recipients)
        identity = self._copy_identity(mailbox, decision, head, arrival.body_sha256)
        if identity is not None:
            before = self.ledger.copies_seen(
                message_id=identity[0],
                body_sha256=identity[1],
                since=self._clock() - DUPLICATE_WINDOW,
                exclude=arrival.ledger_id,
            ) | seen.get(identity, set())
            seen.setdefault(identity, set()).update(recipients)
            plan.copies = (*identity, tuple(recipients))
            plan.duplicates = [r for r in recipients if r in before]
            recipients = [r for r in recipients if r not in before]
        plan.recipients = recipients
        if recipients:
            base, skip = self._prepend(decision, head)
            plan.job = DeliveryJob(
                key=arrival.key,
                path=arrival.path,
                data=arrival.data,
                sender=meta.get("envelope_from") or "",
                recipients=tuple(recipients),
                prepend=base,
                skip=skip,
            )
        return plan

    async def _settle(
        self,
        session: _Session,
        done: list[tuple[_Plan, dict[str, RecipientResult]]],
        settled: set[int],
        *,
        durable: bool,
    ) -> None:
        """One ledger transaction for these plans; spool copies made durable before it."""
        mailbox, summary = session.mailbox, session.summary
        entries: list[Settlement] = []
        for plan, outcome in done:
            outcomes: list[tuple[str, str, str]] = [
                (r.recipient, r.status, r.reason) for r in outcome.values()
            ]
            if plan.decision.quarantine:
                plan.state = QUARANTINED
                plan.error = plan.decision.quarantine
            elif not plan.recipients:
                plan.state = DELIVERED
                plan.error = f"Not delivered again: {_DUPLICATE}."
                outcomes += [(r, "duplicate", _DUPLICATE) for r in plan.duplicates]
            elif all(r.status == "accepted" for r in outcome.values()):
                plan.state = DELIVERED
                outcomes += [(r, "duplicate", _DUPLICATE) for r in plan.duplicates]
            else:
                plan.state = SPOOLED
                outcomes += [(r, "duplicate", _DUPLICATE) for r in plan.duplicates]
            arrival = plan.arrival
            entries.append(
                Settlement(
                    id=arrival.ledger_id,
                    state=plan.state,
                    size=arrival.writer.size,
                    sha256=arrival.sha256,
                    meta=plan.meta,
                    recipients=plan.recipients,
                    route=plan.decision.to_json(),
                    outcomes=outcomes,
                    error=plan.error,
                    copies=plan.copies,
                )
            )
        keep = [plan.arrival for plan, _ in done if plan.state != DELIVERED]
        if keep or durable:
            # fsyncs: in a worker thread, so the downloads go on meanwhile.
            await asyncio.to_thread(self._store, keep, entries, durable)
        else:
            self.ledger.settle(entries, durable=False)
        settled.update(plan.arrival.ledger_id for plan, _ in done)
        gone = [plan.arrival.path for plan, _ in done if plan.state == DELIVERED]
        if any(path is not None for path in gone):
            await asyncio.to_thread(_unlink_all, [p for p in gone if p is not None])
        for plan, outcome in done:
            arrival = plan.arrival
            if plan.state == DELIVERED:
                accepted = [r for r, res in outcome.items() if res.status == "accepted"]
                self._count(summary, accepted)
                summary.delivered += 1
                self.emit(
                    MessageDelivered(
                        mailbox.name,
                        arrival.ledger_id,
                        tuple(accepted),
                        sender=plan.meta.get("sender") or "",
                        subject=plan.meta.get("subject") or "",
                    )
                )
                self._note_done(session, arrival.num, DELIVERED)
            elif plan.state == QUARANTINED:
                summary.quarantined += 1
                self.emit(MessageQuarantined(mailbox.name, arrival.ledger_id, plan.error or ""))
                self._note_done(session, arrival.num, QUARANTINED)

    def _store(self, keep: list[_Arrival], entries: list[Settlement], durable: bool) -> None:
        """Make the spool copies of messages that stay durable, then record (worker thread)."""
        for arrival in keep:
            if arrival.data is not None:
                arrival.path = self.spool.save(arrival.ledger_id, arrival.data)
            elif arrival.path is not None:
                self.spool.make_durable(arrival.path)
        self.ledger.settle(entries, durable=durable)

    def _note_done(self, session: _Session, num: int, state: str) -> None:
        """A message of this session delivered or quarantined just now: DELE it, or keep it."""
        if state not in (DELIVERED, QUARANTINED):
            return
        # Just delivered: "leave a copy on the server" for N > 0 days keeps it for now.
        if session.mailbox.leave_on_server_days == 0:
            session.deletable.append(num)
        else:
            session.summary.kept += 1

    # -- delivery ----------------------------------------------------------

    async def deliver_pending(self, mailbox: MailboxConfig, summary: MailboxSummary) -> None:
        """Deliver every message of ``mailbox.name`` that is spooled but not yet delivered."""
        for row in self.ledger.in_state(SPOOLED, source=mailbox.name):
            self._check_stop()
            await self._deliver(mailbox, row.id, summary)

    def _decide(self, mailbox: MailboxConfig, head: bytes) -> RouteDecision:
        return route(mailbox, head)

    async def _deliver(
        self,
        mailbox: MailboxConfig,
        ledger_id: int,
        summary: MailboxSummary,
        *,
        head: bytes | None = None,
        retry_temporary: bool = True,
        accepted_before: Sequence[str] = (),
    ) -> str:
        """Route and deliver one spooled message; returns its new ledger state.

        Recipients the target accepts are never delivered to again. One it
        refuses permanently is redirected to the mailbox's postmaster (with the
        reason in a header) when one is configured; otherwise, or when the
        postmaster is refused too, the message goes to quarantine. Anything
        temporary keeps the message spooled for the next cycle.

        The fast path (:meth:`_deliver_window`) hands over the messages its
        first attempt did not settle: ``retry_temporary=False`` then leaves
        the recipients that just failed for now to the next cycle, and
        ``accepted_before`` names those that attempt delivered to.
        """
        row = self.ledger.get(ledger_id)
        if row is None or row.key is None or row.state != SPOOLED:
            return row.state if row is not None else LISTED
        path = self.spool.path_for(ledger_id)
        if not path.exists():
            # Should not happen: the spool file is removed only after delivery.
            reason = "The spooled copy of this message is missing from the data folder."
            return self._finish(mailbox, row, summary, QUARANTINED, outcomes=(), error=reason)
        if head is None:
            head = self.spool.read_head(ledger_id)
        decision = self._decide(mailbox, head)
        recipients = list(row.recipients)
        if not recipients:
            if decision.quarantine:
                self.ledger.set_route(ledger_id, recipients=(), route=decision.to_json())
                return self._finish(
                    mailbox, row, summary, QUARANTINED, outcomes=(), error=decision.quarantine
                )
            recipients, duplicates = self._without_duplicates(
                mailbox, decision, ledger_id, head, list(decision.recipients)
            )
            self.ledger.set_route(ledger_id, recipients=recipients, route=decision.to_json())
            if not recipients:
                why = "an identical copy (same Message-ID and body) was already delivered"
                return self._finish(
                    mailbox,
                    row,
                    summary,
                    DELIVERED,
                    outcomes=[(r, "duplicate", why) for r in duplicates],
                    error=f"Not delivered again: {why}.",
                )
        base, skip = self._prepend(decision, head)
        postmaster = mailbox.postmaster
        accepted_now: list[str] = []
        settled = (
            ("accepted", "permanent") if retry_temporary else ("accepted", "permanent", "temporary")
        )
        # Bounded: round 2 only delivers the postmaster's copy of refused mail.
        for _round in range(2):
            states = self.ledger.recipient_states(ledger_id)
            refused = [r for r in recipients if r in states and states[r].state == "permanent"]
            if refused and postmaster and postmaster not in recipients:
                recipients.append(postmaster)
                self.ledger.set_route(ledger_id, recipients=recipients, route=row.route or "")
            todo = [r for r in recipients if r not in states or states[r].state not in settled]
            if not todo:
                break
            jobs: list[tuple[tuple[str, ...], bytes]] = []
            normal = tuple(r for r in todo if not (r == postmaster and refused))
            if normal:
                jobs.append((normal, base))
            if postmaster in todo and refused:
                reasons = "; ".join(states[r].reason or r for r in refused)
                reason_line = header_line(
                    REASON_HEADER, f"not deliverable to {', '.join(refused)}: {reasons}"
                )
                jobs.append(((postmaster,), reason_line + base))
            outcomes: list[tuple[str, str, str]] = []
            for job_recipients, prepend in jobs:
                job = DeliveryJob(
                    key=row.key if prepend is base else f"{row.key}-pm",
                    path=path,
                    sender=row.envelope_from or "",
                    recipients=job_recipients,
                    prepend=prepend,
                    skip=skip,
                )
                async with self._delivery_slots():
                    results = await self.target.deliver(job)
                outcomes += [(r.recipient, r.status, r.reason) for r in results.values()]
            self.ledger.record_delivery(ledger_id, outcomes=outcomes, final_state=None)
            accepted_now += [r for r, status, _ in outcomes if status == "accepted"]
            newly_refused = [r for r, status, _ in outcomes if status == "permanent"]
            if not (newly_refused and postmaster and postmaster not in recipients):
                break
        states = self.ledger.recipient_states(ledger_id)
        waiting = [states[r] for r in recipients if states[r].state in ("pending", "temporary")]
        failed = [states[r] for r in recipients if states[r].state == "permanent"]
        rescued = (
            bool(postmaster)
            and states.get(postmaster) is not None
            and (states[postmaster].state == "accepted")
        )
        self._count(summary, accepted_now)
        if waiting:
            reason = waiting[0].reason or "The office mail server asked to try again later."
            self.ledger.record_delivery(ledger_id, outcomes=(), final_state=None, error=reason)
            summary.deferred += 1
            self.emit(MessageDeferred(mailbox.name, ledger_id, reason))
            return SPOOLED
        if failed and not rescued:
            reason = "; ".join(s.reason or s.address for s in failed)
            return self._finish(mailbox, row, summary, QUARANTINED, outcomes=(), error=reason)
        note = None
        if failed:
            note = "Sent to the postmaster: " + "; ".join(s.reason or s.address for s in failed)
        return self._finish(
            mailbox,
            row,
            summary,
            DELIVERED,
            outcomes=(),
            error=note,
            delivered=[*accepted_before, *accepted_now],
        )

    @staticmethod
    def _count(summary: MailboxSummary, accepted: Sequence[str]) -> None:
        for r in accepted:
            summary.per_recipient[r] = summary.per_recipient.get(r, 0) + 1

    def _finish(
        self,
        mailbox: MailboxConfig,
        row: Row,
        summary: MailboxSummary,
        state: str,
        *,
        outcomes: Sequence[tuple[str, str, str]],
        error: str | None,
        delivered: Sequence[str] = (),
    ) -> str:
        self.ledger.record_delivery(row.id, outcomes=outcomes, final_state=state, error=error)
        if state == QUARANTINED:
            summary.quarantined += 1
            self.emit(MessageQuarantined(mailbox.name, row.id, error or ""))
            return state
        self.spool.remove(row.id)
        summary.delivered += 1
        self.emit(
            MessageDelivered(
                mailbox.name,
                row.id,
                tuple(delivered),
                sender=row.sender or "",
                subject=row.subject or "",
            )
        )
        return state

    def _without_duplicates(
        self,
        mailbox: MailboxConfig,
        decision: RouteDecision,
        ledger_id: int,
        head: bytes,
        recipients: list[str],
    ) -> tuple[list[str], list[str]]:
        """Drop recipients who already got this very message (ISPs that store one copy each).

        Only for global mailboxes routed by To/Cc: with an envelope header each
        copy names its own recipient and is delivered to that one alone.
        """
        identity = self._copy_identity(
            mailbox,
            decision,
            head,
            lambda offset: self.spool.body_sha256(ledger_id, offset=offset),
        )
        if identity is None:
            return recipients, []
        mid, body = identity
        since = self._clock() - DUPLICATE_WINDOW
        seen = self.ledger.copies_seen(
            message_id=mid, body_sha256=body, since=since, exclude=ledger_id
        )
        self.ledger.record_copies(
            ledger_id, message_id=mid, body_sha256=body, recipients=recipients
        )
        keep = [r for r in recipients if r not in seen]
        return keep, [r for r in recipients if r in seen]

    @staticmethod
    def _copy_identity(
        mailbox: MailboxConfig,
        decision: RouteDecision,
        head: bytes,
        body_sha256: Callable[[int], str],
    ) -> tuple[str, str] | None:
        """(Message-ID, SHA-256 of the body) where copies are tracked, else None."""
        if mailbox.kind != "global" or decision.envelope_header is not None:
            return None
        mid = message_id(head)
        if not mid:
            return None
        return mid, body_sha256(split_header_block(head)[1])

    @staticmethod
    def _prepend(decision: RouteDecision, head: bytes) -> tuple[bytes, int]:
        """What goes before the message, and how much of its start it replaces."""
        if decision.new_header_block is None:
            return decision.trace_headers, 0
        return decision.trace_headers + decision.new_header_block, split_header_block(head)[1]

    # -- mail that arrives by SMTP (ATRN) --------------------------------------

    def spool_inbound(
        self,
        *,
        source: str,
        data: bytes,
        envelope_from: str,
        recipients: Sequence[str],
        route_note: str,
    ) -> int:
        """Make a message received over SMTP durable and routed; returns its ledger id.

        Call this *before* acknowledging the DATA command: once it returns, the
        message is in the spool (fsynced) and the ledger (committed), so a crash
        afterwards loses nothing. ``recipients`` are the final local recipients
        (the envelope recipients the caller accepted); ``route_note`` says in
        words why. Deliver later with :meth:`deliver_pending` for a mailbox
        whose ``name`` is ``source``.
        """
        uid = f"{int(self._clock())}-{pysecrets.token_hex(8)}"
        ledger_id = self.ledger.add_listed(source, [(uid, len(data))])[uid]
        writer = self.spool.writer(ledger_id)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        spooled = writer.commit()
        meta = metamod.extract(split_header_block(spooled.head)[0])
        meta["envelope_from"] = envelope_from
        key = f"{int(self._clock())}.pb{ledger_id}_{pysecrets.token_hex(4)}"
        self.ledger.mark_spooled(
            ledger_id, key=key, size=spooled.size, sha256=spooled.sha256, meta=meta
        )
        self.ledger.set_route(
            ledger_id, recipients=list(dict.fromkeys(recipients)), route=route_note
        )
        self.ledger.mark_server(ids=[ledger_id], server=REMOVED)
        return ledger_id

    # -- quarantine ----------------------------------------------------------

    async def retry_quarantined(
        self, ledger_id: int, *, recipients: Sequence[str] | None = None
    ) -> MailboxSummary:
        """Deliver a quarantined message again (optionally to other recipients)."""
        row = self.ledger.get(ledger_id)
        if row is None or row.state != QUARANTINED:
            raise PostbridgeError(f"Message {ledger_id} is not in quarantine.")
        mailbox = next((m for m in self.config.mailboxes if m.name == row.source), None)
        if mailbox is None:
            if not recipients:
                raise PostbridgeError(
                    f"Message {ledger_id} came from mailbox “{row.source}”, which is no longer "
                    "configured; deliver it to an explicit recipient instead."
                )
            mailbox = MailboxConfig(
                name=row.source,
                kind="user",
                host="",
                port=0,
                security="none",
                username="",
                recipient=recipients[0],
            )
        self.ledger.requeue(ledger_id, recipients=recipients)
        summary = MailboxSummary(mailbox=row.source)
        await self._deliver(mailbox, ledger_id, summary)
        return summary
