"""SMTP/LMTP wire format as pure functions: replies, EHLO keywords, DATA encoding.

Kept apart from the socket code (the way imapclient keeps its response parser
apart from its client) so that it can be tested with byte fixtures and
hypothesis, and so the client in :mod:`smtpclient` only does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postbridge.engine.errors import ProtocolError

# RFC 5321 §4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
#                             Reply-code [ SP textstring ] CRLF
_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]|$)(.*)", re.DOTALL)
_BARE_LF = re.compile(rb"(?<!\r)\n")
# Control characters, angle brackets: anything that could end the command line
# early or smuggle a second command (CR/LF) into it.
_UNSAFE_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


@dataclass(frozen=True)
class Reply:
    """One complete (possibly multi-line) server reply."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(line for line in self.lines if line)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        # Enhanced status codes (RFC 3463, "5.1.1") are part of the text and kept.
        return f"{self.code} {self.text}".rstrip()


def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """``(code, is_last, text)`` of one reply line (CRLF optional); ProtocolError if garbage."""
    match = _REPLY_LINE.fullmatch(line.rstrip(b"\r\n"))
    if match is None:
        shown = line[:80].decode("utf-8", "replace")
        raise ProtocolError(
            "The mail server sent an answer Postbridge does not understand.",
            detail=f"unexpected reply line {shown!r}",
        )
    code, sep, text = match.groups()
    return int(code), sep != b"-", text.decode("utf-8", "replace").strip()


class ReplyAssembler:
    """Collects reply lines until the last one (``250 ...`` after ``250-...``)."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._code = 0

    def feed(self, line: bytes) -> Reply | None:
        """Add one line; return the complete reply once its last line arrived."""
        code, last, text = parse_reply_line(line)
        if self._lines and code != self._code:
            raise ProtocolError(
                "The mail server sent an answer Postbridge does not understand.",
                detail=f"reply code changed from {self._code} to {code} within one reply",
            )
        self._code = code
        self._lines.append(text)
        if not last:
            return None
        reply = Reply(code, tuple(self._lines))
        self._lines = []
        return reply


def parse_ehlo(reply: Reply) -> dict[str, str]:
    """EHLO/LHLO keywords (upper-case) to their parameters; the first line is the greeting."""
    extensions: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.partition(" ")
        if keyword:
            extensions[keyword.upper()] = params.strip()
    return extensions


def auth_mechanisms(extensions: dict[str, str]) -> set[str]:
    return {m.upper() for m in extensions.get("AUTH", "").split()}


def check_address(address: str) -> None:
    """Raise ValueError if ``address`` cannot be put between ``<`` and ``>`` safely."""
    if _UNSAFE_ADDRESS.search(address):
        raise ValueError(f"address contains a control character or angle bracket: {address!r}")


class DataEncoder:
    """Turn a message (CRLF, as spooled) into SMTP DATA bytes, chunk by chunk.

    * Dot-stuffing (RFC 5321 §4.5.2): a line starting with "." gets another
      one. Done with ``bytes.replace`` on whole chunks, not per line in Python.
    * Bare LF becomes CRLF: some servers take ``<LF>.<LF>`` or ``<LF>.<CR><LF>``
      as the end of data, which a message could use to smuggle a second one
      (the 2023 "SMTP smuggling" attacks). A correct spool has none, so the
      check is a ``count`` and the rewrite rarely runs.
    * A CR ending a chunk is held back so that a CRLF is never split.
    * :meth:`finish` completes the last line and adds the ``.`` terminator.
    """

    def __init__(self) -> None:
        self._pending_cr = False
        self._at_line_start = True
        self._empty = True

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if self._pending_cr:
            chunk = b"\r" + chunk
        self._pending_cr = chunk.endswith(b"\r")
        if self._pending_cr:
            chunk = chunk[:-1]
            if not chunk:
                return b""
        if chunk.count(b"\n") != chunk.count(b"\r\n"):
            chunk = _BARE_LF.sub(b"\r\n", chunk)
        out = chunk.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and out.startswith(b"."):
            out = b"." + out
        self._at_line_start = out.endswith(b"\r\n")
        self._empty = False
        return out

    def finish(self) -> bytes:
        """The rest of the message and the end-of-data line."""
        if self._pending_cr:
            # A message ending in a bare CR: complete it as a line end.
            self._pending_cr = False
            return b"\r\n.\r\n"
        if self._empty or self._at_line_start:
            return b".\r\n"
        return b"\r\n.\r\n"
