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

    It never holds more than the current chunk plus four bytes: whole
    messages are never in memory. The work is done by ``bytes.find`` and
    ``bytes.replace`` over whole chunks, never by a Python loop per line.

    How boundaries are handled: the stream is read as if preceded by a CRLF
    (the body starts at the start of a line), so the terminator is always
    CRLF "." CRLF and stuffing always CRLF "..". A chunk ending in a proper
    prefix of the terminator (CR, CRLF, CRLF ".", CRLF "." CR) keeps that
    suffix back until the next chunk decides it. Every partial CRLF ".." is
    also such a prefix, so the replacement never straddles a boundary.
    """

    __slots__ = ("_done", "_lead", "_tail")

    def __init__(self) -> None:
        # The virtual CRLF before the first line; stripped from the output.
        self._tail = CRLF
        self._lead = True
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the terminator has been seen."""
        return self._done

    def feed(self, chunk: bytes) -> tuple[bytes, bool, bytes]:
        """Consume ``chunk``; return (body bytes, done, leftover after the terminator)."""
        if self._done:
            return b"", True, chunk
        data = self._tail + chunk if self._tail else chunk
        end = data.find(_TERMINATOR)
        if end >= 0:
            # Keep the CRLF that ends the last body line; drop "." CRLF.
            body = data[: end + 2]
            leftover = data[end + len(_TERMINATOR) :]
            self._tail = b""
            self._done = True
        else:
            keep = 0
            for prefix in _TERMINATOR_PREFIXES:
                if data.endswith(prefix):
                    keep = len(prefix)
                    break
            body = data[: len(data) - keep]
            self._tail = data[len(data) - keep :]
            leftover = b""
        if not body:
            return b"", self._done, leftover
        if _STUFFED in body:
            body = body.replace(_STUFFED, _UNSTUFFED)
        if self._lead:
            # The cut is never inside the virtual CRLF: every held-back suffix
            # starts with CR, and the byte after the virtual CR is LF.
            self._lead = False
            body = body[2:]
        return body, self._done, leftover
