"""Pure parsing of POP3 replies: bytes in, values out, no sockets.

Kept apart from the client (as imapclient keeps its response parser apart from
its connection) so every rule here can be tested with byte fixtures and
hypothesis, and so the client only moves bytes.

Every function either returns a value or raises :class:`ProtocolError`; any
other exception escaping from here on server input is a bug. The messages of
those errors say "The server ..." because a parser does not know which server
it is reading; the client re-raises them with the host name.

References: RFC 1939 (POP3), RFC 2449 (CAPA, response codes), RFC 3206 (SYS and
AUTH response codes), RFC 2595 (STLS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postbridge.engine.errors import ProtocolError

__all__ = [
    "CRLF",
    "Capabilities",
    "DotUnstuffer",
    "Status",
    "dot_stuff",
    "garbage",
    "greeting_timestamp",
    "is_continuation",
    "parse_capa",
    "parse_list_body",
    "parse_list_line",
    "parse_stat",
    "parse_status",
    "parse_uidl_body",
    "parse_uidl_line",
]

CRLF = b"\r\n"
# RFC 1939 §3: a multi-line response ends with a line holding a single dot.
# Seen from the start of the body (which begins at the start of a line) it is
# CRLF "." CRLF; the client feeds a virtual CRLF first so the rule has no edge.
_TERMINATOR = b"\r\n.\r\n"
_STUFFED = b"\r\n.."
_UNSTUFFED = b"\r\n."
# The proper prefixes of the terminator: a chunk ending in one of these cannot
# be judged until more data arrives (it may be the terminator, or a stuffed dot).
_TERMINATOR_PREFIXES = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")
# The terminator as the very first line of a body (no CRLF before it).
_LEAD_TERMINATOR = b".\r\n"
# Stuffed lines handled one find each before the rest of a chunk goes to replace().
_MAX_FINDS = 32

_GARBAGE_MESSAGE = "The server sent a reply Postbridge does not understand"


def garbage(data: bytes | str, *, message: str = _GARBAGE_MESSAGE) -> ProtocolError:
    """The error for a reply we cannot parse, with its first 200 characters as detail."""
    return ProtocolError(message, detail=repr(data[:200]))


@dataclass(frozen=True)
class Status:
    """A parsed status line: ``+OK``/``-ERR``, its optional response code, its text.

    ``code`` holds the levels of an RFC 2449 §8 response code in upper case,
    e.g. ``("SYS", "TEMP")`` for ``-ERR [SYS/TEMP] try later``; ``()`` if none.
    ``text`` is the human part after the code, as the server wrote it.
    """

    ok: bool
    text: str
    code: tuple[str, ...] = ()

    def has_code(self, *levels: str) -> bool:
        """Whether the response code starts with ``levels`` (codes are hierarchical).

        ``has_code("SYS")`` is true for ``[SYS/TEMP]`` and ``[SYS/PERM]``
        (RFC 3206 §3: clients understanding only the top level use it alone).
        """
        wanted = tuple(level.upper() for level in levels)
        return self.code[: len(wanted)] == wanted

    def describe(self) -> str:
        """The server's words as they arrived, for ``detail`` and logs."""
        indicator = "+OK" if self.ok else "-ERR"
        code = f"[{'/'.join(self.code)}] " if self.code else ""
        return f"{indicator} {code}{self.text}".rstrip()


# RFC 2449 §8: resp-code = "[" resp-level *("/" resp-level) "]", where a level is
# any CHAR except "/" and "]". We stay strict about printable ASCII.
_RESP_CODE = re.compile(
    rb"\[([\x21-\x2e\x30-\x5c\x5e-\x7e]+(?:/[\x21-\x2e\x30-\x5c\x5e-\x7e]+)*)\]"
)


def parse_status(line: bytes) -> Status:
    """Parse one status line (without its CRLF).

    Tolerant where servers vary harmlessly (case of the indicator, a missing
    text) and strict where a mistake would desynchronise us: anything not
    starting with ``+OK`` or ``-ERR`` is a :class:`ProtocolError`.
    """
    line = line.rstrip(b"\r\n")
    head = line[:4].upper()
    if head.startswith(b"+OK"):
        ok, rest = True, line[3:]
    elif head == b"-ERR":
        ok, rest = False, line[4:]
    else:
        raise garbage(line)
    if rest and rest[:1] not in (b" ", b"\t"):
        # "+OKAY" or "-ERROR": not a status indicator followed by text.
        raise garbage(line)
    rest = rest.strip(b" \t")
    code: tuple[str, ...] = ()
    match = _RESP_CODE.match(rest)
    if match is not None:
        code = tuple(level.upper() for level in match.group(1).decode("ascii").split("/"))
        rest = rest[match.end() :].lstrip(b" \t")
    return Status(ok=ok, text=rest.decode("utf-8", "replace"), code=code)


def is_continuation(line: bytes) -> bool:
    """Whether ``line`` is a SASL continuation (RFC 5034 §4: ``"+" SP base64``)."""
    return line == b"+" or line.startswith(b"+ ")


# RFC 1939 §7: the APOP timestamp is a msg-id, "<" ... ">", in the greeting.
_TIMESTAMP = re.compile(r"<[^<>\s]+>")


def greeting_timestamp(text: str) -> str | None:
    """The ``<...>`` timestamp of a greeting, brackets included, or None (no APOP)."""
    match = _TIMESTAMP.search(text)
    return match.group(0) if match else None


@dataclass(frozen=True)
class Capabilities:
    """What the server said it can do, from CAPA (RFC 2449 §5-6).

    A server that answers ``-ERR`` to CAPA (RFC 1939-only servers) gets
    :meth:`none`: nothing is assumed, and the client still works without the
    optional extensions.
    """

    names: frozenset[str] = frozenset()
    pipelining: bool = False
    uidl: bool = False
    top: bool = False
    user: bool = False
    sasl: frozenset[str] = frozenset()
    # RFC 2449 §6.7: "0" (messages are deleted after RETR anyway), "NEVER", or
    # a number of days. The first argument only; a trailing "USER" means the
    # value may differ per user and is known only after login.
    expire: str | None = None
    # RFC 2449 §6.5: minimum seconds between logins.
    login_delay: int | None = None
    resp_codes: bool = False
    stls: bool = False
    implementation: str | None = None
    # RFC 3206 §6: the server uses [AUTH] and [SYS/...] codes.
    auth_resp_code: bool = False

    @classmethod
    def none(cls) -> Capabilities:
        """Capabilities of a server that does not support CAPA."""
        return cls()


def parse_capa(body: bytes) -> Capabilities:
    """Parse the body of a CAPA reply (capability lines, dot terminator removed).

    Unknown capabilities are kept in ``names`` and otherwise ignored; malformed
    arguments of known ones are ignored rather than fatal, since a sloppy
    EXPIRE line should not stop mail collection.
    """
    names: set[str] = set()
    args: dict[str, list[str]] = {}
    for raw in body.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", "replace").strip()
        if not line:
            continue
        name, *rest = line.split()
        name = name.upper()
        names.add(name)
        args.setdefault(name, rest)

    login_delay: int | None = None
    delay_args = args.get("LOGIN-DELAY")
    if (
        delay_args
        and delay_args[0].isascii()
        and delay_args[0].isdigit()
        and len(delay_args[0]) < 10
    ):
        login_delay = int(delay_args[0])
    expire_args = args.get("EXPIRE")
    expire = expire_args[0].upper() if expire_args else None
    impl_args = args.get("IMPLEMENTATION")
    return Capabilities(
        names=frozenset(names),
        pipelining="PIPELINING" in names,
        uidl="UIDL" in names,
        top="TOP" in names,
        user="USER" in names,
        sasl=frozenset(mech.upper() for mech in args.get("SASL", [])),
        expire=expire,
        login_delay=login_delay,
        resp_codes="RESP-CODES" in names,
        stls="STLS" in names,
        implementation=" ".join(impl_args) if impl_args else None,
        auth_resp_code="AUTH-RESP-CODE" in names,
    )


def _ints(text: bytes, count: int, what: str) -> list[int]:
    """The first ``count`` decimal fields of ``text``, or a ProtocolError."""
    message = f"The server sent a {what} line Postbridge does not understand"
    fields = text.split()
    if len(fields) < count:
        raise garbage(text, message=message)
    values: list[int] = []
    for field in fields[:count]:
        # The length bound keeps int() away from its digit limit (ValueError).
        if not field.isdigit() or len(field) > 19:
            raise garbage(text, message=message)
        values.append(int(field))
    return values


def parse_stat(text: str) -> tuple[int, int]:
    """``+OK 2 320`` → (2, 320): number of messages and octets (RFC 1939 §5 STAT)."""
    count, size = _ints(text.encode("utf-8", "replace"), 2, "STAT")
    return count, size


def parse_list_line(line: bytes) -> tuple[int, int]:
    """A scan listing ``1 120`` → (1, 120); extra fields (RFC 1939 §5 discourages them) ignored."""
    msgnum, size = _ints(line, 2, "LIST")
    return msgnum, size


def parse_uidl_line(line: bytes) -> tuple[int, str]:
    """A unique-id listing ``1 whqtswO00WBw418f9t5JxYwZ`` → (1, "whqt...").

    RFC 1939 §7: the id is 1 to 70 characters in 0x21..0x7E. We accept longer
    ids (some servers exceed 70) but not empty ones or bytes outside ASCII.
    """
    fields = line.split()
    if len(fields) < 2:
        raise garbage(line, message="The server sent a UIDL line Postbridge does not understand")
    (msgnum,) = _ints(fields[0], 1, "UIDL")
    uid = fields[1]
    if not all(0x21 <= byte <= 0x7E for byte in uid) or len(uid) > 512:
        raise garbage(line, message="The server sent a UIDL line Postbridge does not understand")
    return msgnum, uid.decode("ascii")


def _listing_lines(body: bytes) -> list[bytes]:
    return [line for line in body.split(b"\r\n") if line.strip()]


def parse_list_body(body: bytes) -> dict[int, int]:
    """The body of a multi-line LIST reply → {msgnum: size}."""
    return dict(parse_list_line(line) for line in _listing_lines(body))


def parse_uidl_body(body: bytes) -> dict[int, str]:
    """The body of a multi-line UIDL reply → {msgnum: uid}."""
    return dict(parse_uidl_line(line) for line in _listing_lines(body))


def dot_stuff(body: bytes) -> bytes:
    """Encode ``body`` as a multi-line response body, terminator included.

    The inverse of :class:`DotUnstuffer` (RFC 1939 §3: a line starting with
    "." gets another "."). A body not ending in CRLF gets one, because the
    terminator must start a line. Used by the fake server and the tests.
    """
    if body and not body.endswith(CRLF):
        body += CRLF
    if body.startswith(b"."):
        body = b"." + body
    return body.replace(_UNSTUFFED, _STUFFED) + b".\r\n"


class DotUnstuffer:
    """Incremental decoder of one multi-line response body (RFC 1939 §3).

    Feed it the bytes following the ``+OK`` line in chunks of any size; it
    returns the body bytes it is sure of (dot-unstuffed, CRLFs exactly as on
    the wire, bare LFs untouched), whether the terminating ``.`` line has been
    seen, and the bytes after the terminator (the next pipelined reply).

    Only a line that starts with a dot needs any work: the body starts at the
    start of a line, and every other line start follows a CRLF, so each
    ``bytes.find`` of CRLF "." lands on the next such line (or on the
    terminator, CRLF "." CRLF). A body without dotted lines costs one scan
    and one copy; a stuffed line costs one more find, never a Python loop
    over the lines in between. Bodies full of dotted lines switch to
    ``bytes.replace`` over the rest of the chunk, so they cost no more than a
    plain scan and replace would.

    It never holds more than the current chunk plus four bytes: whole
    messages are never in memory. A chunk ending in a proper prefix of the
    terminator (CR, CRLF, CRLF ".", CRLF "." CR), or a body's first bytes
    that are one (".", "." CR), are kept back until the next chunk decides
    them.
    """

    __slots__ = ("_done", "_lead", "_tail")

    def __init__(self) -> None:
        self._tail = b""  # held-back bytes, judged with the next chunk
        self._lead = True  # no body byte decided yet: the next byte starts a line
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the terminator has been seen."""
        return self._done

    def feed(self, chunk: bytes) -> tuple[bytes, bool, bytes]:
        """Consume ``chunk``; return (body bytes, done, leftover after the terminator)."""
        body, rest = self.feed_at(chunk, 0)
        if rest < 0:
            return body, False, b""
        return body, True, chunk[rest:] if rest else chunk

    def feed_at(self, data: bytes, start: int) -> tuple[bytes, int]:
        """Consume ``data[start:]`` without copying it first.

        Returns the body bytes decided, and the offset in ``data`` where what
        follows the terminator begins, or -1 while the terminator is still to
        come. For a reader that keeps one buffer and an offset into it.
        """
        if self._done:
            return b"", start
        if self._tail:  # rare: a chunk ended in a prefix of the terminator
            buf = self._tail + data[start:]
            shift = len(self._tail) - start  # index in buf = index in data + shift
            pos = 0
            self._tail = b""
        else:
            buf, shift, pos = data, 0, start
        emit = pos  # the first byte not yet returned
        if self._lead:
            if len(buf) - pos < len(_LEAD_TERMINATOR) and _LEAD_TERMINATOR.startswith(buf[pos:]):
                self._tail = buf[pos:]  # "", "." or "." CR: cannot tell yet
                return b"", -1
            self._lead = False
            if buf.startswith(b".", pos):  # the first line starts with a dot
                if buf.startswith(_LEAD_TERMINATOR, pos):
                    self._done = True
                    return b"", pos + len(_LEAD_TERMINATOR) - shift
                if buf.startswith(b"..", pos):
                    emit = pos + 1
        pieces: list[bytes] = []
        find = buf.find
        dotted = 0
        at = find(_UNSTUFFED, pos)
        while at >= 0:
            after = at + len(_UNSTUFFED)
            following = buf[after : after + 2]
            if following[:1] == b".":  # CRLF ".." -> CRLF "."
                pieces.append(buf[emit:after])
                emit = after + 1
                dotted += 1
                if dotted > _MAX_FINDS:
                    return self._replace_rest(pieces, buf, emit=emit, shift=shift)
                at = find(_UNSTUFFED, emit)
            elif following == CRLF:  # the terminator; keep the CRLF that ends the last line
                pieces.append(buf[emit : at + 2])
                self._done = True
                return b"".join(pieces), at + len(_TERMINATOR) - shift
            elif following in (b"", b"\r"):  # the chunk ends inside what may be the terminator
                pieces.append(buf[emit:at])
                self._tail = buf[at:]
                return b"".join(pieces), -1
            else:  # a line starting with a single dot (unstuffed by a sloppy server): kept
                at = find(_UNSTUFFED, after)
        return self._hold_back(pieces, buf, emit=emit), -1

    def _hold_back(self, pieces: list[bytes], buf: bytes, *, emit: int) -> bytes:
        """Return ``buf[emit:]`` but a final CR or CRLF, which the next chunk decides."""
        keep = 2 if buf.endswith(CRLF, emit) else 1 if buf.endswith(b"\r", emit) else 0
        cut = len(buf) - keep
        pieces.append(buf[emit:cut])
        self._tail = buf[cut:]
        return b"".join(pieces)

    def _replace_rest(
        self, pieces: list[bytes], buf: bytes, *, emit: int, shift: int
    ) -> tuple[bytes, int]:
        """The rest of a chunk with many dotted lines: one find and one replace.

        ``emit`` is just past a stuffed dot, inside a line, so neither the
        terminator nor a stuffed line can start before it.
        """
        end = buf.find(_TERMINATOR, emit)
        if end >= 0:
            pieces.append(buf[emit : end + 2].replace(_STUFFED, _UNSTUFFED))
            self._done = True
            return b"".join(pieces), end + len(_TERMINATOR) - shift
        # As _hold_back, but the held-back suffix may be any proper prefix of the terminator.
        keep = 0
        for prefix in _TERMINATOR_PREFIXES:
            if buf.endswith(prefix, emit):
                keep = len(prefix)
                break
        cut = len(buf) - keep
        pieces.append(buf[emit:cut].replace(_STUFFED, _UNSTUFFED))
        self._tail = buf[cut:]
        return b"".join(pieces), -1
