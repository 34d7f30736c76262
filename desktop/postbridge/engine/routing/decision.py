"""A routing decision as data: what was found, what was decided, and why in words.

Kept apart from the rules in router.py because the decision outlives them: the
poll cycle stores it in the ledger as JSON, and ``postbridge history`` and the
Activity window read it back months later and call :meth:`RouteDecision.explain`.
So everything explain() needs travels inside the decision; it never looks at
the (possibly since changed) configuration.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

# Candidate.outcome codes. Each reads as words in explain().
ROUTED = "routed"  # in a local domain; delivered to Candidate.targets
NOT_LOCAL = "not-local"  # outside the local domains: never a recipient (no open relay)
OWN_ADDRESS = "own-address"  # the ISP mailbox's own address: a collection point, not a person
IGNORED_HOP = "ignored-hop"  # a lower copy of the envelope header: earlier hop or forged
DUPLICATE = "duplicate"  # the same address again; its recipients already have the message

# Candidate.source for the user mailbox's single candidate.
MAILBOX_SOURCE = "mailbox"
# Candidate.rule codes ("map <key>" names the address-map entry that matched).
RULE_SELF = "self"  # a local address delivered to itself
RULE_USER_MAILBOX = "user-mailbox"
RULE_POSTMASTER = "postmaster"

_JSON_VERSION = 1
# How json.dumps(..., ensure_ascii=False) writes a string: quoted, with '"', '\\'
# and control characters escaped, the rest as it is.
_json_str = json.encoder.encode_basestring


@dataclass(frozen=True)
class Candidate:
    """One address the router looked at, where it came from, and what became of it.

    ``address`` is as found, normalised: domain lower-case, local part in its
    original case (compare with ``.lower()``).
    """

    address: str
    source: str  # "Delivered-To", "X-Original-To", ..., "Received", "To", "Cc", "mailbox"
    outcome: str  # ROUTED, NOT_LOCAL, OWN_ADDRESS, IGNORED_HOP, DUPLICATE
    rule: str  # "map sales@example.com", "map *@example.com", "self", "user-mailbox", ""
    targets: tuple[str, ...]


@dataclass(frozen=True)
class RouteDecision:
    """Where one message goes, and everything needed to say why.

    Exactly one of these holds: ``recipients`` are local users found by the
    rules; ``to_postmaster`` (``recipients == (postmaster,)``); ``quarantine``
    names the reason and ``recipients`` is empty. A message is never dropped.

    ``new_header_block``, when not None, replaces ``message[:length]`` (see
    ``split_header_block``): the ISP's Delivered-To lines renamed, and a leading
    byte-order mark or mbox ``From `` line dropped so that ``trace_headers``
    can be put in front of the block.
    """

    recipients: tuple[str, ...]
    envelope_header: str | None  # the envelope header used, or None (To/Cc fallback)
    candidates: tuple[Candidate, ...]
    to_postmaster: bool
    quarantine: str | None
    new_header_block: bytes | None
    trace_headers: bytes
    notes: tuple[str, ...] = ()  # sentences for explain(): fallbacks, rewrites, omissions

    def explain(self) -> str:
        """The decision in plain words, for the Activity window and ``history``."""
        return " ".join(_sentences(self))

    def to_json(self) -> str:
        """The decision as the ledger stores it: ``json.dumps(data, ensure_ascii=False)``.

        Spelt out rather than handed to the json encoder, which builds an object
        for every key, comma and value and cost more than the rest of routing;
        each string goes through the encoder's own escaping function, so the
        text is the same to the byte (a test holds it to json.dumps).
        """
        s = _json_str
        candidates = ", ".join(
            f"[{s(c.address)}, {s(c.source)}, {s(c.outcome)}, {s(c.rule)}, {_json_list(c.targets)}]"
            for c in self.candidates
        )
        return (
            f'{{"version": {_JSON_VERSION}, "recipients": {_json_list(self.recipients)}, '
            f'"envelope_header": {_json_opt(self.envelope_header)}, '
            f'"candidates": [{candidates}], '
            f'"to_postmaster": {"true" if self.to_postmaster else "false"}, '
            f'"quarantine": {_json_opt(self.quarantine)}, '
            f'"new_header_block": {_json_opt(_b64(self.new_header_block))}, '
            f'"trace_headers": {_json_opt(_b64(self.trace_headers))}, '
            f'"notes": {_json_list(self.notes)}}}'
        )

    @classmethod
    def from_json(cls, text: str) -> RouteDecision:
        """Read back :meth:`to_json`; ``ValueError`` when the text is not one."""
        try:
            data = json.loads(text)
            if data.get("version") != _JSON_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            block = data["new_header_block"]
            return cls(
                recipients=tuple(_strs(data["recipients"])),
                envelope_header=_opt_str(data["envelope_header"]),
                candidates=tuple(
                    Candidate(
                        address=str(a),
                        source=str(s),
                        outcome=str(o),
                        rule=str(r),
                        targets=tuple(_strs(t)),
                    )
                    for a, s, o, r, t in data["candidates"]
                ),
                to_postmaster=bool(data["to_postmaster"]),
                quarantine=_opt_str(data["quarantine"]),
                new_header_block=None if block is None else base64.b64decode(block),
                trace_headers=base64.b64decode(data["trace_headers"]),
                notes=tuple(_strs(data.get("notes", []))),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a stored routing decision: {exc}") from exc


def _json_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(map(_json_str, items)) + "]"


def _json_opt(text: str | None) -> str:
    return "null" if text is None else _json_str(text)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _strs(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of text, found {value!r}")
    return value


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected text, found {value!r}")
    return value


# --- words -------------------------------------------------------------------------------

_MAX_NAMED = 5


def join_words(items: list[str] | tuple[str, ...]) -> str:
    """Join words as "a", "a and b", "a, b and c"; long lists end in "and N more"."""
    items = list(items)
    if len(items) > _MAX_NAMED + 1:
        items = [*items[:_MAX_NAMED], f"{len(items) - _MAX_NAMED} more"]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _where(source: str, envelope: bool) -> str:
    if source == "Received":
        return "the ISP's topmost Received header says it was for"
    if envelope:
        return f"the ISP's {source} header names"
    return f"the {source} header names"


def _map_words(candidate: Candidate) -> str:
    rule = candidate.rule
    if not rule.startswith("map "):
        return ""
    key = rule[4:]
    targets = join_words(candidate.targets)
    if key.startswith("*@"):
        return f", and the address map's {key} entry sends it to {targets}"
    return f", and the address map sends {key} to {targets}"


def _sentences(d: RouteDecision) -> list[str]:
    out: list[str] = []
    routed = [c for c in d.candidates if c.outcome == ROUTED]
    if d.quarantine:
        out.append(f"Quarantined, not delivered: {d.quarantine.rstrip('.')}.")
    elif routed and routed[0].source == MAILBOX_SOURCE:
        c = routed[0]
        out.append(
            f"Sent to {join_words(d.recipients)} because every message in the ISP mailbox "
            f"{c.address} belongs to {join_words(c.targets)} (a user mailbox)."
        )
    elif d.to_postmaster:
        out.append(
            f"Sent to the postmaster, {join_words(d.recipients)}, because no address in the "
            "message routes to a local user."
        )
    else:
        said_bcc = False
        for c in routed:
            envelope = c.source == d.envelope_header
            text = (
                f"Sent to {join_words(c.targets)} because {_where(c.source, envelope)} "
                f"{c.address}{_map_words(c)}"
            )
            if envelope and not said_bcc:
                text += " (Bcc recipients are only visible there)"
                said_bcc = True
            out.append(text + ".")
        fanned = sum(len(c.targets) for c in routed)
        if fanned > len(d.recipients):
            out.append(
                "Each recipient gets the message once, even when several addresses lead there."
            )
    out.extend(_ignored(d))
    out.extend(d.notes)
    if d.envelope_header and not d.quarantine:
        out.append(
            "To and Cc were not used: the envelope header is the ISP's record of whom this "
            "copy was for."
        )
    return out


def _ignored(d: RouteDecision) -> list[str]:
    groups: dict[tuple[str, str], list[str]] = {}
    for c in d.candidates:
        if c.outcome != ROUTED:
            groups.setdefault((c.outcome, c.source), []).append(c.address)
    out: list[str] = []
    for (outcome, source), addresses in groups.items():
        names = join_words(addresses)
        if outcome == OWN_ADDRESS:
            out.append(
                f"Ignored {names} ({source}): the ISP mailbox's own address, not a recipient."
            )
        elif outcome == NOT_LOCAL:
            out.append(
                f"Not sent to {names} ({source}): not in a local domain, and Postbridge never "
                "sends mail back out."
            )
        elif outcome == IGNORED_HOP:
            out.append(
                f"Ignored {names} from a lower {source} header: only the topmost one, which "
                "the ISP added, is trusted; lower ones are earlier hops or could be forged by "
                "the sender."
            )
        elif outcome == DUPLICATE:
            out.append(f"{names} named again ({source}): each recipient gets one copy.")
        else:
            out.append(f"{names} ({source}): {outcome}.")
    return out


__all__ = [
    "DUPLICATE",
    "IGNORED_HOP",
    "MAILBOX_SOURCE",
    "NOT_LOCAL",
    "OWN_ADDRESS",
    "ROUTED",
    "RULE_POSTMASTER",
    "RULE_SELF",
    "RULE_USER_MAILBOX",
    "Candidate",
    "RouteDecision",
    "join_words",
]
