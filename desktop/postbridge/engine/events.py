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


# -- the online signal (ETRN / ATRN) ---------------------------------------------------


@dataclass
class SignalSummary:
    """What one online signal did; the CLI prints ``words``, the tray notifies from it.

    ``domains`` holds the ISP's answer per domain in words (ETRN answers each
    domain on its own); ``reply`` the ISP's answer to ATRN. ``arrived`` counts
    messages received over ATRN and stored, ``refused`` the recipients outside
    the requested domains that were turned away; ``delivery`` is what became
    of the arrivals (source ``signal``). ``watched`` counts messages seen
    arriving in the Maildir target after ETRN (None when it was not watched).
    """

    kind: str
    server: str
    words: str = ""
    domains: dict[str, str] = field(default_factory=dict)
    reply: str = ""
    no_mail: bool = False
    arrived: int = 0
    refused: tuple[str, ...] = ()
    watched: int | None = None
    delivery: MailboxSummary = field(default_factory=lambda: MailboxSummary(mailbox="signal"))
    error: str | None = None
    error_transient: bool = False
    error_needs_user: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class SignalStarted(Event):
    kind: str
    server: str


@dataclass(frozen=True)
class SignalFinished(Event):
    summary: SignalSummary

    @property
    def ok(self) -> bool:
        return self.summary.ok
