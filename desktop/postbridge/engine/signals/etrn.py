"""ETRN (RFC 1985): ask the ISP to start delivering the mail it holds for our domains.

The ISP then opens a new SMTP connection to the office's own mail server (its
MX) and delivers there; Postbridge only says "we are online". So ETRN is a
short client session: EHLO, STARTTLS (unless ``security = "none"``), AUTH when
a username is configured (some ISPs want it), one ``ETRN <domain>`` per domain,
QUIT.

Every domain gets its own ETRN even after an earlier one answered 251 ("no
messages waiting") or a refusal: the answers are per domain (RFC 1985 §5),
and one domain's empty queue says nothing about the next one's.

:func:`answer` turns one reply into words and is pure, so every reply code
of RFC 1985 §5 is tested without a socket.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from postbridge.engine.config import SignalConfig
from postbridge.engine.delivery.smtpclient import OpenConnection
from postbridge.engine.delivery.wire import Reply
from postbridge.engine.errors import NetworkError
from postbridge.engine.signals.common import make_client, messages, not_advertised

log = logging.getLogger("postbridge.signal")

Outcome = Literal["started", "nothing", "refused", "unsupported"]

# RFC 1985 §5: "253 OK, <n> pending messages for node <x> started"
_COUNT = re.compile(r"(?<![\d.])(\d{1,9})\s+(?:pending\s+)?messages?\b", re.IGNORECASE)


@dataclass(frozen=True)
class DomainAnswer:
    """The ISP's answer to ``ETRN <domain>``, and what it means in words."""

    domain: str
    reply: Reply
    outcome: Outcome
    words: str
    count: int | None = None  # messages the ISP said it will send (253)

    @property
    def ok(self) -> bool:
        return self.outcome in ("started", "nothing")

    @property
    def temporary(self) -> bool:
        """Whether asking again later may help: 458 and other 4xx, not 459 "not allowed"."""
        return self.reply.is_temporary and self.reply.code != 459


def _count(reply: Reply) -> int | None:
    match = _COUNT.search(reply.text)
    return int(match.group(1)) if match else None


def answer(domain: str, reply: Reply) -> DomainAnswer:
    """What the reply to ``ETRN <domain>`` means (RFC 1985 §5), in words."""
    code = reply.code
    if code == 251:
        return DomainAnswer(domain, reply, "nothing", f"{domain}: no mail waiting")
    if code == 253 or (code in (250, 252) and _count(reply) is not None):
        count = _count(reply)
        what = messages(count) if count is not None else "the held mail"
        return DomainAnswer(
            domain, reply, "started", f"{domain}: the ISP started delivering {what}", count
        )
    if 200 <= code < 300:  # 250 "queuing started", 252 "pending messages started"
        return DomainAnswer(
            domain, reply, "started", f"{domain}: the ISP started delivering the held mail"
        )
    if code == 458:
        words = f"{domain}: the ISP could not start delivering right now (“{reply}”)"
        return DomainAnswer(domain, reply, "refused", words)
    if code == 459:
        words = f"{domain}: the ISP does not release mail for this domain on request (“{reply}”)"
        return DomainAnswer(domain, reply, "refused", words)
    if code == 530:  # RFC 4954 §6: authentication required
        words = (
            f"{domain}: the ISP wants a login before ETRN (“{reply}”); set username in "
            "[signal] and store the password with: postbridge secret set signal"
        )
        return DomainAnswer(domain, reply, "refused", words)
    if code in (500, 502, 504):
        words = f"{domain}: the ISP's server does not support ETRN (“{reply}”)"
        return DomainAnswer(domain, reply, "unsupported", words)
    if code == 501:
        words = (
            f"{domain}: the ISP's server does not accept ETRN for this name (“{reply}”); "
            "check the domains in [signal]"
        )
        return DomainAnswer(domain, reply, "unsupported", words)
    words = f"{domain}: the ISP refused (“{reply}”)"
    return DomainAnswer(domain, reply, "refused", words)


async def send_etrn(
    cfg: SignalConfig,
    *,
    password: str | None,
    open_connection: OpenConnection | None = None,
) -> tuple[DomainAnswer, ...]:
    """Send ``ETRN`` for every configured domain; return the ISP's answers in order.

    Raises what connecting raises (NetworkError, TLSError, AuthError, ...) and
    SignalNotSupported when the server does not advertise ETRN.
    """
    client = make_client(cfg, password=password, open_connection=open_connection)
    try:
        await client.connect()
        if "ETRN" not in client.extensions:
            raise not_advertised(client, "ETRN")
        answers: list[DomainAnswer] = []
        for domain in cfg.domains:  # bounded by the configuration
            reply = await client.command(f"ETRN {domain}")
            if reply.code == 421:  # RFC 5321 §3.8: closing the connection
                raise NetworkError(
                    f"The {client.server} at {client.where} closed the connection: {reply}",
                    detail=str(reply),
                )
            result = answer(domain, reply)
            log.info("ETRN %s: %s", domain, reply)
            answers.append(result)
        return tuple(answers)
    finally:
        await client.quit()
