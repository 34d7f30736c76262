"""The poll cycle's fast path: a batch of freshly downloaded messages routed, delivered
and recorded together (see :meth:`BatchDelivery._deliver_window`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from postbridge.engine import meta as metamod
from postbridge.engine.config import MailboxConfig
from postbridge.engine.delivering import DUPLICATE_REASON, DUPLICATE_WINDOW, PerMessageDelivery
from postbridge.engine.delivery.base import DeliveryJob, RecipientResult
from postbridge.engine.events import (
    MailboxSummary,
    MessageDelivered,
    MessageQuarantined,
    MessageSpooled,
)
from postbridge.engine.ledger import (
    DELIVERED,
    LISTED,
    QUARANTINED,
    SPOOLED,
    Settlement,
)
from postbridge.engine.routing.router import (
    RouteDecision,
)
from postbridge.engine.spool import SpoolWriter, file_sha256


@dataclass
class Arrival:
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
class Plan:
    """What the fast path decided for one arrival, and (after delivery) its state."""

    arrival: Arrival
    head: bytes
    meta: dict[str, str | None]
    decision: RouteDecision
    recipients: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    copies: tuple[str, str, tuple[str, ...]] | None = None
    job: DeliveryJob | None = None
    state: str = LISTED
    error: str | None = None


def take_over(arrivals: list[Arrival]) -> None:
    """Take each download from its writer: the bytes, or the (not yet durable) file."""
    for arrival in arrivals:
        writer = arrival.writer
        if writer.in_memory:
            arrival.data = writer.content()
        else:
            arrival.path = writer.finish(durable=False).path
        arrival.sha256 = writer.sha256


def unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


@dataclass
class SessionWork:
    """What one POP3 session is working on."""

    mailbox: MailboxConfig
    summary: MailboxSummary
    ids: dict[int, int]  # message number -> ledger id
    deletable: list[int]  # message numbers safe to DELE
    # Called once the downloads of a session that another will follow near their end.
    connect_ahead: Callable[[], None] | None = None
    # Message numbers (this session's) that will still be new in the next session.
    next_new: list[int] = field(default_factory=list)


class BatchDelivery(PerMessageDelivery):
    """What a session downloaded, delivered a batch at a time (inherited by Collector)."""

    # -- delivery of what a session downloaded ------------------------------

    async def _deliver_window(self, session: SessionWork, arrivals: list[Arrival]) -> None:
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
            await asyncio.to_thread(take_over, arrivals)
            seen: dict[tuple[str, str], set[str]] = {}
            plans = [self._plan(session, arrival, seen) for arrival in arrivals]
            done: list[tuple[Plan, dict[str, RecipientResult]]] = []
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
        session: SessionWork,
        plans: list[Plan],
        done: list[tuple[Plan, dict[str, RecipientResult]]],
        settled: set[int],
    ) -> None:
        """Deliver to a server, ``target.parallel`` messages at a time, each recorded at once.

        The window between a server's 250 and the ledger is that one transaction.
        A delivery that fails for good (a wrong password, say) does not cut short
        the others in flight: their server may have the message already, so
        their answers are awaited and recorded before the failure is raised.
        """

        async def one(plan: Plan) -> None:
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

    def _plan(
        self, session: SessionWork, arrival: Arrival, seen: dict[tuple[str, str], set[str]]
    ) -> Plan:
        """Route one arrival and make its delivery job (CPU only, no I/O but the ledger's)."""
        mailbox, summary = session.mailbox, session.summary
        head = arrival.writer.head
        meta = metamod.extract(head)  # reads the header block only; parsed once, cached
        summary.downloaded += 1
        self.emit(MessageSpooled(mailbox.name, arrival.ledger_id, arrival.writer.size))
        decision = self._decide(mailbox, head)
        plan = Plan(arrival, head, meta, decision)
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
        session: SessionWork,
        done: list[tuple[Plan, dict[str, RecipientResult]]],
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
                plan.error = f"Not delivered again: {DUPLICATE_REASON}."
                outcomes += [(r, "duplicate", DUPLICATE_REASON) for r in plan.duplicates]
            elif all(r.status == "accepted" for r in outcome.values()):
                plan.state = DELIVERED
                outcomes += [(r, "duplicate", DUPLICATE_REASON) for r in plan.duplicates]
            else:
                plan.state = SPOOLED
                outcomes += [(r, "duplicate", DUPLICATE_REASON) for r in plan.duplicates]
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
            await asyncio.to_thread(unlink_all, [p for p in gone if p is not None])
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

    def _store(self, keep: list[Arrival], entries: list[Settlement], durable: bool) -> None:
        """Make the spool copies of messages that stay durable, then record (worker thread)."""
        for arrival in keep:
            if arrival.data is not None:
                arrival.path = self.spool.save(arrival.ledger_id, arrival.data)
            elif arrival.path is not None:
                self.spool.make_durable(arrival.path)
        self.ledger.settle(entries, durable=durable)

    def _note_done(self, session: SessionWork, num: int, state: str) -> None:
        """A message of this session delivered or quarantined just now: DELE it, or keep it."""
        if state not in (DELIVERED, QUARANTINED):
            return
        # Just delivered: "leave a copy on the server" for N > 0 days keeps it for now.
        if session.mailbox.leave_on_server_days == 0:
            session.deletable.append(num)
        else:
            session.summary.kept += 1
