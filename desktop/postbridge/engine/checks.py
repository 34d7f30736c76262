"""One-off checks behind the settings dialog's Test and Detect buttons.

Each takes settings that are not saved yet (a mailbox, a delivery target, a
signal being typed in) and a password that may not be in the keyring yet, talks
to the server, changes nothing, and returns a sentence for the user; a failure
raises the usual :class:`PostbridgeError` whose ``str()`` is the sentence.

Nothing here writes: the POP3 check ends with QUIT after STAT (no DELE was
sent, so nothing is deleted), the delivery check is the target's own
``check()``, the ETRN check sends ETRN itself (harmless: the ISP then delivers
to the office server as it would after a poll), and the ATRN check stops
after logging in. Sending ATRN would make the ISP hand its mail down this very
connection, and a dialog is no place to receive it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from postbridge.engine.config import Config, DeliveryConfig, MailboxConfig, SignalConfig
from postbridge.engine.cycle import Collector
from postbridge.engine.delivering import make_target
from postbridge.engine.errors import PostbridgeError
from postbridge.engine.preview import suggest
from postbridge.engine.routing.router import EnvelopeSuggestion
from postbridge.engine.secrets import SecretStore
from postbridge.engine.signals.common import SignalNotSupported, SignalRefused, make_client
from postbridge.engine.signals.etrn import send_etrn


class PendingSecrets(SecretStore):
    """The keyring, with passwords typed into the dialog but not saved yet taking precedence."""

    def __init__(self, typed: Mapping[str, str], base: SecretStore | None = None) -> None:
        super().__init__((base or SecretStore()).service)
        self.typed = dict(typed)

    def get(self, account: str) -> str | None:
        if account in self.typed:
            return self.typed[account]
        return super().get(account)

    def set(self, account: str, password: str) -> None:  # a check never stores anything
        self.typed[account] = password

    def delete(self, account: str) -> bool:
        return self.typed.pop(account, None) is not None


def _size(octets: int) -> str:
    if octets < 1_000_000:
        return f"{octets / 1000:.0f} kB"
    return f"{octets / 1_000_000:.1f} MB"


async def check_pop3(mailbox: MailboxConfig, password: str) -> str:
    """Log in, STAT, QUIT (no DELE): say how it went and what is waiting."""
    client = Collector.pop3_for(mailbox)
    try:
        await client.connect()
        await client.login(mailbox.username, password, method=mailbox.auth)
        count, octets = await client.stat()
        expire = client.capabilities.expire
        await client.quit()
    finally:
        await client.close()
    how = "over an encrypted connection" if client.encrypted else "without encryption"
    waiting = "is empty" if count == 0 else f"holds {count} message(s), {_size(octets)}"
    words = (
        f"Logged in to {mailbox.host}:{mailbox.port} as {mailbox.username} {how}. "
        f"The mailbox {waiting}. Nothing was downloaded or deleted."
    )
    if expire == "0" and mailbox.leave_on_server_days > 0:
        words += " Note: this ISP deletes mail as soon as it is downloaded (EXPIRE 0)."
    return words


async def check_delivery(config: Config, secrets: SecretStore) -> str:
    """The delivery target's own check (connect, TLS, login; or a writable folder)."""
    target = make_target(config, secrets)
    try:
        return await target.check()
    finally:
        await target.aclose()


async def check_signal(cfg: SignalConfig, password: str | None) -> str:
    """ETRN: send it and report the ISP's answers. ATRN: log in and look for ATRN only."""
    if cfg.kind == "etrn":
        return await _check_etrn(cfg, password)
    if cfg.kind == "atrn":
        return await _check_atrn(cfg, password)
    return "No online signal is chosen, so there is nothing to test."


async def _check_etrn(cfg: SignalConfig, password: str | None) -> str:
    answers = await send_etrn(cfg, password=password if cfg.username else None)
    text = "; ".join(a.words for a in answers)
    failed = [a for a in answers if not a.ok]
    if failed and all(a.outcome == "unsupported" for a in failed):
        raise SignalNotSupported(f"ETRN was not accepted: {text}.")
    if failed:
        temporary = all(a.reply.is_temporary for a in failed)
        raise SignalRefused(f"ETRN was refused: {text}.", temporary=temporary)
    return f"ETRN sent to {cfg.host}:{cfg.port} — {text}."


async def _check_atrn(cfg: SignalConfig, password: str | None) -> str:
    if not password:
        raise PostbridgeError("Enter the password of the ISP login first.")
    client = make_client(cfg, password=password)
    try:
        await client.connect()  # EHLO, STARTTLS, AUTH
        if "ATRN" not in client.extensions:
            raise SignalNotSupported(
                f"Logged in to {client.where}, but the server does not offer ATRN. "
                "Check the port (366 is usual) and the signal kind with the ISP.",
                detail=f"EHLO keywords: {' '.join(sorted(client.extensions)) or '(none)'}",
            )
        how = f"encrypted ({client.tls_version})" if client.tls_version else "not encrypted"
    finally:
        await client.quit()
    return (
        f"Logged in to the ISP's ODMR server at {client.where} as {cfg.username}, {how}; "
        "it offers ATRN. The mail it holds will be fetched at the next poll."
    )


async def detect_envelope(
    mailbox: MailboxConfig, password: str, *, count: int = 20
) -> EnvelopeSuggestion:
    """Read the headers of the newest messages (TOP only) and suggest the envelope header."""
    # preview.suggest looks the mailbox up in a Config; nothing else of it is used.
    config = Config(
        path=Path("unsaved.toml"), data_dir=Path(), delivery=DeliveryConfig(), mailboxes=(mailbox,)
    )
    secrets = PendingSecrets({mailbox.secret_account: password})
    return await suggest(
        config, mailbox.name, secrets=secrets, factory=Collector.pop3_for, count=count
    )
