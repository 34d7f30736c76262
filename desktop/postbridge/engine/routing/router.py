"""Apply a mailbox's routing rules to a message's headers: who gets it, and why.

Pure: a :class:`~postbridge.engine.config.MailboxConfig` and the first bytes of
a message in, a :class:`RouteDecision` out. No I/O, so every rule is tested
with byte fixtures, and ``postbridge poll --dry-run`` can show the same
decision the real cycle would make.

The rules (see "Mailbox kinds" in DESIGN.md):

* **User mailbox**: everything goes to ``mailbox.recipient``; a trace header
  records the ISP mailbox it came from.
* **Global mailbox**: recipients come from the ISP's envelope header when there
  is a trustworthy one (this is what recovers Bcc recipients), otherwise from
  To, Cc, Resent-To and Resent-Cc.

  *Which instance is trusted.* The ISP prepends its envelope header when it
  stores the message (RFC 5321 §4.4: trace information goes on top), so only
  the topmost instance is the ISP's; copies further down are earlier delivery
  hops (an alias expanded on the way, a message forwarded from elsewhere) or
  were written by the sender, and are never recipients. One refinement: an
  instance naming only the mailbox's own address is skipped, and the next
  instance trusted instead, as long as no ``Received`` field lies between them
  (Postfix's local delivery to ``company@isp`` after expanding the alias
  ``bob@example.com`` writes both Delivered-To lines, the mailbox's on top).
  For ``Received``, only the ``for`` clause of the topmost Received counts.

  *"auto".* Only the top of the block is considered: the fields above the
  topmost ``Received`` field (all fields, if there is none), plus that
  Received's ``for`` clause. The first envelope header found there, top down,
  that names a local address other than the mailbox's own is used; the
  Received ``for`` clause is tried last. An envelope header that only appears
  lower down is not trusted in auto mode (a sender could have written it); set
  ``envelope_header`` explicitly for an ISP that buries its header.

  *When an envelope header is used.* Configured or detected, it is used only
  when its trusted instance names at least one local address that is not the
  mailbox's own (``Delivered-To: company@isp.example`` says nothing about the
  person). Otherwise routing falls back to To/Cc, and the decision says why.

  *Addresses to recipients.* Only addresses in ``local_domains`` route
  (``sub.example.com`` is not ``example.com``); an address outside them is never
  a recipient, so Postbridge cannot relay. The mailbox's own address (the
  username when it is an address; with a plain login name, that name at any
  non-local domain) is never a recipient. A local address goes through the
  address map: an exact entry wins, then a ``*@domain`` wildcard, else the
  address itself. Map targets are final: they are not looked up in the map
  again (no chains, no loops), and they may lie outside the local domains,
  because the administrator wrote them. Each final recipient gets the message
  once (compared case-insensitively; recipients are lower-cased, like the
  config, so one person never gets two Maildir folders).

* Nothing routable: the postmaster gets it with the reason in a header, or,
  with no postmaster configured, it is quarantined. Never dropped.
* Loop guard: every delivery adds an ``X-Postbridge-Trace`` header; a message
  that already has more than ``loop_limit`` of them is quarantined.
* The ISP's ``Delivered-To`` lines are renamed ``X-Postbridge-Delivered-To``
  (value, folding and order kept): Postfix bounces a message as a mail loop
  when a Delivered-To names the recipient it is delivering to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from postbridge.engine.config import MailboxConfig
from postbridge.engine.routing.decision import (
    DUPLICATE,
    IGNORED_HOP,
    MAILBOX_SOURCE,
    NOT_LOCAL,
    OWN_ADDRESS,
    ROUTED,
    RULE_SELF,
    RULE_USER_MAILBOX,
    Candidate,
    RouteDecision,
    join_words,
)
from postbridge.engine.routing.recipients import (
    ADDRESS_HEADERS,
    ENVELOPE_HEADERS,
    Field,
    HeaderBlock,
    canonical_name,
    domain_of,
    parse_addresses,
    parse_header_block,
    received_for,
    split_header_block,
)

log = logging.getLogger("postbridge.routing")

TRACE_HEADER = "X-Postbridge-Trace"
ORIGINAL_TO_HEADER = "X-Postbridge-Original-To"
REASON_HEADER = "X-Postbridge-Reason"
RENAMED_DELIVERED_TO = b"X-Postbridge-Delivered-To"
#: Non-routed candidates kept in a decision (a spam run may name thousands).
MAX_LISTED = 100
_FOLD_AT = 78
_MAX_VALUE = 900
_NO_BCC = "Bcc recipients cannot be recovered"


@dataclass
class _Rules:
    """The mailbox's rules, prepared for lookups."""

    mailbox: MailboxConfig
    local: frozenset[str] = field(init=False)
    own: frozenset[str] = field(init=False)
    login: str = field(init=False)

    def __post_init__(self) -> None:
        username = self.mailbox.username.strip().lower()
        self.local = frozenset(d.lower() for d in self.mailbox.local_domains)
        self.own = frozenset({username} if "@" in username else ())
        self.login = "" if "@" in username else username

    def is_local(self, address: str) -> bool:
        return domain_of(address) in self.local

    def is_own(self, address: str) -> bool:
        key = address.lower()
        if key in self.own:
            return True
        local, _, domain = key.rpartition("@")
        return bool(self.login) and local == self.login and domain not in self.local

    def informative(self, addresses: Sequence[str]) -> bool:
        """Does an envelope header naming these say who the message is for?"""
        return any(self.is_local(a) and not self.is_own(a) for a in addresses)

    def classify(self, address: str, source: str) -> Candidate:
        key = address.lower()
        if self.is_own(key):
            return Candidate(address, source, OWN_ADDRESS, "", ())
        if not self.is_local(key):
            return Candidate(address, source, NOT_LOCAL, "", ())
        amap = self.mailbox.address_map
        if key in amap:
            return Candidate(address, source, ROUTED, f"map {key}", tuple(amap[key]))
        wildcard = "*@" + domain_of(key)
        if wildcard in amap:
            return Candidate(address, source, ROUTED, f"map {wildcard}", tuple(amap[wildcard]))
        return Candidate(address, source, ROUTED, RULE_SELF, (key,))


# --- reading the envelope ----------------------------------------------------------------


@dataclass(frozen=True)
class _Envelope:
    """What one envelope header says.

    ``trusted``: the addresses of the ISP's instance; ``own``: those of instances
    above it that name only the mailbox itself; ``lower``: copies further down.
    """

    name: str
    own: tuple[str, ...]
    trusted: tuple[str, ...]
    lower: tuple[str, ...]
    present: bool


def _read_envelope(fields: Sequence[Field], name: str, *, rules: _Rules) -> _Envelope:
    """What the envelope header ``name`` says; ``fields`` need only hold the Received
    fields and those named ``name`` (see :func:`_envelope_fields`), in order."""
    if name == "Received":
        received = [f for f in fields if f.key == "received"]
        found = tuple(received_for(received[0].value)) if received else ()
        return _Envelope(name, (), found, (), bool(found))
    key = name.lower()
    own: list[str] = []
    trusted: list[str] = []
    lower: list[str] = []
    present = False
    state = "before"  # "top": only the mailbox's own instances so far; "done": found or passed
    for f in fields:
        if f.key == "received":
            state = "done" if state == "top" else state
        elif f.key == key:
            present = True
            addresses = parse_addresses(f.value)
            if state == "done":
                lower.extend(addresses)
            elif all(rules.is_own(a) for a in addresses):  # also an empty one
                own.extend(addresses)
                state = "top"
            else:
                trusted.extend(addresses)
                state = "done"
    return _Envelope(name, tuple(own), tuple(trusted), tuple(lower), present)


#: Lower-case name -> canonical name, of the envelope headers and of the To/Cc kind.
_ENVELOPE_KEYS = {name.lower(): name for name in ENVELOPE_HEADERS}
_ADDRESS_KEYS = {name.lower(): name for name in ADDRESS_HEADERS}


def _envelope_fields(block: HeaderBlock) -> tuple[Field, ...]:
    """The fields :func:`_read_envelope` looks at for any of ``ENVELOPE_HEADERS``.

    Filtered once per message: auto detection reads several envelope headers,
    and each reading would otherwise walk every field of the block.
    """
    return tuple(f for f in block.fields if f.key in _ENVELOPE_KEYS)


def _choose_envelope(
    block: HeaderBlock, rules: _Rules
) -> tuple[_Envelope | None, list[_Envelope], list[str]]:
    """(the envelope header to use or None, headers examined but not used, notes)."""
    setting = rules.mailbox.envelope_header.strip()
    if setting.lower() == "none":
        note = (
            f"This mailbox is set to use no envelope header, so routing used To and Cc; {_NO_BCC}."
        )
        return None, [], [note]
    if setting.lower() != "auto":
        name = canonical_name(setting)
        env = _read_envelope(block.fields, name, rules=rules)
        if rules.informative(env.trusted):
            return env, [], []
        if not env.present:
            missing = (
                "The topmost Received header has no 'for' clause"
                if name == "Received"
                else f"The message has no {name} header"
            )
            note = f"{missing}, so routing used To and Cc; {_NO_BCC}."
        else:
            note = (
                f"The ISP's {name} header names no local address other than this mailbox's "
                f"own, so routing used To and Cc; {_NO_BCC}."
            )
        return None, [env], [note]
    fields = _envelope_fields(block)
    examined: list[_Envelope] = []
    order: list[str] = []
    # The envelope headers above the topmost Received: what the ISP's final delivery wrote.
    for f in fields:
        if f.key == "received":
            break
        name = _ENVELOPE_KEYS[f.key]
        if name not in order:
            order.append(name)
    order.append("Received")
    for name in order:
        env = _read_envelope(fields, name, rules=rules)
        if rules.informative(env.trusted):
            return env, examined, []
        if env.present:
            examined.append(env)
    notes = []
    seen = {f.key for f in fields}
    buried = [name for name in ENVELOPE_HEADERS if name not in order and name.lower() in seen]
    if buried:
        verb, subject = ("appears", "it was") if len(buried) == 1 else ("appear", "they were")
        notes.append(
            f"{join_words(buried)} {verb} only below the ISP's topmost Received line, "
            f"where a sender can write anything, so {subject} not trusted."
        )
    notes.append(
        "No envelope header at the top of the message names a local address, so routing "
        f"used To and Cc; {_NO_BCC}."
    )
    return None, examined, notes


# --- the decision ------------------------------------------------------------------------


def _header_line(name: str, value: str) -> bytes:
    """One header field, CRLF-terminated, folded at spaces (RFC 5322 §2.2.3)."""
    printable = (  # no CR/LF injection
        value if value.isprintable() else "".join(ch if ch.isprintable() else " " for ch in value)
    )
    words = " ".join(printable.split())[:_MAX_VALUE].split(" ")
    lines: list[str] = [f"{name}:"]
    for word in words:
        if len(lines[-1]) + 1 + len(word) > _FOLD_AT and lines[-1].strip():
            lines.append("")
        lines[-1] += " " + word
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


#: Public name for the cycle, which adds a reason header to a postmaster's copy.
header_line = _header_line


def _rewritten_block(block: HeaderBlock) -> tuple[bytes | None, list[str]]:
    """Rename Delivered-To lines, drop a BOM or mbox From line; None if nothing changes."""
    renamed = block.named("Delivered-To")
    if not renamed and not block.prefix:
        return None, []
    out = bytearray()
    pos = block.prefix
    for f in renamed:
        out += block.raw[pos : f.start] + RENAMED_DELIVERED_TO
        pos = f.name_end
    out += block.raw[pos:]
    notes = []
    if renamed:
        notes.append(
            "The ISP's Delivered-To lines were renamed X-Postbridge-Delivered-To, so the "
            "office mail server does not bounce the message as a mail loop."
        )
    return bytes(out), notes


def _no_route_reason(candidates: Sequence[Candidate], source: str) -> str:
    if not candidates:
        return f"it names no recipient in {source}"
    if any(c.outcome == OWN_ADDRESS for c in candidates):
        return (
            f"every address in {source} is this mailbox's own address or outside the local domains"
        )
    return f"every address in {source} is outside the local domains"


def _decision(
    *,
    recipients: tuple[str, ...] = (),
    envelope: str | None = None,
    candidates: Sequence[Candidate] = (),
    to_postmaster: bool = False,
    quarantine: str | None = None,
    block: bytes | None,
    trace: list[tuple[str, str]],
    notes: Sequence[str],
) -> RouteDecision:
    return RouteDecision(
        recipients=recipients,
        envelope_header=envelope,
        candidates=tuple(candidates),
        to_postmaster=to_postmaster,
        quarantine=quarantine,
        new_header_block=block,
        trace_headers=b"".join(_header_line(name, value) for name, value in trace),
        notes=tuple(notes),
    )


def _finish_global(
    rules: _Rules,
    *,
    candidates: list[Candidate],
    envelope: str | None,
    notes: list[str],
    trace: list[tuple[str, str]],
    block: bytes | None,
) -> RouteDecision:
    recipients: list[str] = []
    for c in candidates:
        if c.outcome == ROUTED:
            for target in c.targets:
                if target.lower() not in recipients:
                    recipients.append(target.lower())
    kept: list[Candidate] = []
    others = unlisted = 0
    for c in candidates:
        if c.outcome == ROUTED:
            kept.append(c)
        elif others < MAX_LISTED:
            kept.append(c)
            others += 1
        else:
            unlisted += 1
    if unlisted:
        notes.append(f"{unlisted} more unrouted addresses are not listed.")
    to_postmaster = False
    quarantine = None
    if not recipients:  # never dropped: the postmaster gets it, or it is quarantined
        source = f"the ISP's {envelope} header" if envelope else "To/Cc"
        reason = _no_route_reason(candidates, source)
        postmaster = rules.mailbox.postmaster.strip().lower()
        if postmaster:
            recipients, to_postmaster = [postmaster], True
            notes.insert(0, reason[0].upper() + reason[1:] + ".")
            trace.append((REASON_HEADER, f"no local recipient: {reason}"))
        else:
            quarantine = (
                f"no address routes to a local user ({reason}) and no postmaster is configured"
            )
    return _decision(
        recipients=tuple(recipients),
        envelope=envelope,
        candidates=kept,
        to_postmaster=to_postmaster,
        quarantine=quarantine,
        block=block,
        trace=trace,
        notes=notes,
    )


def _route_global(
    rules: _Rules,
    block: HeaderBlock,
    *,
    trace: list[tuple[str, str]],
    new_block: bytes | None,
    notes: list[str],
) -> RouteDecision:
    envelope, examined, env_notes = _choose_envelope(block, rules)
    candidates: list[Candidate] = []
    seen: set[str] = set()

    def add(address: str, source: str) -> None:
        c = rules.classify(address, source)
        key = address.lower()
        if key in seen:
            if c.outcome == ROUTED:
                candidates.append(Candidate(address, source, DUPLICATE, c.rule, ()))
            return
        seen.add(key)
        candidates.append(c)

    for env in examined:
        for address in (*env.own, *env.trusted):
            add(address, env.name)
    if envelope is not None:
        for address in (*envelope.own, *envelope.trusted):
            add(address, envelope.name)
        candidates.extend(Candidate(a, envelope.name, IGNORED_HOP, "", ()) for a in envelope.lower)
    else:
        for f in block.fields:
            address_name = _ADDRESS_KEYS.get(f.key)
            if address_name is not None:
                for address in parse_addresses(f.value):
                    add(address, address_name)
    return _finish_global(
        rules,
        candidates=candidates,
        envelope=envelope.name if envelope else None,
        notes=[*env_notes, *notes],
        trace=trace,
        block=new_block,
    )


def _route(mailbox: MailboxConfig, head: bytes, *, loop_limit: int) -> RouteDecision:
    block = parse_header_block(head)
    new_block, notes = _rewritten_block(block)
    trace: list[tuple[str, str]] = [(TRACE_HEADER, mailbox.name)]
    passes = len(block.named(TRACE_HEADER))
    if passes > loop_limit:
        reason = (
            f"it has already passed through Postbridge {passes} times (the limit is "
            f"{loop_limit}), so it is probably going round in a mail loop"
        )
        return _decision(quarantine=reason, block=new_block, trace=trace, notes=notes)
    rules = _Rules(mailbox)
    if mailbox.kind != "user":
        return _route_global(rules, block, trace=trace, new_block=new_block, notes=notes)
    trace.append((ORIGINAL_TO_HEADER, mailbox.username))
    recipient = mailbox.recipient.strip().lower()
    if not recipient:  # the config loader requires one; be safe all the same
        notes.insert(0, "This user mailbox has no recipient configured.")
        return _finish_global(
            rules, candidates=[], envelope=None, notes=notes, trace=trace, block=new_block
        )
    c = Candidate(mailbox.username, MAILBOX_SOURCE, ROUTED, RULE_USER_MAILBOX, (recipient,))
    return _decision(
        recipients=(recipient,), candidates=(c,), block=new_block, trace=trace, notes=notes
    )


def route(mailbox: MailboxConfig, head: bytes, *, loop_limit: int = 3) -> RouteDecision:
    """Decide where a message goes, from ``head`` (its first bytes; the body is not needed).

    Never raises: a malformed header is read as well as it can be, and should
    this code itself fail, the message is quarantined with the error as the
    reason (and the traceback logged), so it is kept for a person, not lost.
    """
    try:
        return _route(mailbox, head, loop_limit=loop_limit)
    except Exception as exc:  # a bug here must not lose the message or abort the poll
        log.exception("routing failed for a message of mailbox %s", mailbox.name)
        reason = f"Postbridge could not work out where it goes (internal error: {exc!r})"
        return _decision(
            quarantine=reason, block=None, trace=[(TRACE_HEADER, mailbox.name)], notes=()
        )


# --- suggest-envelope --------------------------------------------------------------------


@dataclass(frozen=True)
class EnvelopeSuggestion:
    """Which envelope header the ISP writes, judged from recent messages' headers."""

    header: str | None  # the value for ``envelope_header``; None: none found
    messages: int
    evidence: tuple[str, ...]

    @property
    def setting(self) -> str:
        return self.header or "none"

    def explain(self) -> str:
        if self.header:
            first = f'Use envelope_header = "{self.header}".'
        elif self.messages:
            first = f"None found: routing will use To/Cc, and {_NO_BCC}."
        else:
            first = "No messages to examine."
        return " ".join([first, *self.evidence])


def suggest_envelope(heads: Sequence[bytes], mailbox: MailboxConfig) -> EnvelopeSuggestion:
    """Which envelope header consistently names a local address that isn't the mailbox's own.

    "Consistently" means in at least half of the messages; the header with most
    such messages wins, ties going to the order of ``ENVELOPE_HEADERS``.
    """
    rules = _Rules(mailbox)
    total = len(heads)
    local = dict.fromkeys(ENVELOPE_HEADERS, 0)
    present = dict.fromkeys(ENVELOPE_HEADERS, 0)
    for head in heads:
        fields = _envelope_fields(parse_header_block(head))
        for name in ENVELOPE_HEADERS:
            env = _read_envelope(fields, name, rules=rules)
            present[name] += env.present
            local[name] += rules.informative(env.trusted)
    evidence: list[str] = []
    for name in ENVELOPE_HEADERS:
        if not present[name]:
            continue
        what = f"{name} names" if name != "Received" else "The topmost Received's for clause names"
        line = f"{what} a local address in {local[name]} of {total} messages"
        if present[name] > local[name]:
            line += (
                f"; in {present[name] - local[name]} more it names only this mailbox's own "
                "or outside addresses"
            )
        evidence.append(line + ".")
    unseen = [name for name in ENVELOPE_HEADERS if not present[name] and name != "Received"]
    if unseen and total:
        evidence.append(f"Not seen: {join_words(unseen)}.")
    best = max(ENVELOPE_HEADERS, key=lambda name: local[name])  # first of equals wins
    found = local[best] > 0 and 2 * local[best] >= total
    return EnvelopeSuggestion(best if found else None, total, tuple(evidence))


__all__ = [
    "ORIGINAL_TO_HEADER",
    "REASON_HEADER",
    "RENAMED_DELIVERED_TO",
    "TRACE_HEADER",
    "Candidate",
    "EnvelopeSuggestion",
    "RouteDecision",
    "route",
    "split_header_block",
    "suggest_envelope",
]
