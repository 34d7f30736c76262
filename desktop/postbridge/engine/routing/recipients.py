"""Read candidate recipient addresses out of a message's header block.

Pure functions over bytes: no I/O, no configuration. The router decides what the
addresses mean; this module only finds them, and must survive anything a POP3
server hands over. Real mail is full of bare LF or CR line ends, 8-bit bytes in
headers, unterminated quotes, ``undisclosed-recipients:;`` groups and worse.
CPython's ``email.headerregistry`` raises on some of those (for example
``AttributeError`` on ``To: unlisted-recipients:; (no To-header on input)``),
and ``email.utils.getaddresses`` has changed behaviour between patch releases
(CVE-2023-27043), so addresses are parsed here with a small lenient tokenizer
whose behaviour does not depend on the Python version.

Conventions:

* Header values are decoded as UTF-8 (RFC 6532); bytes that are not UTF-8
  become U+FFFD, and an address containing one is dropped (its spelling is
  unknowable), so nothing raises and no garbled address routes.
* An address is returned as ``local@domain``. The domain is lower-cased (and
  turned into its IDNA ``xn--`` form when it is not ASCII), the local part keeps
  the case it was written in. Compare addresses case-insensitively
  (``address.lower()``).
* Display names and comments are thrown away; RFC 2047 encoded words are never
  decoded, because RFC 2047 §5 forbids them inside an address: an encoded word
  that decodes to ``<mallory@example.com>`` is part of a name, not an address.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

#: The ISP headers that may record the envelope recipient, in canonical spelling.
#: "Received" stands for the ``for <address>`` clause of a Received field.
ENVELOPE_HEADERS: tuple[str, ...] = (
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "X-Rcpt-To",
    "Received",
)
#: The message's own recipient fields (RFC 5322 §3.6.3, and §3.6.6 for Resent-*).
ADDRESS_HEADERS: tuple[str, ...] = ("To", "Cc", "Resent-To", "Resent-Cc")
#: Never look further than this for the end of the header block.
MAX_HEADER_BYTES = 256 * 1024

_CANONICAL = {name.lower(): name for name in (*ENVELOPE_HEADERS, *ADDRESS_HEADERS)}
_BOM = b"\xef\xbb\xbf"
_LINE_RE = re.compile(rb"[^\r\n]*(?:\r\n|\n|\r|$)")
# A field name is printable US-ASCII except ':' (RFC 5322 §2.2); obsolete syntax
# (§4.5) allows white space before the colon.
_FIELD_RE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_SPECIALS = frozenset("<>,;:@.")
_WSP = frozenset(" \t\r\n")
_ATOM_STOP = _WSP | _SPECIALS | frozenset('"()[')
_DOT_ATOM_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]+"
    r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]+)*"
)
_LABEL_RE = re.compile(r"[^\s@<>()\[\],;:\"\\.\ufffd]+")
_MAX_LOCAL = 256
_MAX_DOMAIN = 255


@dataclass(frozen=True)
class Field:
    """One header field of the block, with its place in the bytes.

    ``start``/``end`` span the whole field including its continuation lines and
    final line break; ``name_end`` is where the name stops (the rename of
    Delivered-To replaces exactly ``block[start:name_end]``).
    """

    name: str
    value: str
    start: int
    name_end: int
    end: int

    @property
    def key(self) -> str:
        """The lower-case field name, for comparisons."""
        return self.name.lower()


@dataclass(frozen=True)
class HeaderBlock:
    """The parsed header block of a message.

    ``prefix`` is the length of what precedes the first field and is not part of
    the message proper: a UTF-8 byte-order mark and/or an mbox ``From `` line.
    """

    raw: bytes
    length: int
    prefix: int
    fields: tuple[Field, ...]

    def named(self, name: str) -> list[Field]:
        key = name.lower()
        return [f for f in self.fields if f.key == key]


def _lines(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """Yield ``(offset, content, line_end)``; CRLF, bare LF and bare CR all end a line."""
    pos = 0
    size = len(data)
    while pos < size:
        m = _LINE_RE.match(data, pos)
        assert m is not None  # the pattern matches the empty string
        line = m.group()
        if not line:
            break
        content = line.rstrip(b"\r\n")
        yield pos, content, line[len(content) :]
        pos = m.end()


def _prefix_length(head: bytes) -> int:
    pos = len(_BOM) if head.startswith(_BOM) else 0
    if head.startswith(b"From ", pos) and not _FIELD_RE.match(head, pos):
        for offset, _content, _end in _lines(head[pos:]):
            return pos + offset + len(_content) + len(_end)
    return pos


@functools.lru_cache(maxsize=8)
def parse_header_block(head: bytes) -> HeaderBlock:
    """Find and parse the header block at the start of ``head``. Never raises.

    Cached for the last few heads: the poll cycle asks about the same message
    three times (its summary, the route, the header block's length), and the
    result is immutable.

    The block ends after the first empty line (which it includes). Without one it
    ends before the first line that is neither a field nor a continuation (as in
    Python's own parser and Postfix's cleanup, such a line starts the body), or at
    the end of ``head``, or at :data:`MAX_HEADER_BYTES`.
    """
    data = head[:MAX_HEADER_BYTES]
    prefix = _prefix_length(data)
    fields: list[Field] = []
    current: tuple[int, int, str, list[bytes]] | None = None  # start, name_end, name, pieces
    length = len(data)

    def close(end: int) -> None:
        if current is None:
            return
        start, name_end, name, pieces = current
        fields.append(Field(name, _decode(b"".join(pieces)).strip(), start, name_end, end))

    for offset, content, _end in _lines(data[prefix:]):
        at = prefix + offset
        if not content:  # the empty line: end of the header block
            close(at)
            current = None
            length = at + len(_end)
            break
        if content[:1] in (b" ", b"\t"):
            if current is not None:
                current[3].append(content)  # RFC 5322 §2.2.3: unfolding drops the line break
            continue
        m = _FIELD_RE.match(content)
        if m is None:  # not a field: the body starts here
            close(at)
            current = None
            length = at
            break
        close(at)
        name = m.group(1).decode("ascii")
        current = (at, at + len(m.group(1)), name, [content[m.end() :]])
    else:
        close(length)
    return HeaderBlock(raw=data[:length], length=length, prefix=prefix, fields=tuple(fields))


def split_header_block(head: bytes) -> tuple[bytes, int]:
    """The header block up to and including its blank line, and its length in bytes.

    The block is ``head[:length]`` exactly, so ``message[length:]`` is the body.
    Tolerates bare LF and CR line ends, a leading byte-order mark or mbox
    ``From `` line (both kept in the block), and a missing blank line (see
    :func:`parse_header_block`).
    """
    block = parse_header_block(head)
    return block.raw, block.length


def _decode(raw: bytes) -> str:
    # RFC 6532 allows UTF-8 in headers. Other 8-bit bytes (a Latin-1 name, a
    # stray byte) become U+FFFD: any address containing one is dropped, since
    # nobody can say how it is spelt, while the rest of the field still counts.
    return raw.decode("utf-8", "replace")


# --- addresses ---------------------------------------------------------------------------

# Token kinds: "atom", "quoted" (text without quotes), "literal" ([...]), "special".
_Token = tuple[str, str, bool]  # kind, text, preceded by white space or a comment
_LOCAL_TOKENS = frozenset({"atom", "quoted"})
_DOMAIN_TOKENS = frozenset({"atom", "literal"})


def _tokenize(value: str) -> list[_Token]:
    """Split an address-list value into RFC 5322 §3.2 tokens, dropping comments."""
    tokens: list[_Token] = []
    i = 0
    n = len(value)
    space = False
    while i < n:
        c = value[i]
        if c in _WSP:
            space = True
            i += 1
        elif c == "(":  # comment, may nest (RFC 5322 §3.2.2); unterminated runs to the end
            depth = 0
            while i < n:
                c = value[i]
                if c == "\\":
                    i += 1
                elif c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
            space = True
        elif c == '"':
            i += 1
            chars: list[str] = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            i += 1
            tokens.append(("quoted", "".join(chars), space))
            space = False
        elif c == "[":
            end = value.find("]", i)
            end = n if end < 0 else end + 1
            tokens.append(("literal", value[i:end], space))
            i = end
            space = False
        elif c in _SPECIALS:
            tokens.append(("special", c, space))
            i += 1
            space = False
        else:
            start = i
            while i < n and value[i] not in _ATOM_STOP:
                i += 1
            if i == start:  # a stray ')': skip it
                i += 1
                space = True
                continue
            tokens.append(("atom", value[start:i], space))
            space = False
    return tokens


def _is(token: _Token, special: str) -> bool:
    return token[0] == "special" and token[1] == special


def _word_run(tokens: list[_Token], at: int, *, step: int, allowed: frozenset[str]) -> list[int]:
    """Indices of the word/dot run next to ``tokens[at]``, going in direction ``step``.

    White space ends the run unless a dot is on either side of it, so the obsolete
    ``bob . smith`` (RFC 5322 §4.4) joins but ``John Smith bob@x`` yields ``bob``.
    White space right next to the ``@`` is allowed (obsolete CFWS again).
    """
    run: list[int] = []
    i = at + step
    while 0 <= i < len(tokens):
        tok = tokens[i]
        if tok[0] not in allowed and not _is(tok, "."):
            break
        if run:
            prev = tokens[run[-1]]
            earlier, later = (prev, tok) if step > 0 else (tok, prev)
            if later[2] and not (_is(earlier, ".") or _is(later, ".")):
                break
        run.append(i)
        i += step
    return run if step > 0 else run[::-1]


def _local_text(tokens: list[_Token]) -> str:
    """The local part as text; a quoted word stays quoted unless it is a plain dot-atom."""
    parts: list[str] = []
    for kind, text, _space in tokens:
        if kind == "quoted" and not _DOT_ATOM_RE.fullmatch(text):
            parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            parts.append(text)
    return "".join(parts)


def normalise_domain(domain: str) -> str | None:
    """Lower-case, drop a trailing dot, IDNA-encode; None if it is no domain."""
    domain = domain.strip().rstrip(".").lower()
    if not domain or len(domain) > _MAX_DOMAIN:
        return None
    if domain.startswith("[") and domain.endswith("]"):
        return domain  # an address literal (RFC 5321 §4.1.3); never a local domain
    labels = domain.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        return None
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except (UnicodeError, ValueError):
            return None
    return domain


def _addresses_in(tokens: list[_Token]) -> list[str]:
    """Every ``local@domain`` in a token run that has no angle brackets."""
    found: list[str] = []
    used = -1
    for at, tok in enumerate(tokens):
        if not _is(tok, "@") or at <= used:
            continue
        local_idx = [i for i in _word_run(tokens, at, step=-1, allowed=_LOCAL_TOKENS) if i > used]
        domain_idx = _word_run(tokens, at, step=1, allowed=_DOMAIN_TOKENS)
        if not local_idx or not domain_idx:
            continue
        used = domain_idx[-1]
        local = _local_text([tokens[i] for i in local_idx])
        domain = normalise_domain("".join(tokens[i][1] for i in domain_idx))
        if local and domain and len(local) <= _MAX_LOCAL and "\ufffd" not in local:
            found.append(f"{local}@{domain}")
    return found


def _angle_address(inner: list[_Token]) -> list[str]:
    """The address inside ``<...>``, dropping an obsolete route ``@a,@b:`` (RFC 5322 §4.4)."""
    colons = [i for i, tok in enumerate(inner) if _is(tok, ":")]
    if colons:
        inner = inner[colons[-1] + 1 :]
    return _addresses_in(inner)[:1]


def parse_addresses(value: str) -> list[str]:
    """All addresses in an RFC 5322 address-list value, leniently. Never raises.

    Groups (RFC 5322 §3.4: ``team: a@x, b@y;``, ``undisclosed-recipients:;``)
    contribute their members; display names, quoted names with commas, comments
    and obsolete routes are skipped; a missing comma between two bare addresses
    or an unclosed ``<`` still yields what can be read.
    """
    tokens = _tokenize(value)
    found: list[str] = []
    item: list[_Token] = []
    had_angle = False
    i = 0
    n = len(tokens)

    def flush() -> None:
        if not had_angle:
            found.extend(_addresses_in(item))
        item.clear()

    while i < n:
        tok = tokens[i]
        if _is(tok, ",") or _is(tok, ";"):
            flush()
            had_angle = False
        elif _is(tok, ":") and not any(_is(t, "@") for t in item):
            item.clear()  # a group's display name (RFC 5322 §3.4)
            had_angle = False
        elif _is(tok, "<"):
            j = i + 1
            while j < n and not (_is(tokens[j], ">") or _is(tokens[j], "<")):
                j += 1
            if j < n and _is(tokens[j], ">"):
                found.extend(_angle_address(tokens[i + 1 : j]))
                i = j
            else:  # unclosed: read up to the next separator
                j = i + 1
                while j < n and not (
                    _is(tokens[j], ",") or _is(tokens[j], ";") or _is(tokens[j], "<")
                ):
                    j += 1
                found.extend(_angle_address(tokens[i + 1 : j]))
                i = j - 1
            item.clear()
            had_angle = True
        elif _is(tok, ">"):
            pass
        elif not had_angle:
            item.append(tok)
        i += 1
    flush()
    return found


_COMMENT_RE = re.compile(r"\((?:[^()\\]|\\.)*\)")
_FOR_RE = re.compile(
    r"(?:^|\s)for\s+((?:<[^<>]*>|[^\s<>;,]+@[^\s<>;,]+)"
    r"(?:\s*,\s*(?:<[^<>]*>|[^\s<>;,]+@[^\s<>;,]+))*)",
    re.IGNORECASE,
)


def received_for(value: str) -> list[str]:
    """The addresses of a Received field's ``for`` clause (RFC 5321 §4.4), if any."""
    text = value
    for _ in range(5):  # comments nest; peel a few levels
        stripped = _COMMENT_RE.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    if ";" in text:
        text = text[: text.rindex(";")]
    m = _FOR_RE.search(text)
    return parse_addresses(m.group(1)) if m else []


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def canonical_name(name: str) -> str:
    """The usual spelling of a known header name ("delivered-to" -> "Delivered-To")."""
    return _CANONICAL.get(name.lower(), name)


_MSGID_RE = re.compile(r"<[^<>\s]+>")


def message_id(head: bytes) -> str | None:
    """The Message-ID of the message, or None. Lenient and never raises.

    Returns the first ``<...>`` of the first Message-ID field (comments and
    white space around it dropped); a value without angle brackets yields its
    first word. Use it as an opaque key.
    """
    for field in parse_header_block(head).named("Message-ID"):
        value = _COMMENT_RE.sub(" ", field.value)
        m = _MSGID_RE.search(value)
        if m:
            return m.group()[:998]
        words = value.split()
        if words:
            return words[0][:998]
    return None


__all__ = [
    "ADDRESS_HEADERS",
    "ENVELOPE_HEADERS",
    "MAX_HEADER_BYTES",
    "Field",
    "HeaderBlock",
    "canonical_name",
    "domain_of",
    "message_id",
    "normalise_domain",
    "parse_addresses",
    "parse_header_block",
    "received_for",
    "split_header_block",
]
