"""What the Activity window and the CLI show of a message: sender, subject, Message-ID.

Read leniently from the header block the spool kept. Real mail is often
malformed (see ../shared/corpus) and CPython's header classes raise on some of
it, so this uses the ``compat32`` policy and guards every step: a header that
cannot be read becomes an empty field, never an exception.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import email.utils
import re

_ADDR_RE = re.compile(r"^[^\s<>@]+@[^\s<>@]+$|^$")


def _decode(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    try:
        parts = email.header.decode_header(text)
        out = []
        for chunk, charset in parts:
            if isinstance(chunk, bytes):
                out.append(chunk.decode(charset or "ascii", errors="replace"))
            else:
                out.append(chunk)
        text = "".join(out)
    except (LookupError, ValueError, AssertionError, TypeError):
        pass
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
        # Parse headers only; ``compat32`` never raises on malformed values.
        msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    except Exception:  # the parser has no documented exception set
        return meta
    try:
        mid = msg.get("Message-ID")
        meta["message_id"] = " ".join(str(mid).split())[:998] if mid else None
        meta["subject"] = _decode(msg.get("Subject"))
        meta["sender"] = _decode(msg.get("From"))
        return_path = msg.get("Return-Path")
        if return_path is not None:
            _, address = email.utils.parseaddr(str(return_path))
            meta["envelope_from"] = address if _ADDR_RE.match(address) else ""
    except Exception:  # malformed input must never abort a poll
        pass
    return meta
