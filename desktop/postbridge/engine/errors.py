"""The small, typed hierarchy of failures Postbridge knows how to explain.

Everything that comes from the user's environment (a wrong password, a server
that is down, a full disk, a malformed reply) is a :class:`PostbridgeError`:
``str(error)`` is a sentence a small-office user can act on, and
``error.detail`` keeps the technical part (the server's own words) for the log
and the Activity window. Anything else that escapes the engine is a bug: it is
logged with its traceback and shown as a crash notice, never swallowed.

Two flags drive what the tray app does with an error:

* ``transient``: the next cycle may well succeed (server down, line dropped,
  mailbox locked). Only the icon and tooltip change.
* ``needs_user``: nothing will improve until a person acts (wrong password,
  certificate changed, mail refused). Notify once per change of state.
"""

from __future__ import annotations


class PostbridgeError(Exception):
    """A known failure; ``str()`` is written for the user, ``detail`` for the log."""

    transient: bool = False
    needs_user: bool = False

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message

    def describe(self) -> str:
        """The message with the technical detail appended, for logs and history."""
        if self.detail:
            return f"{self.message} ({self.detail})"
        return self.message


class ConfigError(PostbridgeError):
    """The configuration file is missing, unreadable or has a wrong value.

    The message names the file, the key and the fix.
    """

    needs_user = True


class SecretError(PostbridgeError):
    """A password is missing from the keyring, or no keyring can be used."""

    needs_user = True


class NetworkError(PostbridgeError):
    """The server could not be reached, stalled or dropped the line."""

    transient = True


class TLSError(PostbridgeError):
    """The secure connection failed: usually the server's certificate is not trusted."""

    needs_user = True


class AuthError(PostbridgeError):
    """The server rejected the login (wrong user name or password)."""

    needs_user = True


class InsecureLoginRefused(PostbridgeError):
    """We refused to send a password over an unencrypted connection."""

    needs_user = True


class ProtocolError(PostbridgeError):
    """The server answered something we do not understand."""

    transient = True


class MailboxBusy(PostbridgeError):
    """The ISP mailbox is locked by another client or may not be opened yet."""

    transient = True


class ServerTemporaryError(PostbridgeError):
    """The server reports a temporary problem on its side (RFC 3206 SYS/TEMP)."""

    transient = True


class ServerPermanentError(PostbridgeError):
    """The server reports a problem that will not go away by itself (SYS/PERM)."""

    needs_user = True


class DeliveryError(PostbridgeError):
    """The office mail server (or local folder) did not accept a message.

    ``temporary`` says whether the message stays spooled for the next cycle
    (4xx, connection refused) or goes to quarantine (5xx).
    """

    def __init__(self, message: str, *, temporary: bool, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.temporary = temporary
        self.transient = temporary
        self.needs_user = not temporary


class StorageError(PostbridgeError):
    """Postbridge could not write to its own data folder (disk full, permissions)."""

    needs_user = True


class Cancelled(PostbridgeError):
    """The cycle was asked to stop (the user quit); nothing is lost."""

    transient = True
