"""What becomes of each fetchmail option: taken over, or left out for a reason in words.

The importer consults this catalogue so that no option can vanish unnoticed:
an option is either in one of the ``*_USED`` sets (the converter turns it into
a Postbridge setting) or it gets a note with the reason from
:data:`REASONS` (or a general "no such setting").
"""

from __future__ import annotations

import re

from postbridge.engine.importers.rcfile import Option
from postbridge.engine.importers.rclexer import words

KEEP_DAYS = 3650  # "keep" in fetchmail is forever; Postbridge's longest is ten years
NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
PORT_NAMES = {"pop3": 110, "pop3s": 995, "smtp": 25, "lmtp": 24, "odmr": 366, "submission": 587}

# Options Postbridge has no use for, grouped by the reason a user would understand.
NOT_NEEDED = {
    "Postbridge passes messages on unchanged": (
        "rewrite forcecr stripcr pass8bits dropstatus dropdelivered mimedecode"
    ),
    "Postbridge has no size or count limits per poll": (
        "limit limitflush warnings fetchlimit fetchsizelimit fastuidl batchlimit"
    ),
    "Postbridge does not run commands or plugins": (
        "preconnect postconnect plugin plugout monitor interface"
    ),
    "Postbridge polls on a schedule and does not use IMAP IDLE": "idle forceidle idletimeout",
    "Postbridge tracks messages by their IDs itself": "uidl fetchall",
    "Postbridge does not resolve names in headers through DNS": "dns checkalias aka qvirtual",
    "Postbridge keeps no per-entry interval; every mailbox is polled on the schedule": "interval",
    "Postbridge reads the Inbox only (POP3 has no folders)": "folder",
    "Postbridge does not log in to the ISP with a client certificate": "sslkey sslcert",
    "Postbridge checks certificates against a CA file, not a fingerprint or name": (
        "sslfingerprint sslcommonname"
    ),
    "Postbridge chooses the TLS version itself (TLS 1.2 or newer)": "sslproto",
    "Postbridge keeps its own log and history": "logfile syslog invisible showdots tracepolls",
    "Postbridge keeps its own ledger and lock": "idfile pidfile",
    "Postbridge never bounces: what it cannot route goes to the postmaster or quarantine": (
        "bouncemail spambounce softbounce antispam bad-header"
    ),
    "Postbridge has no plugin properties": "properties principal",
    "Postbridge names itself to the mail server": "smtpname fetchdomains",
}
REASONS = {name: why for why, names in NOT_NEEDED.items() for name in names.split()}


SERVER_USED = words(
    "protocol via localdomains port service auth timeout envelope envskip esmtpname esmtppassword"
)
USER_USED = words(
    "password smtphost lmtp smtpaddress keep flush expunge sslcertfile sslcertpath sslcertck "
    "ssl mda bsmtp"
)
SIGNAL_USED = words("protocol via localdomains port service fetchdomains password ssl")
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def text_of(option: Option | None) -> str:
    if option is None or isinstance(option.value, bool):
        return ""
    return option.value if isinstance(option.value, str) else " ".join(option.value)


def list_of(option: Option | None) -> tuple[str, ...]:
    if option is None or isinstance(option.value, bool):
        return ()
    return (option.value,) if isinstance(option.value, str) else option.value


def flag_of(option: Option | None) -> bool:
    return option is not None and option.value is True
