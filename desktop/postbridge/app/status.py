"""What the tray says: cycle results in words, notification rules, the tooltip.

Plain Python on purpose (no Qt, no I/O): the rules that decide *whether* to
tell the user something are the part most worth testing, and the part most
easily got wrong (a notification every 15 minutes for the same wrong password
teaches people to ignore them). The tray and notifier only display what these
functions return.

Rules (DESIGN.md, "The Qt shell"):

* after a cycle that delivered mail: one notification, "9 held messages
  delivered — alice 5, bob 4";
* an error that needs the user (wrong password, certificate changed, mail
  refused): notified once when it appears or changes, and once when it clears;
* a transient error (server down, line dropped): never notified, only the icon
  and tooltip change.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from postbridge.engine.events import CycleFinished, MailboxSummary, SignalSummary

APP_TITLE = "Postbridge"
MAX_NAMED_RECIPIENTS = 5


class AppState(StrEnum):
    """The four faces of the tray icon."""

    IDLE = "idle"
    POLLING = "polling"
    PAUSED = "paused"
    ERROR = "error"


@dataclass(frozen=True)
class Notification:
    title: str
    text: str
    is_error: bool = False


def recipient_labels(addresses: Iterable[str]) -> dict[str, str]:
    """Short names for recipients: the local part, or the whole address when that is ambiguous."""
    addresses = list(dict.fromkeys(a.lower() for a in addresses))
    by_local: dict[str, list[str]] = {}
    for address in addresses:
        by_local.setdefault(address.split("@", 1)[0], []).append(address)
    labels: dict[str, str] = {}
    for local, group in by_local.items():
        for address in group:
            labels[address] = local if len(group) == 1 else address
    return labels


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def delivered_text(summaries: Iterable[MailboxSummary]) -> str | None:
    """The one notification line for what a cycle delivered, or None when it delivered nothing."""
    summaries = list(summaries)
    total = sum(s.delivered for s in summaries)
    if total == 0:
        return None
    counts: dict[str, int] = {}
    for summary in summaries:
        for address, n in summary.per_recipient.items():
            counts[address.lower()] = counts.get(address.lower(), 0) + n
    head = _plural(total, "held message", "held messages") + " delivered"
    if not counts:
        return head
    labels = recipient_labels(counts)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], labels[item[0]]))
    if len(ranked) == 1:
        return f"{head} to {labels[ranked[0][0]]}"
    parts = [f"{labels[a]} {n:,}" for a, n in ranked[:MAX_NAMED_RECIPIENTS]]
    rest = ranked[MAX_NAMED_RECIPIENTS:]
    if rest:
        parts.append(f"{len(rest)} more {sum(n for _, n in rest):,}")
    return f"{head} — " + ", ".join(parts)


def result_text(finished: CycleFinished) -> str:
    """A short account of one cycle for the tooltip and the status line."""
    summaries = finished.summaries
    if not summaries:
        return "no mailboxes are set up"
    failed = [s for s in summaries if s.error]
    if failed and len(failed) == len(summaries) and not any(s.delivered for s in summaries):
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return f"{first.mailbox}: {first.error}{more}"
    delivered = sum(s.delivered for s in summaries)
    parts = [f"{delivered:,} delivered" if delivered else "no new mail"]
    quarantined = sum(s.quarantined for s in summaries)
    if quarantined:
        parts.append(f"{quarantined:,} in quarantine")
    deferred = sum(s.deferred for s in summaries)
    if deferred:
        parts.append(f"{deferred:,} waiting for a retry")
    if len(failed) == 1:
        parts.append(f"{failed[0].mailbox} failed")
    elif failed:
        parts.append(f"{len(failed)} failed")
    return ", ".join(parts)


def signal_summary(signal: SignalSummary) -> MailboxSummary:
    """An online signal's outcome in the shape the cycle's rules read ("ATRN signal").

    What ATRN brought in counts like any mailbox's delivered mail; a failed signal is an
    error like a mailbox's, notified once when it needs the user.
    """
    d = signal.delivery
    return MailboxSummary(
        mailbox=f"{signal.kind.upper()} signal",
        downloaded=d.downloaded,
        delivered=d.delivered,
        quarantined=d.quarantined,
        deferred=d.deferred,
        error=signal.error or d.error,
        error_transient=signal.error_transient if signal.error else d.error_transient,
        error_needs_user=signal.error_needs_user if signal.error else d.error_needs_user,
        per_recipient=dict(d.per_recipient),
    )


def has_error(finished: CycleFinished) -> bool:
    return any(s.error for s in finished.summaries)


@dataclass
class NotificationPolicy:
    """Decides which cycle outcomes become notifications, remembering what was already said."""

    _needs_user: dict[str, str] = field(default_factory=dict)  # mailbox -> error announced
    _config_problem: str | None = None
    _notices: set[str] = field(default_factory=set)

    def after_cycle(self, finished: CycleFinished) -> list[Notification]:
        out: list[Notification] = []
        text = delivered_text(finished.summaries)
        quarantined = sum(s.quarantined for s in finished.summaries)
        if quarantined:
            note = (
                _plural(quarantined, "message", "messages")
                + (" is" if quarantined == 1 else " are")
                + " in quarantine (see Activity)."
            )
            text = f"{text}.\n{note}" if text else note
        if text:
            out.append(Notification(APP_TITLE, text))
        self._config_problem = None
        out.extend(self._errors(finished.summaries))
        return out

    def _errors(self, summaries: Iterable[MailboxSummary]) -> list[Notification]:
        out: list[Notification] = []
        for s in summaries:
            known = self._needs_user.get(s.mailbox)
            if s.error and s.error_needs_user:
                if known != s.error:
                    self._needs_user[s.mailbox] = s.error
                    out.append(Notification(f"{APP_TITLE}: {s.mailbox}", s.error, is_error=True))
            elif s.error is None and known is not None:
                del self._needs_user[s.mailbox]
                out.append(
                    Notification(
                        f"{APP_TITLE}: {s.mailbox}", "This mailbox is collecting mail again."
                    )
                )
            # transient errors: icon and tooltip only; a known needs-user error stays known
        return out

    def config_problem(self, text: str) -> list[Notification]:
        """A configuration that cannot be loaded stops all collection: say so, once."""
        if text == self._config_problem:
            return []
        self._config_problem = text
        return [Notification(APP_TITLE, text, is_error=True)]

    def notice(self, mailbox: str, text: str) -> list[Notification]:
        """Engine notices (a risky server setting): once per session each."""
        key = f"{mailbox}\0{text}"
        if key in self._notices:
            return []
        self._notices.add(key)
        return [Notification(f"{APP_TITLE}: {mailbox}", text)]


def clock_text(ts: float, *, now: float | None = None) -> str:
    """``14:05`` today, ``Mon 14:05`` this week, else ``2024-03-01 14:05``."""
    now = time.time() if now is None else now
    when, today = time.localtime(ts), time.localtime(now)
    if when[:3] == today[:3]:
        return time.strftime("%H:%M", when)
    if abs(now - ts) < 6 * 86400:
        return time.strftime("%a %H:%M", when)
    return time.strftime("%Y-%m-%d %H:%M", when)


STATE_WORDS: Mapping[AppState, str] = {
    AppState.IDLE: "waiting for the next poll",
    AppState.POLLING: "collecting mail",
    AppState.PAUSED: "paused",
    AppState.ERROR: "there is a problem",
}


def tooltip(
    *,
    state: AppState,
    last_poll: float | None,
    last_result: str | None,
    next_poll: float | None,
    progress: str | None = None,
    now: float | None = None,
) -> str:
    """Three short lines; Windows cuts tray tooltips at 127 characters, so each line is capped."""
    first = (
        f"{APP_TITLE}: {progress if state is AppState.POLLING and progress else STATE_WORDS[state]}"
    )
    lines = [first]
    if last_poll is not None:
        lines.append(
            f"Last poll {clock_text(last_poll, now=now)}: {last_result or ''}".rstrip(": ")
        )
    else:
        lines.append("Not polled yet")
    if state is AppState.PAUSED:
        lines.append("Polling is paused")
    elif next_poll is not None and state is not AppState.POLLING:
        lines.append(f"Next poll {clock_text(next_poll, now=now)}")
    return "\n".join(_cap(line, 60) for line in lines)


def _cap(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"
