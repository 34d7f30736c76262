"""What ETRN and ATRN share: the client connection to the ISP, errors, counting words.

Both signals start as an ordinary SMTP client session (EHLO, STARTTLS, maybe
AUTH), so both use the delivery code's :class:`SmtpClient` rather than a third
SMTP client; only the command they then send, and what its reply means,
differ. The connection factory is a seam for tests, as everywhere else.
"""

from __future__ import annotations

import ssl

from postbridge.engine.config import SignalConfig
from postbridge.engine.delivery.smtpclient import OpenConnection, SmtpClient
from postbridge.engine.delivery.wire import Reply
from postbridge.engine.errors import PostbridgeError
from postbridge.engine.tls import client_context


class SignalRefused(PostbridgeError):
    """The ISP understood the signal but will not act on it (RFC 1985 458/459, ATRN 4xx/5xx).

    A 4xx refusal may well pass by itself (``transient``); a 5xx needs the
    ISP or the settings to change (``needs_user``).
    """

    def __init__(self, message: str, *, temporary: bool, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.transient = temporary
        self.needs_user = not temporary


class SignalNotSupported(PostbridgeError):
    """The ISP's server does not offer this signal (not advertised, or 500/501/502)."""

    needs_user = True


def server_words(kind: str) -> str:
    """How error messages name the ISP's server ("the ISP's ... at host:port")."""
    return "ISP's ODMR server" if kind == "atrn" else "ISP's mail server"


def ssl_context(cfg: SignalConfig) -> ssl.SSLContext:
    """Verification on, the system's trust store, plus the optional ``ca_file``."""
    return client_context(cfg.ca_file, used_for="the online signal")


def make_client(
    cfg: SignalConfig,
    *,
    password: str | None,
    open_connection: OpenConnection | None = None,
) -> SmtpClient:
    """An SMTP client session to the ISP as the signal configuration describes it."""
    return SmtpClient(
        host=cfg.host,
        port=cfg.port,
        security=cfg.security,
        username=(cfg.username or None) if password is not None else None,
        password=password,
        ssl_context=ssl_context(cfg) if cfg.security != "none" else None,
        allow_plaintext_login=cfg.allow_plaintext_login,
        timeout=cfg.timeout,
        server_words=server_words(cfg.kind),
        open_connection=open_connection,
    )


def not_advertised(client: SmtpClient, keyword: str) -> SignalNotSupported:
    """The error for an EHLO that does not list ``keyword`` (ETRN, ATRN)."""
    return SignalNotSupported(
        f"The {client.server} at {client.where} does not offer {keyword}, so it cannot be "
        f"asked to release the held mail this way. Check the signal kind and port with the ISP.",
        detail=f"EHLO keywords: {' '.join(sorted(client.extensions)) or '(none)'}",
    )


def refusal(client: SmtpClient, reply: Reply, what: str) -> PostbridgeError:
    """Words for a reply that is neither success nor "nothing waiting"."""
    where = f"The {client.server} at {client.where}"
    if reply.code in (500, 501, 502, 504):
        return SignalNotSupported(
            f"{where} does not support {what} (it answered “{reply}”).", detail=str(reply)
        )
    if reply.is_temporary:
        return SignalRefused(
            f"{where} could not act on {what} right now (it answered “{reply}”); "
            "Postbridge will try again next time.",
            temporary=True,
            detail=str(reply),
        )
    return SignalRefused(
        f"{where} refused {what} (it answered “{reply}”).", temporary=False, detail=str(reply)
    )


def messages(count: int) -> str:
    """ "1 message", "3 messages"."""
    return f"{count} message{'' if count == 1 else 's'}"
