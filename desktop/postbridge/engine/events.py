"""Progress reports from the engine, as plain dataclasses.

The engine never talks to a user interface directly: the poll cycle calls a
callback with these events. The CLI prints them, the Qt worker turns them into
signals. They are immutable and carry only plain data, so they can cross
threads safely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    """Base class of all engine events."""


@dataclass(frozen=True)
class CycleStarted(Event):
    mailboxes: tuple[str, ...]


@dataclass(frozen=True)
class MailboxStarted(Event):
    mailbox: str


@dataclass(frozen=True)
class MessagesListed(Event):
    mailbox: str
    on_server: int
    new: int


@dataclass(frozen=True)
class MessageSpooled(Event):
    mailbox: str
    ledger_id: int
    size: int


@dataclass(frozen=True)
class MessageDelivered(Event):
    mailbox: str
    ledger_id: int
    recipients: tuple[str, ...]
    sender: str = ""
    subject: str = ""


@dataclass(frozen=True)
class MessageDeferred(Event):
    """Delivery failed temporarily; the message stays spooled for the next cycle."""

    mailbox: str
    ledger_id: int
    reason: str


@dataclass(frozen=True)
class MessageQuarantined(Event):
    mailbox: str
    ledger_id: int
    reason: str


@dataclass(frozen=True)
class Notice(Event):
    """Something the user should know that is not a failure (e.g. a risky server setting)."""

    mailbox: str
    text: str


@dataclass
class MailboxSummary:
    """What one mailbox did in one cycle; the CLI prints it, the tray notifies from it."""

    mailbox: str
    downloaded: int = 0
    delivered: int = 0
    kept: int = 0
    removed: int = 0
    quarantined: int = 0
    deferred: int = 0
    error: str | None = None
    error_transient: bool = False
    error_needs_user: bool = False
    per_recipient: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class MailboxFinished(Event):
    summary: MailboxSummary


@dataclass(frozen=True)
class CycleFinished(Event):
    summaries: tuple[MailboxSummary, ...]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.summaries)


EventSink = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """An event sink that discards everything (the default)."""
