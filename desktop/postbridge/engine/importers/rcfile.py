"""Read a fetchmailrc into plain entries, following fetchmail's grammar (``rcfile_y.y``).

A statement is ``set ...``, ``defaults ...``, ``poll <server> ...`` or ``skip
<server> ...``; server options come first, then one or more ``user`` blocks
with their options (user options before any ``user`` belong to an implicit
user: the login running fetchmail).

This module is pure: text in, :class:`Entry` records out, with the line of
every option kept so the importer can say exactly what it left out and why.
It is forgiving where fetchmail would stop at a syntax error: a word it does
not understand becomes a :class:`Stray` and parsing goes on, because the
point is to import as much as possible and list the rest, never to refuse a
file over one odd line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, cast

from postbridge.engine.importers.rclexer import Stray, Token, TokenKind, tokenize, words

# -- the grammar -------------------------------------------------------------------------

ServerArity = Literal["flag", "one", "list", "envelope"]

SERVER_OPTIONS: dict[str, ServerArity] = {
    "via": "one",
    "aka": "list",
    "localdomains": "list",
    "protocol": "one",
    "principal": "one",
    "esmtpname": "one",
    "esmtppassword": "one",
    "uidl": "flag",
    "checkalias": "flag",
    "service": "one",
    "port": "one",
    "interval": "one",
    "auth": "one",
    "timeout": "one",
    "idletimeout": "one",
    "envelope": "envelope",
    "qvirtual": "one",
    "interface": "one",
    "monitor": "one",
    "plugin": "one",
    "plugout": "one",
    "dns": "flag",
    "tracepolls": "flag",
    "bad-header": "one",
}
USER_OPTIONS: dict[str, ServerArity] = {
    "password": "one",
    "folder": "list",
    "smtphost": "list",
    "fetchdomains": "list",
    "smtpaddress": "one",
    "smtpname": "one",
    "antispam": "list",
    "mda": "one",
    "bsmtp": "one",
    "preconnect": "one",
    "postconnect": "one",
    "sslkey": "one",
    "sslcert": "one",
    "sslproto": "one",
    "sslcertfile": "one",
    "sslcertpath": "one",
    "sslcommonname": "one",
    "sslfingerprint": "one",
    "properties": "one",
    "limit": "one",
    "warnings": "one",
    "fetchlimit": "one",
    "fetchsizelimit": "one",
    "fastuidl": "one",
    "batchlimit": "one",
    "expunge": "one",
}
USER_FLAGS = words("""
    lmtp keep flush limitflush fetchall rewrite forcecr stripcr pass8bits dropstatus
    dropdelivered mimedecode idle forceidle ssl sslcertck
    """)
SET_VALUES = frozenset({"logfile", "idfile", "pidfile", "daemon", "postmaster", "properties"})
SET_FLAGS = frozenset(
    {"bouncemail", "spambounce", "softbounce", "syslog", "invisible", "showdots", "tracepolls"}
)
_ENTRY_STARTS = frozenset({"poll", "skip", "defaults", "set"})


@dataclass(frozen=True)
class Option:
    """One option as written: its value ("" for flags, a tuple for lists) and its line."""

    name: str
    value: str | tuple[str, ...] | bool
    line: int


@dataclass
class User:
    line: int
    remote: str | None = None
    localnames: list[tuple[str, str | None]] = field(default_factory=list)
    wildcard: bool = False
    options: dict[str, Option] = field(default_factory=dict)


@dataclass
class Entry:
    """A ``poll``/``skip`` statement (or ``defaults``) with its server options and users."""

    kind: Literal["poll", "skip", "defaults"]
    name: str
    line: int
    options: dict[str, Option] = field(default_factory=dict)
    users: list[User] = field(default_factory=list)


@dataclass
class RcFile:
    settings: dict[str, Option] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    strays: list[Stray] = field(default_factory=list)


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.result = RcFile()

    def peek(self, offset: int = 0) -> Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def is_keyword(self, *names: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "keyword" and token.text in names

    def at(self, *kinds: TokenKind) -> bool:
        token = self.peek()
        return token is not None and token.kind in kinds

    def stray(self, token: Token, why: str) -> None:
        self.result.strays.append(Stray(token.line, why))

    def values(self) -> tuple[str, ...]:
        """Consecutive strings and numbers (a list argument)."""
        out: list[str] = []
        while (token := self.peek()) is not None and token.kind in ("string", "number"):
            out.append(self.take().text)
        return tuple(out)

    def value(self, keyword: Token) -> str | None:
        token = self.peek()
        if token is None or token.kind == "map":
            self.stray(keyword, f"“{keyword.text}” without a value")
            return None
        return self.take().text  # a keyword as value (e.g. "auth password") is fine

    def parse(self) -> RcFile:
        while (token := self.peek()) is not None:
            if self.is_keyword("set"):
                self.take()
                self.parse_set(token)
            elif self.is_keyword("poll", "skip", "defaults"):
                self.parse_entry()
            else:
                self.take()
                self.stray(token, f"“{token.text}” outside a poll entry")
        return self.result

    def parse_set(self, set_token: Token) -> None:
        negate = self.is_keyword("no")
        if negate:
            self.take()
        token = self.peek()
        if token is None or token.kind != "keyword":
            self.stray(set_token, "“set” without a setting")
            return
        self.take()
        if token.text in SET_FLAGS:
            self.result.settings[token.text] = Option(token.text, not negate, token.line)
            return
        if token.text in SET_VALUES and not negate:
            if self.at("map"):
                self.take()
            value = self.value(token)
            if value is not None:
                self.result.settings[token.text] = Option(token.text, value, token.line)
            return
        self.stray(token, f"“set {token.text}”, which fetchmail does not know either")

    def parse_entry(self) -> None:
        start = self.take()
        kind = cast(Literal["poll", "skip", "defaults"], start.text)
        name = "defaults"
        if kind != "defaults":
            if self.at("map") or self.peek() is None or self.is_keyword(*_ENTRY_STARTS):
                self.stray(start, f"“{kind}” without a server name")
            else:
                name = self.take().text
        entry = Entry(kind=kind, name=name, line=start.line)
        self.result.entries.append(entry)
        user: User | None = None
        while (token := self.peek()) is not None and not self.is_keyword(*_ENTRY_STARTS):
            negate = False
            if self.is_keyword("no"):
                negate = True
                self.take()
                token = self.peek()
                if token is None:
                    break
            if token.kind != "keyword":
                self.take()
                self.stray(token, f"“{token.text}” where an option was expected")
                continue
            word = token.text
            if word == "user" and not negate:
                self.take()
                user = self.parse_userdef(token)
                entry.users.append(user)
            elif word in SERVER_OPTIONS:
                self.take()
                self.parse_option(entry.options, token, SERVER_OPTIONS[word], negate)
            elif word in USER_OPTIONS or word in USER_FLAGS or word in ("is", "to"):
                if user is None:  # user options without "user": fetchmail's implicit user
                    user = User(line=token.line)
                    entry.users.append(user)
                self.take()
                if word in ("is", "to"):
                    self.parse_is(user, token)
                elif word in USER_FLAGS:
                    user.options[word] = Option(word, not negate, token.line)
                else:
                    self.parse_option(user.options, token, USER_OPTIONS[word], negate)
            else:
                self.take()
                self.stray(token, f"“{word}” is not an option of a poll entry")

    def parse_option(
        self, into: dict[str, Option], token: Token, arity: ServerArity, negate: bool
    ) -> None:
        name = token.text
        if arity == "flag" or negate:
            into[name] = Option(name, not negate, token.line)
        elif arity == "list":
            into[name] = Option(name, self.values(), token.line)
        elif arity == "envelope":
            skip = self.take().text if self.at("number") else "0"
            value = self.value(token)
            if value is not None:
                into[name] = Option(name, value, token.line)
                if skip != "0":
                    into["envskip"] = Option("envskip", skip, token.line)
        else:
            value = self.value(token)
            if value is not None:
                into[name] = Option(name, value, token.line)

    def mapping_list(self) -> tuple[list[tuple[str, str | None]], bool]:
        """``name``, ``remote = local`` and ``*`` entries up to the next keyword."""
        names: list[tuple[str, str | None]] = []
        wildcard = False
        while (token := self.peek()) is not None and token.kind in ("string", "number"):
            self.take()
            if self.at("map"):
                self.take()
                if self.at("string", "number"):
                    names.append((token.text, self.take().text))
                else:
                    self.stray(token, f"“{token.text} =” without a local name")
            elif token.text == "*":
                wildcard = True
            else:
                names.append((token.text, None))
        return names, wildcard

    def parse_userdef(self, token: Token) -> User:
        user = User(line=token.line)
        names, wildcard = self.mapping_list()
        if self.is_keyword("here"):
            self.take()
            user.localnames, user.wildcard = names, wildcard
            return user
        if self.is_keyword("there"):
            self.take()
        if len(names) == 1 and names[0][1] is None and not wildcard:
            user.remote = names[0][0]
        elif names or wildcard:
            user.remote = names[0][0] if names else None
            self.stray(token, "“user” followed by several names without “here”")
        else:
            self.stray(token, "“user” without a name")
        return user

    def parse_is(self, user: User, token: Token) -> None:
        names, wildcard = self.mapping_list()
        if self.is_keyword("there"):
            self.take()
            if len(names) == 1 and names[0][1] is None:
                user.remote = names[0][0]
            else:
                self.stray(token, f"“{token.text} ... there” with more than one name")
            return
        if self.is_keyword("here"):
            self.take()
        if not names and not wildcard:
            self.stray(token, f"“{token.text}” without local names")
        user.localnames.extend(names)
        user.wildcard = user.wildcard or wildcard


def parse_rcfile(text: str) -> RcFile:
    """The entries, global settings and not-understood words of a fetchmailrc."""
    problems: list[Stray] = []
    rc = _Parser(tokenize(text, problems=problems)).parse()
    rc.strays[:0] = problems
    return rc
