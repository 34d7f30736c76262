"""The lexer of fetchmail's run-control language, reproduced token for token.

fetchmail's ``rcfile_l.l`` decides what a fetchmailrc means long before its
grammar does, and its quirks are what real files rely on: ``with``, ``and``,
``has``, ``wants``, ``options`` and ``; : ,`` are noise; keywords are
lower-case; ``#`` starts a comment only where a token would start; strings are
quoted with ``"`` or ``'`` (no way to quote the quote itself) and C-style
escapes (``\\n``, ``\\x41``) are decoded afterwards; flex takes the longest
match, so ``'it''s'`` is one bare word, quotes and all. After ``user``,
``password``, ``is``, ``to`` and ``=`` the next bare word is always a string,
even when spelled like a keyword (``user keep`` is a user named "keep").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TokenKind = Literal["keyword", "string", "number", "map"]


def words(text: str) -> frozenset[str]:
    """A set of keywords written as one string (easier to read than a list literal)."""
    return frozenset(text.split())


# Spellings fetchmail accepts, mapped to one canonical keyword.
_ALIASES = {
    "server": "poll",
    "local": "localdomains",
    "proto": "protocol",
    "preauth": "auth",
    "preauthenticate": "auth",
    "authenticate": "auth",
    "username": "user",
    "pass": "password",
    "folders": "folder",
    "smtp": "smtphost",
    "pre": "preconnect",
    "post": "postconnect",
    "pass8": "pass8bits",
    "mimedec": "mimedecode",
    "cram": "cram-md5",
    "kerberos4": "kerberos_v4",
    "kerberos5": "kerberos_v5",
    "opie": "otp",
}
_KEYWORDS = words("""
    set logfile idfile pidfile daemon syslog invisible showdots postmaster bouncemail
    spambounce softbounce warnings tracepolls defaults poll skip via aka localdomains
    protocol service port interval auth any gssapi kerberos_v4 kerberos_v5 kerberos ssh
    implicit external otp cram-md5 msn ntlm timeout idletimeout envelope qvirtual principal
    esmtpname esmtppassword bad-header accept reject user password folder smtphost
    fetchdomains smtpaddress smtpname antispam mda bsmtp lmtp preconnect postconnect
    interface monitor plugin plugout batchlimit fetchlimit fetchsizelimit fastuidl expunge
    properties is here there to no keep flush limitflush fetchall rewrite forcecr stripcr
    pass8bits dropstatus dropdelivered mimedecode idle forceidle dns uidl ssl sslkey sslcert
    sslproto sslcertck sslcertfile sslcertpath sslcommonname sslfingerprint checkalias limit
    auto pop2 sdps pop3 imap apop rpop etrn odmr kpop
    """)
_PROTOCOLS = words("auto pop2 sdps pop3 imap apop rpop etrn odmr kpop")
_NOISE = words("with and has wants options")
# After these the next bare word is a string whatever it looks like (fetchmail's NAME state).
_NAME_STATE = frozenset({"user", "password", "is", "to"})
# "nokeep" is "no keep" (fetchmail splits these few).
_NO_JOINED = words("""
    bouncemail uidl checkalias dns envelope keep flush limitflush fetchall rewrite forcecr
    stripcr pass8 pass8bits dropstatus dropdelivered mimedec mimedecode spambounce idle
    forceidle
    """)
_NUMBER = re.compile(r"-?[0-9]+")
_SEPARATORS = " \t\r\n=;:,"


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str
    line: int


def _unescape(text: str) -> str:
    """fetchmail's ``escapes()``: \\n \\t \\b \\r \\\\, \\xHH, \\0ooo, \\ddd, backslash-newline."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 >= len(text):
            if ch != "\\":
                out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in "xX":
            digits = re.match(r"[0-9a-fA-F]{0,2}", text[i + 2 :])
            hexdigits = digits.group(0) if digits else ""
            out.append(chr(int(hexdigits or "0", 16)))
            i += 2 + len(hexdigits)
        elif nxt == "0":
            octal = re.match(r"[0-7]{0,3}", text[i + 1 :])
            value = octal.group(0) if octal else "0"
            out.append(chr(int(value, 8)))
            i += 1 + len(value)
        elif nxt.isdigit():
            decimal = re.match(r"[0-9]{1,3}", text[i + 1 :])
            value = decimal.group(0) if decimal else "0"
            out.append(chr(int(value) % 256))
            i += 1 + len(value)
        else:
            if nxt != "\n":  # backslash-newline joins lines
                out.append({"n": "\n", "t": "\t", "b": "\b", "r": "\r"}.get(nxt, nxt))
            i += 2
    return "".join(out)


def _bare_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and text[end] not in _SEPARATORS:
        end += 1
    return end


def _quoted_wins(text: str, start: int) -> bool:
    """Whether the quote at ``start`` opens a string, as flex's longest match decides.

    fetchmail's lexer takes the longest token: ``'it''s'`` is one bare word
    (quotes and all), longer than the quoted ``'it'``; ``"a b"`` is a string,
    longer than the bare ``"a``. An unclosed quote opens nothing.
    """
    end = text.find(text[start], start + 1)
    return end >= 0 and end + 1 - start >= _bare_end(text, start) - start


def tokenize(text: str, *, problems: list[Stray] | None = None) -> list[Token]:
    """Split a fetchmailrc into tokens; noise words and separators are dropped.

    An unclosed quote is not an error for fetchmail's lexer (the quote becomes
    part of a bare word); it is reported in ``problems`` because it almost
    always means a password or name was cut short.
    """
    tokens: list[Token] = []
    line = 1
    i = 0
    name_state = False
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch in " \t\r;:,":
            i += 1
        elif ch == "\\" and text.startswith("\n", i + 1):
            line += 1
            i += 2
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch in "\"'" and _quoted_wins(text, i):
            end = text.index(ch, i + 1)
            raw = text[i + 1 : end]
            tokens.append(Token("string", _unescape(raw), line))
            line += raw.count("\n")
            i = end + 1
            name_state = False
        elif ch == "=":
            tokens.append(Token("map", "=", line))
            i += 1
            name_state = True
        else:
            if ch in "\"'" and text.find(ch, i + 1) < 0 and problems is not None:
                problems.append(Stray(line, f"a {ch} quote that is never closed"))
            start, i = i, _bare_end(text, i)
            name_state = _word(tokens, text[start:i], line, name_state=name_state)
    return tokens


def _word(tokens: list[Token], word: str, line: int, *, name_state: bool) -> bool:
    """Append the token(s) for one bare word; return whether the next word is a name."""
    if name_state:
        tokens.append(Token("string", _unescape(word), line))
        return False
    if word in _NOISE:
        return False
    lowered = word.lower()
    if lowered in _PROTOCOLS and word in (lowered, word.upper()):  # "pop3" or "POP3"
        word = lowered
    canonical = _ALIASES.get(word, word)
    if canonical in _KEYWORDS:
        tokens.append(Token("keyword", canonical, line))
        return canonical in _NAME_STATE
    if word.startswith("no") and word[2:] in _NO_JOINED:
        tokens.append(Token("keyword", "no", line))
        tokens.append(Token("keyword", _ALIASES.get(word[2:], word[2:]), line))
        return False
    if _NUMBER.fullmatch(word):
        tokens.append(Token("number", word, line))
        return False
    tokens.append(Token("string", _unescape(word), line))
    return False


@dataclass(frozen=True)
class Stray:
    """Something the parser did not understand, kept so the importer can list it."""

    line: int
    text: str
