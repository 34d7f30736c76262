"""Look without touching: ``poll --dry-run`` and ``suggest-envelope``.

Both log in, read only the header block of each message (``TOP n 0``), and leave
with QUIT having sent no DELE, so the ISP mailbox and the ledger are exactly as
they were. ``dry_run`` shows where each message would go and why;
``suggest_envelope`` reads recent messages' headers and says which envelope
header the ISP writes, so a global mailbox can recover Bcc recipients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postbridge.engine import meta as metamod
from postbridge.engine.config import Config, MailboxConfig
from postbridge.engine.errors import ProtocolError
from postbridge.engine.ledger import LISTED, Ledger
from postbridge.engine.paths import DataPaths
from postbridge.engine.pop3.client import Pop3Client
from postbridge.engine.routing.router import (
    EnvelopeSuggestion,
    RouteDecision,
    route,
    split_header_block,
    suggest_envelope,
)
from postbridge.engine.secrets import SecretStore

Pop3Factory = Callable[[MailboxConfig], Pop3Client]


@dataclass(frozen=True)
class PreviewItem:
    mailbox: str
    number: int
    size: int
    sender: str
    subject: str
    known: str | None  # ledger state when Postbridge has seen this message before
    decision: RouteDecision

    def describe(self) -> str:
        where = ", ".join(self.decision.recipients) or "nobody"
        if self.decision.quarantine:
            where = f"quarantine ({self.decision.quarantine})"
        status = f" [already {self.known}: would only be removed]" if self.known else ""
        return (
            f"[{self.mailbox}] #{self.number} from {self.sender or '?'} “{self.subject}”"
            f"{status}\n    -> {where}\n    {self.decision.explain()}"
        )


async def _heads(
    mailbox: MailboxConfig,
    *,
    secrets: SecretStore,
    factory: Pop3Factory,
    limit: int | None,
) -> list[tuple[int, int, str | None, bytes]]:
    """(number, size, uidl, header block) of the mailbox's messages, newest last."""
    password = secrets.require(mailbox.secret_account)
    client = factory(mailbox)
    try:
        await client.connect()
        await client.login(mailbox.username, password, method=mailbox.auth)
        if not client.capabilities.top and client.capabilities.names:
            raise ProtocolError(
                f"{mailbox.host} does not offer TOP, so Postbridge cannot read headers "
                "without downloading whole messages; preview is not available for this mailbox."
            )
        sizes = await client.list_all()
        uidls = await client.uidl_all() or {}
        numbers = sorted(sizes)
        if limit is not None:
            numbers = numbers[-limit:]
        out = []
        for number in numbers:
            head = await client.top(number, 0)
            out.append((number, sizes[number], uidls.get(number), head))
        await client.quit()
        return out
    finally:
        await client.close()


async def dry_run(
    config: Config,
    *,
    mailboxes: Sequence[str] | None = None,
    secrets: SecretStore,
    factory: Pop3Factory,
) -> list[PreviewItem]:
    selected = [config.mailbox(n) for n in mailboxes] if mailboxes else list(config.mailboxes)
    paths = DataPaths(config.data_dir)
    ledger = Ledger(paths.ledger) if paths.ledger.exists() else None
    items: list[PreviewItem] = []
    try:
        for mailbox in selected:
            heads = await _heads(mailbox, secrets=secrets, factory=factory, limit=None)
            uids = [uid for _, _, uid, _ in heads if uid]
            known = ledger.by_uid(mailbox.name, uids) if ledger else {}
            for number, size, uid, head in heads:
                meta = metamod.extract(split_header_block(head)[0])
                row = known.get(uid) if uid else None
                items.append(
                    PreviewItem(
                        mailbox=mailbox.name,
                        number=number,
                        size=size,
                        sender=meta.get("sender") or "",
                        subject=meta.get("subject") or "",
                        known=row.state if row is not None and row.state != LISTED else None,
                        decision=route(mailbox, head),
                    )
                )
    finally:
        if ledger is not None:
            ledger.close()
    return items


async def suggest(
    config: Config,
    name: str,
    *,
    secrets: SecretStore,
    factory: Pop3Factory,
    count: int = 20,
) -> EnvelopeSuggestion:
    mailbox = config.mailbox(name)
    heads = await _heads(mailbox, secrets=secrets, factory=factory, limit=count)
    return suggest_envelope([head for _, _, _, head in heads], mailbox)
