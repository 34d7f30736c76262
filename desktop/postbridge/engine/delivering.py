"""Delivering what the ledger holds, one message at a time; mail that arrives by ATRN; the
quarantine.

The per-message half of a :class:`~postbridge.engine.cycle.Collector` (which inherits
it): a message spooled by an earlier cycle (a 4xx, a crash), one that the batch path
(batch.py) could not deliver completely at once, mail that an ISP sent by ATRN, and a
quarantined message delivered again on request. Each goes through the same steps: route,
drop copies already delivered, deliver, then record every outcome in the ledger
before the next step that depends on it.
"""

from __future__ import annotations

import asyncio
import secrets as pysecrets
from collections.abc import Callable, Sequence
from typing import Any

from postbridge.engine import meta as metamod
from postbridge.engine.config import Config, MailboxConfig
from postbridge.engine.delivery.base import DeliveryJob, DeliveryTarget
from postbridge.engine.errors import Cancelled, PostbridgeError
from postbridge.engine.events import (
    EventSink,
    MailboxSummary,
    MessageDeferred,
    MessageDelivered,
    MessageQuarantined,
)
from postbridge.engine.ledger import (
    DELIVERED,
    LISTED,
    QUARANTINED,
    REMOVED,
    SPOOLED,
    Ledger,
    Row,
)
from postbridge.engine.paths import DataPaths
from postbridge.engine.routing.recipients import message_id
from postbridge.engine.routing.router import (
    REASON_HEADER,
    RouteDecision,
    header_line,
    route,
    split_header_block,
)
from postbridge.engine.secrets import SecretStore
from postbridge.engine.spool import Spool

DAY = 86400.0
# Copies of one message (same Message-ID and body) to the same recipient within this
# window are delivered once; ISPs store one copy per recipient in a global mailbox.
DUPLICATE_WINDOW = 7 * DAY


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


DUPLICATE_REASON = "an identical copy (same Message-ID and body) was already delivered"


class PerMessageDelivery:
    """State shared by the whole collector, and the per-message delivery path."""

    config: Config
    secrets: SecretStore
    emit: EventSink
    paths: DataPaths
    ledger: Ledger
    spool: Spool
    stop_requested: bool
    _target: DeliveryTarget | None
    _clock: Callable[[], float]
    _slots: asyncio.Semaphore | None

    @property
    def target(self) -> DeliveryTarget:
        if self._target is None:
            self._target = make_target(self.config, self.secrets)
        return self._target

    def request_stop(self) -> None:
        """Stop after the messages being delivered now (safe from the loop's thread)."""
        self.stop_requested = True

    def _check_stop(self) -> None:
        if self.stop_requested:
            raise Cancelled("Collection was stopped; the rest of the mail stays at the ISP.")

    def _delivery_slots(self) -> asyncio.Semaphore:
        """How many deliveries may be with the target at once (one for Maildir)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(1, self.target.parallel))
        return self._slots

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
