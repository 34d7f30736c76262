"""POP3 login: which method to use, and the three we speak (USER/PASS, APOP, AUTH PLAIN).

The choice is a security decision, so it is a pure function with its order
written down (:func:`choose_method`), tested without a network. The rule from
DESIGN.md: a password never goes over an unencrypted connection unless the
account explicitly allows it. APOP (RFC 1939 §7) is the exception: MD5 is weak,
but only a digest of the password is sent.

Login failures are mapped to errors in the user's words; RFC 3206 §4 ``[AUTH]``
and a bare ``-ERR`` both mean the credentials were refused, while ``[IN-USE]``,
``[LOGIN-DELAY]`` and ``[SYS/...]`` mean something else entirely and must not
tell the user to change a correct password.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Literal

from postbridge.engine.errors import AuthError, InsecureLoginRefused, PostbridgeError
from postbridge.engine.pop3.connection import Pop3Connection
from postbridge.engine.pop3.replies import CRLF, Capabilities, Status, is_continuation

__all__ = ["LoginMethod", "choose_method", "login"]

LoginMethod = Literal["auto", "user", "apop", "plain"]
Method = Literal["user", "apop", "plain"]

# RFC 5034 §4: the AUTH command line is at most 255 octets; a longer initial
# response is sent after an empty "+ " continuation instead.
MAX_AUTH_LINE = 255


def choose_method(
    method: LoginMethod,
    *,
    capabilities: Capabilities,
    capa_supported: bool,
    encrypted: bool,
    apop_timestamp: str | None,
    allow_plaintext: bool,
    host: str,
    label: str,
) -> Method:
    """The login method to use, or the refusal to raise.

    Order for ``auto``:

    * Encrypted connection: SASL PLAIN if advertised (one round trip, the
      password travels inside TLS); else USER/PASS if advertised or if the
      server has no CAPA (nothing is known); else APOP if the greeting had a
      timestamp; else USER/PASS anyway and let the server answer.
    * Unencrypted connection: APOP if the greeting had a timestamp; else, only
      if plaintext login is allowed for this account, PLAIN or USER/PASS as
      above; else :class:`InsecureLoginRefused`.

    An explicit method is used as asked, with the same plaintext refusal.
    """
    chosen: Method
    if method == "auto":
        if not encrypted and apop_timestamp is not None:
            return "apop"
        if "PLAIN" in capabilities.sasl:
            chosen = "plain"
        elif capabilities.user or not capa_supported:
            chosen = "user"
        elif apop_timestamp is not None:
            return "apop"
        else:
            chosen = "user"
    elif method in ("user", "apop", "plain"):
        chosen = method
    else:
        raise ValueError(f"unknown POP3 login method {method!r}")
    if chosen == "apop" and apop_timestamp is None:
        raise AuthError(
            f"{host} does not offer APOP login (its greeting has no timestamp); "
            f"choose another login method for {label}",
        )
    if chosen != "apop" and not encrypted and not allow_plaintext:
        raise InsecureLoginRefused(
            f"Postbridge did not send the password for {label} to {host}, because the "
            "connection is not encrypted. Choose TLS or STARTTLS for this mailbox, or "
            "explicitly allow unencrypted login for it",
        )
    return chosen


async def login(
    conn: Pop3Connection,
    method: Method,
    *,
    username: str,
    password: str,
    apop_timestamp: str | None,
) -> None:
    """Authenticate with ``method``; raise the mapped error on a -ERR."""
    if method == "plain":
        await _login_plain(conn, username, password)
    elif method == "apop":
        assert apop_timestamp is not None
        await _login_apop(conn, username, password, apop_timestamp)
    else:
        await _login_user(conn, username, password)


def _check_line_safe(conn: Pop3Connection, value: str, what: str) -> None:
    # A CR or LF would end the command early and start another (command injection).
    if any(char in value for char in "\r\n\0"):
        raise AuthError(
            f"The {what} for {conn.label} contains a line break, which POP3 cannot send"
        )


def _wrong_password(conn: Pop3Connection, username: str, status: Status) -> PostbridgeError:
    return conn.status_error(
        status,
        default=AuthError(
            f"The ISP rejected the password for {username}",
            detail=f"{conn.host}: {status.describe()}",
        ),
    )


async def _login_user(conn: Pop3Connection, username: str, password: str) -> None:
    _check_line_safe(conn, username, "user name")
    _check_line_safe(conn, password, "password")
    status = await conn.simple(b"USER " + username.encode("utf-8"))
    if not status.ok:
        raise conn.status_error(
            status,
            default=AuthError(
                f"The ISP rejected the user name {username}",
                detail=f"{conn.host}: {status.describe()}",
            ),
        )
    status = await conn.simple(b"PASS " + password.encode("utf-8"))
    if not status.ok:
        raise _wrong_password(conn, username, status)


async def _login_apop(conn: Pop3Connection, username: str, password: str, timestamp: str) -> None:
    _check_line_safe(conn, username, "user name")
    # RFC 1939 §7: digest = MD5(timestamp + shared secret), lower-case hex.
    secret = (timestamp + password).encode("utf-8")
    digest = hashlib.md5(secret, usedforsecurity=False).hexdigest()
    status = await conn.simple(f"APOP {username} {digest}".encode())
    if not status.ok:
        raise _wrong_password(conn, username, status)


def _plain_token(username: str, password: str) -> bytes:
    # RFC 4616: authzid NUL authcid NUL passwd, with an empty authzid.
    return base64.b64encode(b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8"))


def plain_command(username: str, password: str) -> bytes | None:
    """``AUTH PLAIN`` with its initial response (RFC 5034), or None when too long for one line."""
    command = b"AUTH PLAIN " + _plain_token(username, password)
    return command if len(command) + len(CRLF) <= MAX_AUTH_LINE else None


async def plain_reply(conn: Pop3Connection, username: str) -> None:
    """Read the answer to a :func:`plain_command` sent ahead of other pipelined commands.

    Success leaves ``in_sync`` alone (the other replies are still to come); a
    failure, or a challenge where PLAIN has none, raises with the connection
    out of step, so it is dropped rather than read further.
    """
    line = await conn.readline()
    if is_continuation(line):
        raise AuthError(
            f"{conn.host} asked for more than a password during the login of {username}",
            detail=line.decode("utf-8", "replace"),
        )
    status = conn.parse_status(line)
    if not status.ok:
        raise _wrong_password(conn, username, status)


async def _login_plain(conn: Pop3Connection, username: str, password: str) -> None:
    command = plain_command(username, password)
    if command is not None:
        await conn.send(command)
    else:
        token = _plain_token(username, password)
        await conn.send(b"AUTH PLAIN")
        line = await conn.readline()
        if not is_continuation(line):
            status = conn.parse_status(line)
            conn.in_sync = True
            raise _wrong_password(conn, username, status)
        await conn.send(token, secret=True)
    line = await conn.readline()
    if is_continuation(line):
        # PLAIN is one step; a further challenge means the exchange went
        # wrong. RFC 5034 §4: "*" cancels, and the server answers -ERR.
        await conn.send(b"*")
        line = await conn.readline()
    status = conn.parse_status(line)
    conn.in_sync = True
    if not status.ok:
        raise _wrong_password(conn, username, status)
