"""The one interface every delivery target implements.

The poll cycle hands a target a :class:`DeliveryJob` (a spooled message and its
envelope) and gets back one :class:`RecipientResult` per recipient. Results are
per recipient because that is how mail servers answer (SMTP ``RCPT``, LMTP's
per-recipient replies after ``DATA``, one Maildir folder per user), and because
the ledger must know exactly who has the message: a recipient that was accepted
is never delivered to again, one that failed temporarily is retried next cycle,
one that failed permanently goes to the postmaster/quarantine.

Failures of the connection (server down, line dropped, disk full) are *results*
("temporary" for every recipient), not exceptions, so the cycle has one path for
them. Only problems a person must fix before anything can work (an untrusted
certificate, a wrong password, a refused plaintext login) are raised, as the
matching :class:`~postbridge.engine.errors.PostbridgeError`.
"""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

Status = Literal["accepted", "temporary", "permanent"]

# Job keys become Maildir file names and log words: keep them boring.
_KEY_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class DeliveryJob:
    """One spooled message and its envelope, ready to hand to a target.

    ``key`` is stable across retries: it is what makes a Maildir delivery that
    crashed between the rename and the ledger commit idempotent. No key may be
    another key followed by a dot and more (Maildir matches ``<key>.*``).

    What is delivered is ``prepend`` followed by the message from byte
    ``skip`` on: ``skip`` leaves out a header block that ``prepend`` replaces.
    The message is the spool file at ``path``, or ``data`` when the poll cycle
    still holds a small message in memory (it then never touched the spool).
    """

    key: str
    path: Path | None
    sender: str
    recipients: tuple[str, ...]
    prepend: bytes = b""
    skip: int = 0
    data: bytes | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("a delivery job needs exactly one of path and data")
        if not _KEY_RE.fullmatch(self.key) or len(self.key) > 128:
            raise ValueError(f"delivery key must match [A-Za-z0-9._-]+: {self.key!r}")
        if self.prepend and not self.prepend.endswith(b"\r\n"):
            raise ValueError("prepend must be complete CRLF-terminated header lines")
        if self.skip < 0:
            raise ValueError("skip must not be negative")

    @property
    def where(self) -> str:
        """The message's place, for error words."""
        return str(self.path) if self.path is not None else "(held in memory)"

    def open(self) -> BinaryIO:
        """The message as a binary file positioned at 0 (OSError if the spool file is gone)."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return open(self.path, "rb")


@dataclass(frozen=True)
class RecipientResult:
    """What happened to one recipient; ``reason`` is written for the user."""

    recipient: str
    status: Status
    reason: str


class DeliveryTarget(ABC):
    """Where messages end up: Maildir folders, an SMTP or an LMTP server."""

    description: str

    @abstractmethod
    async def deliver(self, job: DeliveryJob) -> dict[str, RecipientResult]:
        """Deliver ``job`` to each of its recipients; one entry per distinct recipient.

        Never raises for connection or storage failures (they come back as
        "temporary" results); may raise TLSError, AuthError or
        InsecureLoginRefused when nothing will work until the user acts.
        """

    #: True when delivering a job again after a crash is recognised and not
    #: repeated (Maildir names files by the job's key), so the poll cycle may
    #: record a batch's results together after :meth:`deliver_many`. False for
    #: servers: there each acceptance is recorded as soon as it comes.
    idempotent: bool = False

    #: How many :meth:`deliver` calls may run at once (the target keeps them apart).
    parallel: int = 1

    async def deliver_many(self, jobs: Sequence[DeliveryJob]) -> list[dict[str, RecipientResult]]:
        """Deliver several jobs, in order; by default one after another."""
        return [await self.deliver(job) for job in jobs]

    @abstractmethod
    async def check(self) -> str:
        """Try the target without delivering; return words, raise PostbridgeError."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the target keeps open (a server connection)."""


def unique(recipients: Iterable[str]) -> list[str]:
    """The recipients in order, each once (LMTP would deliver a duplicate twice)."""
    return list(dict.fromkeys(recipients))


def all_with(recipients: Iterable[str], status: Status, reason: str) -> dict[str, RecipientResult]:
    """The same result for every recipient (connection-level outcomes)."""
    return {r: RecipientResult(r, status, reason) for r in unique(recipients)}
