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

import re
import threading
from dataclasses import dataclass
from typing import NamedTuple

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
# Any byte but CR and LF, spelt as ranges: re compiles that to a bitmap, which it
# tests about twice as fast as the negated set [^\r\n].
_TEXT = rb"[\x00-\x09\x0b\x0c\x0e-\xff]"
# Continuation lines: they start with white space (RFC 5322 §2.2.3). Every
# line ends in CRLF, LF or CR, or at the end of the data.
_CONTINUATIONS = rb"(?:[ \t]" + _TEXT + rb"*(?:\r\n|\n|\r|\Z))*"
_CONTINUATIONS_RE = re.compile(_CONTINUATIONS)
# A whole field: its name, the rest of its first line, and its continuation lines.
_FIELD_LINES_RE = re.compile(
    _FIELD_RE.pattern + rb"(" + _TEXT + rb"*)(?:\r\n|\n|\r|\Z)(" + _CONTINUATIONS + rb")"
)
_SPECIALS = frozenset("<>,;:@.")
_WSP = frozenset(" \t\r\n")
# An atom runs to white space, a special, a quote, a parenthesis or "[".
_ATOM_RE = re.compile(r'[^ \t\r\n<>,;:@."()\[]+')
# atext (RFC 5322 §3.2.3) or any non-ASCII character, spelt as what it is not: the
# same set as [A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-], which re took ~3 ms to
# compile at every start-up (a range up to U+10FFFF); this one ~0.1 ms.
_ATEXT = r"[^\x00-\x20\"(),.:;<>@\[\\\]\x7f]"
_DOT_ATOM_RE = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL_RE = re.compile(r"[^\s@<>()\[\],;:\"\\.\ufffd]+")
_MAX_LOCAL = 256
_MAX_DOMAIN = 255


class Field(NamedTuple):
    """One header field of the block, with its place in the bytes.

    ``start``/``end`` span the whole field including its continuation lines and
    final line break; ``name_end`` is where the name stops (the rename of
    Delivered-To replaces exactly ``block[start:name_end]``). ``key`` is the
    lower-case name, for comparisons. A named tuple rather than a dataclass:
    a message has dozens of fields and the router compares keys hundreds of
    times, so building one and reading ``key`` must cost next to nothing.
    """

    name: str
    value: str
    start: int
    name_end: int
    end: int
    key: str


# Field(...) runs the named tuple's __new__, written in Python; this is the same, in C.
_new_field = tuple.__new__


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


def _prefix_length(head: bytes) -> int:
    pos = len(_BOM) if head.startswith(_BOM) else 0
    if head.startswith(b"From ", pos) and not _FIELD_RE.match(head, pos):
        line = _LINE_RE.match(head, pos)
        assert line is not None  # the pattern matches the empty string
        return line.end()
    return pos


# Field names as text and as keys, by their bytes: the same few dozen names come
# in every message. Bounded, because a message can make up any number of them.
_names: dict[bytes, tuple[str, str]] = {}
_MAX_NAMES = 512


def _remember_name(name: bytes) -> tuple[str, str]:
    text = name.decode("ascii")
    names = (text, text.lower())
    if len(_names) < _MAX_NAMES:
        _names[name] = names
    return names


def _parse_header_block(head: bytes) -> HeaderBlock:
    data = head[:MAX_HEADER_BYTES]
    size = len(data)
    prefix = _prefix_length(data)
    lead = _CONTINUATIONS_RE.match(data, prefix)  # continuations of no field: skipped
    assert lead is not None  # the pattern matches the empty string
    pos = lead.end()
    fields: list[Field] = []
    # One match per field, continuation lines included: no Python loop per line.
    match = _FIELD_LINES_RE.match
    m = match(data, pos)
    while m is not None:
        name_bytes, first, folded = m.groups()
        if folded:
            # RFC 5322 §2.2.3: unfolding drops the line breaks, nothing else; every
            # continuation line ends in one (CRLF, LF or CR) but perhaps the last.
            first += folded.translate(None, b"\r\n")
        names = _names.get(name_bytes)
        if names is None:
            names = _remember_name(name_bytes)
        end = m.end()
        # RFC 6532 allows UTF-8 in headers. Other 8-bit bytes (a Latin-1 name, a
        # stray byte) become U+FFFD: any address containing one is dropped, since
        # nobody can say how it is spelt, while the rest of the field still counts.
        value = first.decode("utf-8", "replace").strip()
        name_end = pos + len(name_bytes)  # the match starts with the name
        fields.append(_new_field(Field, (names[0], value, pos, name_end, end, names[1])))
        pos = end
        m = match(data, pos)
    if pos >= size:
        length = size
    elif data[pos] in b"\r\n":  # the empty line: end of the header block, which includes it
        length = pos + (2 if data.startswith(b"\r\n", pos) else 1)
    else:  # neither a field nor a continuation: the body starts here
        length = pos
    return HeaderBlock(raw=data[:length], length=length, prefix=prefix, fields=tuple(fields))


# The last few heads parsed, by identity: the poll cycle asks about the same
# bytes object several times (its summary, the route, the Message-ID, the
# block's length). Keyed on id() rather than on the bytes, so a hit does not
# hash a 20 KB message; each entry holds its head, so the id stays its own.
_CACHE_SIZE = 8
_cache: dict[int, tuple[bytes, HeaderBlock]] = {}
_cache_lock = threading.Lock()


def parse_header_block(head: bytes) -> HeaderBlock:
    """Find and parse the header block at the start of ``head``. Never raises.

    Cached for the last few heads (the very same bytes objects): the poll
    cycle asks about one message several times, and the result is immutable.

    The block ends after the first empty line (which it includes). Without one it
    ends before the first line that is neither a field nor a continuation (as in
    Python's own parser and Postfix's cleanup, such a line starts the body), or at
    the end of ``head``, or at :data:`MAX_HEADER_BYTES`. CRLF, bare LF and bare CR
    all end a line.
    """
    if type(head) is not bytes:  # a bytearray could change under the cache
        return _parse_header_block(bytes(head))
    key = id(head)
    entry = _cache.get(key)
    if entry is not None and entry[0] is head:
        return entry[1]
    block = _parse_header_block(head)
    with _cache_lock:
        _cache[key] = (head, block)
        while len(_cache) > _CACHE_SIZE:
            del _cache[next(iter(_cache))]  # the oldest
    return block


def clear_cache() -> None:
    """Forget the parsed heads (for benchmarks that want every parse cold)."""
    with _cache_lock:
        _cache.clear()


def split_header_block(head: bytes) -> tuple[bytes, int]:
    """The header block up to and including its blank line, and its length in bytes.

    The block is ``head[:length]`` exactly, so ``message[length:]`` is the body.
    Tolerates bare LF and CR line ends, a leading byte-order mark or mbox
    ``From `` line (both kept in the block), and a missing blank line (see
    :func:`parse_header_block`).
    """
    block = parse_header_block(head)
    return block.raw, block.length


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
    find = value.find
    while i < n:
        c = value[i]
        if c in _WSP:
            space = True
            i += 1
        elif c == "(":  # comment, may nest (RFC 5322 §3.2.2); unterminated runs to the end
            close = find(")", i + 1)
            if close >= 0 and find("(", i + 1, close) < 0 and find("\\", i + 1, close) < 0:
                i = close + 1  # the common comment: no nesting, no escapes
            else:
                i = _comment_end(value, i)
            space = True
        elif c == '"':
            close = find('"', i + 1)
            stop = n if close < 0 else close  # unterminated: runs to the end
            if find("\\", i + 1, stop) < 0:
                tokens.append(("quoted", value[i + 1 : stop], space))  # no escapes
                i = stop + 1
            else:
                text, i = _quoted(value, i)
                tokens.append(("quoted", text, space))
            space = False
        elif c == "[":
            end = find("]", i)
            end = n if end < 0 else end + 1
            tokens.append(("literal", value[i:end], space))
            i = end
            space = False
        elif c in _SPECIALS:
            tokens.append(("special", c, space))
            i += 1
            space = False
        elif c == ")":  # a stray ')': skip it
            i += 1
            space = True
        else:
            atom = _ATOM_RE.match(value, i)  # c is not in _ATOM_RE's stops: a match
            assert atom is not None
            end = atom.end()
            tokens.append(("atom", value[i:end], space))
            i = end
            space = False
    return tokens


def _comment_end(value: str, i: int) -> int:
    """Just past the comment that starts at ``value[i]`` (nested, escaped, unterminated)."""
    n = len(value)
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
    return i + 1


def _quoted(value: str, i: int) -> tuple[str, int]:
    """The text of the quoted string at ``value[i]``, unescaped, and where it ends."""
    n = len(value)
    i += 1
    chars: list[str] = []
    while i < n and value[i] != '"':
        if value[i] == "\\" and i + 1 < n:
            i += 1
        chars.append(value[i])
        i += 1
    return "".join(chars), i + 1


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


# The common shapes of an address list, read by one regex per item instead of the
# tokenizer: "a@b.example", "Name <a@b.example>", "\"Name, Jr.\" <a@b.example>",
# separated by commas. Deliberately narrower than the tokenizer's grammar (no
# comments, escapes, groups, literals, routes, CR/LF or Unicode white space):
# anything else takes the general path, which reads these shapes the same way.
_FAST_ATOM = r"[^\s<>,;:@.\"()\[\]\\]++"
_FAST_DOT_ATOM = rf"{_FAST_ATOM}(?:\.{_FAST_ATOM})*+"
_FAST_NAME = rf"(?:{_FAST_ATOM}|\"[^\"\\]*+\"|[ \t.])*+"
_FAST_ITEM_RE = re.compile(
    rf"[ \t]*+(?:{_FAST_NAME}<({_FAST_DOT_ATOM})@({_FAST_DOT_ATOM})>"
    rf"|({_FAST_DOT_ATOM})@({_FAST_DOT_ATOM}))[ \t]*+(,|\Z)"
)


def _simple_addresses(value: str) -> list[str] | None:
    """The addresses of a list made only of the common shapes; None for anything else."""
    found: list[str] = []
    match = _FAST_ITEM_RE.match
    pos = 0
    while True:
        m = match(value, pos)
        if m is None:
            return None
        angle_local, angle_domain, bare_local, bare_domain, separator = m.groups()
        local = angle_local if angle_local is not None else bare_local
        domain = normalise_domain(angle_domain if angle_domain is not None else bare_domain)
        if domain and len(local) <= _MAX_LOCAL and "\ufffd" not in local:
            found.append(f"{local}@{domain}")
        if not separator:
            return found
        pos = m.end()


def parse_addresses(value: str) -> list[str]:
    """All addresses in an RFC 5322 address-list value, leniently. Never raises.

    Groups (RFC 5322 §3.4: ``team: a@x, b@y;``, ``undisclosed-recipients:;``)
    contribute their members; display names, quoted names with commas, comments
    and obsolete routes are skipped; a missing comma between two bare addresses
    or an unclosed ``<`` still yields what can be read.
    """
    simple = _simple_addresses(value)
    return simple if simple is not None else _tokenized_addresses(value)


def _tokenized_addresses(value: str) -> list[str]:
    """:func:`parse_addresses` for any value: the general path, token by token."""
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

    # _is(tok, x) spelt out: this loop runs once per token of every To and Cc.
    while i < n:
        tok = tokens[i]
        kind, text, _space = tok
        if kind != "special":
            if not had_angle:
                item.append(tok)
        elif text == "," or text == ";":
            flush()
            had_angle = False
        elif text == ":" and not any(t[1] == "@" and t[0] == "special" for t in item):
            item.clear()  # a group's display name (RFC 5322 §3.4)
            had_angle = False
        elif text == "<":
            j = i + 1
            while j < n and not (tokens[j][0] == "special" and tokens[j][1] in "<>"):
                j += 1
            if j < n and tokens[j][1] == ">":
                found.extend(_angle_address(tokens[i + 1 : j]))
                i = j
            else:  # unclosed: read up to the next separator
                j = i + 1
                while j < n and not (tokens[j][0] == "special" and tokens[j][1] in ",;<"):
                    j += 1
                found.extend(_angle_address(tokens[i + 1 : j]))
                i = j - 1
            item.clear()
            had_angle = True
        elif text == ">":
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
    "clear_cache",
    "domain_of",
    "message_id",
    "normalise_domain",
    "parse_addresses",
    "parse_header_block",
    "received_for",
    "split_header_block",
]
