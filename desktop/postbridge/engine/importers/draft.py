"""What an importer hands the settings dialog: a draft configuration and its notes.

The draft is deliberately not a :class:`~postbridge.engine.config.Config`: it
may have gaps (a password that was not in the old file, a local name without
a domain) that only the user can fill, and the dialog validates it field by
field. Every gap and every option that was not taken over is an
:class:`ImportNote` with its line, so nothing from the old setup disappears
without the user being told.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from postbridge.engine.config import DeliveryConfig, MailboxConfig, SignalConfig
from postbridge.engine.errors import PostbridgeError

NoteKind = Literal["skipped", "changed", "todo"]


class ImportFileError(PostbridgeError):
    """The file to import could not be read at all (missing, unreadable)."""


@dataclass(frozen=True)
class ImportNote:
    """One thing the user should know: left out, changed on the way, or still to fill in."""

    line: int
    kind: NoteKind
    text: str

    def describe(self) -> str:
        return f"Line {self.line}: {self.text}" if self.line else self.text


@dataclass
class ImportDraft:
    mailboxes: list[MailboxConfig] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)  # keyring account -> password
    delivery: DeliveryConfig | None = None
    signal: SignalConfig | None = None
    interval_minutes: int | None = None
    notes: list[ImportNote] = field(default_factory=list)

    def note(self, line: int, kind: NoteKind, text: str) -> None:
        self.notes.append(ImportNote(line, kind, text))

    def notes_of(self, kind: NoteKind) -> list[ImportNote]:
        return [n for n in self.notes if n.kind == kind]

    def summary(self) -> str:
        """A short report: what came over, then each group of notes."""
        parts = [f"Imported {len(self.mailboxes)} mailbox(es)"]
        if self.signal is not None:
            parts.append(f"the online signal ({self.signal.kind.upper()})")
        if self.delivery is not None:
            parts.append(f"delivery to {self.delivery.host}")
        lines = [", ".join(parts) + "."]
        headings: dict[NoteKind, str] = {
            "todo": "Still to fill in:",
            "changed": "Imported differently:",
            "skipped": "Not imported:",
        }
        for kind, heading in headings.items():
            notes = sorted(self.notes_of(kind), key=lambda n: n.line)
            if notes:
                lines.append(heading)
                lines.extend(f"  • {n.describe()}" for n in notes)
        return "\n".join(lines)
