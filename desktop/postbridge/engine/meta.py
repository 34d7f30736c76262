"""What the Activity window and the CLI show of a message: sender, subject, Message-ID.

Read leniently from the header block the spool kept, with the routing
module's parser (which never raises, and whose result for this very head the
router reuses) rather than :mod:`email.parser`, which costs more than the rest
of a message's bookkeeping. Every step is guarded: a header that cannot be
read becomes an empty field, never an exception.
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import operator
import re

from postbridge.engine.routing.recipients import parse_header_block

_ADDR_RE = re.compile(r"^[^\s<>@]+@[^\s<>@]+$|^$")
_KEY_AND_VALUE = operator.attrgetter("key", "value")
# The common Return-Path, "<user@host>" or "<>", read without email.utils.
_SIMPLE_PATH_RE = re.compile(r"^\s*<([^\s<>@()\",;:\\]+@[^\s<>@()\",;:\\]+|)>\s*$")


def _decode(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    if "=?" not in text:  # no RFC 2047 encoded word: decode_header would return it as it is
        return " ".join(text.split())[:500]
    try:
        parts = email.header.decode_header(text)
        out = []
        for chunk, charset in parts:
            if isinstance(chunk, bytes):
                out.append(chunk.decode(charset or "ascii", errors="replace"))
            else:
                out.append(chunk)
        text = "".join(out)
    except (LookupError, ValueError, AssertionError, TypeError, email.errors.HeaderParseError):
        pass  # shown as it stands: a broken encoded word must not hide the other fields
    return " ".join(text.split())[:500]


def extract(head: bytes) -> dict[str, str | None]:
    """Message-ID, sender, subject and envelope sender (Return-Path) of a header block."""
    meta: dict[str, str | None] = {
        "message_id": None,
        "sender": None,
        "subject": None,
        "envelope_from": "",
    }
    try:
        # Each name's first field wins: built from the last field up, in C.
        first: dict[str, str] = dict(map(_KEY_AND_VALUE, reversed(parse_header_block(head).fields)))
        mid = first.get("message-id")
        meta["message_id"] = " ".join(mid.split())[:998] if mid else None
        meta["subject"] = _decode(first.get("subject"))
        meta["sender"] = _decode(first.get("from"))
        return_path = first.get("return-path")
        if return_path is not None:
            simple = _SIMPLE_PATH_RE.match(return_path)
            address = simple.group(1) if simple else email.utils.parseaddr(return_path)[1]
            meta["envelope_from"] = address if _ADDR_RE.match(address) else ""
    except Exception:  # malformed input must never abort a poll
        pass
    return meta
