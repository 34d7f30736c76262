"""Delivery to the office mail server over SMTP (Exchange, Postfix, hMailServer).

One SMTP transaction per message with all its local recipients, so the office
server stores one copy and fans it out itself. The server's answers become
per-recipient results: a refused ``RCPT`` (4xx/5xx) is that recipient's
outcome; the reply after ``DATA`` applies to every recipient accepted at
``RCPT`` (RFC 5321 §3.3). The connection is kept open between messages;
when the server has dropped it meanwhile, the message is sent once more on a
fresh connection, which is safe because nothing of it had been acknowledged.

The protocol work is in :mod:`smtpclient`; :class:`LmtpTarget` in :mod:`lmtp`
reuses all of this with LMTP's per-recipient replies after ``DATA``.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from functools import partial

from postbridge.engine.delivery.base import (
    DeliveryJob,
    DeliveryTarget,
    RecipientResult,
    Status,
    all_with,
    unique,
)
from postbridge.engine.delivery.smtpclient import (
    ConnectionLost,
    OpenConnection,
    Security,
    SmtpClient,
    Verdict,
)
from postbridge.engine.delivery.wire import check_address
from postbridge.engine.errors import (
    AuthError,
    InsecureLoginRefused,
    PostbridgeError,
    StorageError,
    TLSError,
)

# Failures no retry can fix: the user must act, so they are raised, not reported.
_NEEDS_USER = (TLSError, AuthError, InsecureLoginRefused)


def _status(code: int) -> Status:
    if 200 <= code < 300:
        return "accepted"
    if 500 <= code < 600:
        return "permanent"
    return "temporary"  # 4xx, and anything odd: try again rather than lose it


class SmtpTarget(DeliveryTarget):
    """The office mail server, spoken to over SMTP (submission or port 25)."""

    protocol = "SMTP"
    _lmtp = False
    _server_words = "office mail server"
    # Two messages in flight: while the server stores one (its queue-file fsync is
    # most of its time per message), the other is on the wire.
    parallel = 2

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: Security,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        allow_plaintext_login: bool = False,
        timeout: float = 60.0,
        helo_name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        open_connection: OpenConnection | None = None,
    ) -> None:
        self._username = username
        self._new_client = partial(
            SmtpClient,
            host=host,
            port=port,
            security=security,
            lmtp=self._lmtp,
            username=username,
            password=password,
            ca_file=ca_file,
            ssl_context=ssl_context,
            allow_plaintext_login=allow_plaintext_login,
            timeout=timeout,
            helo_name=helo_name,
            server_words=self._server_words,
            open_connection=open_connection,
        )
        first = self._new_client()
        self.where = first.where
        kind = "socket" if host.startswith("/") else "server"
        self.description = f"{self.protocol} {kind} {self.where}"
        # Up to ``parallel`` transactions at once, each on a connection of its own,
        # kept open between messages; made as they are first needed.
        self._clients = [first]
        self._idle = [first]
        self._slots = asyncio.Semaphore(self.parallel)

    async def check(self) -> str:
        client = self._new_client()
        try:
            await client.connect()
            parts = [f"Connected to the {client.server} at {client.where}"]
            if client.tls_version:
                parts.append(f"encrypted ({client.tls_version})")
            if self._username:
                parts.append(f"logged in as {self._username}")
            keywords = ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8")
            offered = [k for k in keywords if k in client.extensions]
            if offered:
                parts.append(f"it offers {', '.join(offered)}")
        finally:
            await client.quit()
        return ", ".join(parts) + "."

    async def aclose(self) -> None:
        for client in self._clients:
            await client.quit()

    async def deliver(self, job: DeliveryJob) -> dict[str, RecipientResult]:
        recipients = unique(job.recipients)
        if not recipients:
            return {}
        async with self._slots:
            client = self._idle.pop() if self._idle else self._fresh_client()
            try:
                return await self._deliver_on(client, job, recipients)
            finally:
                self._idle.append(client)

    def _fresh_client(self) -> SmtpClient:
        client = self._new_client()
        self._clients.append(client)
        return client

    async def _deliver_on(
        self, client: SmtpClient, job: DeliveryJob, recipients: list[str]
    ) -> dict[str, RecipientResult]:
        for attempt in (1, 2):
            try:
                return await self._attempt(client, job, recipients)
            except ConnectionLost as lost:
                if lost.stale and attempt == 1:
                    continue  # the kept-open connection had died: once more, fresh
                return self._after_loss(recipients, job.sender, lost)
            except _NEEDS_USER:
                raise
            except StorageError as error:
                return all_with(
                    recipients,
                    "temporary",
                    f"{error.describe()} The message stays spooled and will be tried again.",
                )
            except PostbridgeError as error:
                return all_with(
                    recipients,
                    "temporary",
                    f"{error.message} The message stays spooled and will be tried again.",
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, client: SmtpClient, job: DeliveryJob, recipients: list[str]
    ) -> dict[str, RecipientResult]:
        results: dict[str, RecipientResult] = {}
        try:
            check_address(job.sender)
        except ValueError:
            return all_with(
                recipients,
                "permanent",
                f"The sender address {job.sender!r} cannot be given to the {self._server_words}.",
            )
        await client.connect()
        utf8 = "SMTPUTF8" in client.extensions
        if not job.sender.isascii() and not utf8:
            return all_with(
                recipients,
                "permanent",
                f"The sender address {job.sender} is international and the "
                f"{self._server_words} does not accept such addresses (no SMTPUTF8).",
            )
        sendable: list[str] = []
        for rcpt in recipients:
            try:
                check_address(rcpt)
            except ValueError:
                results[rcpt] = RecipientResult(
                    rcpt, "permanent", f"The address {rcpt!r} is not a valid mail address."
                )
                continue
            if not rcpt.isascii() and not utf8:
                results[rcpt] = RecipientResult(
                    rcpt,
                    "permanent",
                    f"{rcpt} is an international address and the {self._server_words} does "
                    "not accept such addresses (no SMTPUTF8).",
                )
                continue
            sendable.append(rcpt)
        if sendable:
            verdicts = await client.send(
                sender=job.sender,
                recipients=sendable,
                path=job.path,
                data=job.data,
                prepend=job.prepend,
                skip=job.skip,
            )
            for rcpt in sendable:
                results[rcpt] = self._result(rcpt, job.sender, verdicts[rcpt])
        return {r: results[r] for r in recipients}

    def _result(self, rcpt: str, sender: str, verdict: Verdict) -> RecipientResult:
        reply = verdict.reply
        status = _status(reply.code)
        server = f"The {self._server_words}"
        how = "permanently" if status == "permanent" else "for now (it will be tried again)"
        if verdict.stage == "mail":
            reason = f"{server} refused the sender <{sender}> {how}: {reply}"
        elif verdict.stage == "rcpt":
            reason = f"{server} refused {rcpt} {how}: {reply}"
        elif verdict.stage == "data":
            reason = f"{server} refused to take the message {how}: {reply}"
        elif status == "accepted":
            reason = f"Delivered to the {self._server_words}: {reply}"
        else:
            reason = f"{server} did not accept the message for {rcpt} {how}: {reply}"
        return RecipientResult(rcpt, status, reason)

    def _after_loss(
        self, recipients: list[str], sender: str, lost: ConnectionLost
    ) -> dict[str, RecipientResult]:
        # Final answers that did arrive stand (an LMTP 250 for the first
        # recipient means it has the message); the rest is tried again.
        words = f"{lost.message} The message stays spooled and will be tried again."
        results = all_with(recipients, "temporary", words)
        for rcpt, verdict in lost.verdicts.items():
            if rcpt in results:
                results[rcpt] = self._result(rcpt, sender, verdict)
        return results
