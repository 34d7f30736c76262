"""The online signal: tell the ISP the office is online so it releases the mail it holds.

Two kinds (see DESIGN.md, "Online signals"):

* ``etrn`` (RFC 1985, :mod:`.etrn`): the ISP then delivers to the office's own
  mail server by itself. Postbridge reports the ISP's answer per domain and,
  when it delivers into Maildir folders it can see and ``watch_seconds`` is
  set, how many messages arrived there afterwards.
* ``atrn`` (RFC 2645, :mod:`.atrn`): the ISP delivers down Postbridge's own
  connection; what arrives is stored in the spool and ledger under the source
  ``signal`` and then delivered by the poll cycle's own pipeline
  (:meth:`deliver_pending`), so routing trace, quarantine, history and
  notifications are the same as for POP3 mail.

:func:`send_signal` is the one entry point; the poll cycle (``Collector``)
calls it and passes itself as the :class:`SignalHost`. Failures never escape
as exceptions: they become the summary's ``error`` in words, like a
mailbox's. Only a configuration without a signal raises (ConfigError).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from postbridge.engine.config import Config, MailboxConfig, SignalConfig, signal_before_poll
from postbridge.engine.delivery.smtpclient import OpenConnection
from postbridge.engine.errors import ConfigError, PostbridgeError
from postbridge.engine.events import (
    EventSink,
    MailboxSummary,
    SignalFinished,
    SignalStarted,
    SignalSummary,
)
from postbridge.engine.secrets import SecretStore
from postbridge.engine.signals.common import SignalNotSupported, SignalRefused, messages
from postbridge.engine.signals.etrn import DomainAnswer, answer, send_etrn
from postbridge.engine.signals.inbound import SESSION_LIMIT, SOURCE, Inbound

if TYPE_CHECKING:  # at run time .atrn loads only when ATRN is sent: it imports aiosmtpd
    from postbridge.engine.signals.atrn import AtrnResult

log = logging.getLogger("postbridge.signal")

WATCH_STEP = 0.5  # seconds between looks at the Maildir folders after ETRN
WATCH_QUIET = 2.0  # once mail has arrived, this long without more ends the watch
WATCH_FILE_LIMIT = 200_000  # a bound on one look, whatever the folders hold


class SignalHost(Inbound, Protocol):
    """What the signal needs from the poll cycle: store arrivals, then deliver them."""

    async def deliver_pending(self, mailbox: MailboxConfig, summary: MailboxSummary) -> None: ...


def signal_mailbox(cfg: SignalConfig) -> MailboxConfig:
    """The pseudo-mailbox ATRN mail is delivered as (ledger source ``signal``)."""
    return MailboxConfig(
        name=SOURCE,
        kind="global",
        host=cfg.host,
        port=cfg.port,
        security=cfg.security,
        username=cfg.username,
        local_domains=tuple(d.lstrip("@#") for d in cfg.domains),
    )


def _require(config: Config) -> SignalConfig:
    cfg = config.signal
    if cfg is None or not cfg.enabled:
        raise ConfigError(
            f"No online signal is configured in {config.path}; add a [signal] section with "
            'kind = "etrn" or kind = "atrn" (see the README).'
        )
    return cfg


def _fail(summary: SignalSummary, error: PostbridgeError) -> None:
    log.warning("signal: %s", error.describe())
    summary.error = str(error)
    summary.error_transient = error.transient
    summary.error_needs_user = error.needs_user


def failed_signal(config: Config, error: PostbridgeError, *, events: EventSink) -> SignalSummary:
    """The summary (and events) of a signal that could not even start (say, lock held)."""
    cfg = _require(config)
    summary = SignalSummary(kind=cfg.kind, server=f"{cfg.host}:{cfg.port}")
    events(SignalStarted(summary.kind, summary.server))
    _fail(summary, error)
    summary.words = summary.error or ""
    events(SignalFinished(summary))
    return summary


async def send_signal(
    config: Config,
    *,
    host: SignalHost,
    secrets: SecretStore,
    events: EventSink,
    open_connection: OpenConnection | None = None,
    session_limit: float = SESSION_LIMIT,
) -> SignalSummary:
    """Send the configured signal once; ATRN mail is stored and delivered before returning."""
    cfg = _require(config)
    summary = SignalSummary(kind=cfg.kind, server=f"{cfg.host}:{cfg.port}")
    events(SignalStarted(summary.kind, summary.server))
    try:
        if cfg.kind == "etrn":
            await _etrn(config, cfg, summary, secrets=secrets, open_connection=open_connection)
        else:
            from postbridge.engine.signals.atrn import run_atrn

            result = await run_atrn(
                cfg,
                password=secrets.require(cfg.secret_account),
                inbound=host,
                events=events,
                open_connection=open_connection,
                session_limit=session_limit,
            )
            _atrn_outcome(summary, result)
    except PostbridgeError as error:
        _fail(summary, error)
    except Exception as error:  # a bug: keep the traceback, report it in words
        log.exception("signal: internal error")
        summary.error = (
            f"Postbridge hit an internal error while sending the {cfg.kind.upper()} signal "
            f"({type(error).__name__}: {error}); see the log file."
        )
    if cfg.kind == "atrn":
        # Always, even after a failure: what was acknowledged is in the spool, and
        # leftovers of an earlier session (a crash, a 4xx from the office) go too.
        try:
            await host.deliver_pending(signal_mailbox(cfg), summary.delivery)
        except PostbridgeError as error:
            summary.delivery.error = str(error)
            if summary.error is None:
                _fail(summary, error)
    summary.words = describe(summary)
    events(SignalFinished(summary))
    return summary


# -- ETRN ------------------------------------------------------------------------------


async def _etrn(
    config: Config,
    cfg: SignalConfig,
    summary: SignalSummary,
    *,
    secrets: SecretStore,
    open_connection: OpenConnection | None,
) -> None:
    password = secrets.require(cfg.secret_account) if cfg.username else None
    watch = cfg.watch_seconds > 0 and config.delivery.kind == "maildir"
    root = config.maildir_root
    before = await asyncio.to_thread(_maildir_files, root) if watch else set()
    answers = await send_etrn(cfg, password=password, open_connection=open_connection)
    _etrn_outcome(summary, answers)
    if watch and any(a.outcome == "started" for a in answers):
        summary.watched = await _watch(root, before, seconds=cfg.watch_seconds)


def _etrn_outcome(summary: SignalSummary, answers: tuple[DomainAnswer, ...]) -> None:
    summary.domains = {a.domain: a.words for a in answers}
    summary.no_mail = bool(answers) and all(a.outcome == "nothing" for a in answers)
    failed = [a for a in answers if not a.ok]
    if not failed:
        return
    temporary = all(a.temporary for a in failed)
    unsupported = all(a.outcome == "unsupported" for a in failed)
    text = "; ".join(a.words for a in failed)
    error: PostbridgeError
    if unsupported:
        error = SignalNotSupported(f"ETRN was not accepted: {text}.")
    else:
        error = SignalRefused(f"ETRN was refused: {text}.", temporary=temporary)
    _fail(summary, error)


def _maildir_files(root: Path) -> set[str]:
    """Every message file under ``root``'s Maildirs (``new/`` and ``cur/``), flags stripped."""
    found: set[str] = set()
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) in ("new", "cur"):
            parent = os.path.dirname(dirpath)
            # A mail client moves new/X to cur/X:2,S: the same message.
            found.update(f"{parent}/{name.partition(':')[0]}" for name in filenames)
            dirnames.clear()
        if len(found) > WATCH_FILE_LIMIT:
            break
    return found


async def _watch(root: Path, before: set[str], *, seconds: float) -> int:
    """Count messages appearing in the Maildirs within ``seconds`` (quiet ends it early)."""
    start = time.monotonic()
    deadline = start + seconds
    seen = 0
    last_change = start
    while time.monotonic() < deadline:  # bounded by the deadline
        await asyncio.sleep(min(WATCH_STEP, max(0.0, deadline - time.monotonic())))
        now = len(await asyncio.to_thread(_maildir_files, root) - before)
        if now != seen:
            seen, last_change = now, time.monotonic()
        elif seen and time.monotonic() - last_change >= WATCH_QUIET:
            break
    return seen


# -- ATRN ------------------------------------------------------------------------------


def _atrn_outcome(summary: SignalSummary, result: AtrnResult) -> None:
    summary.reply = str(result.reply)
    summary.no_mail = result.no_mail
    summary.arrived = len(result.arrived)
    summary.refused = tuple(result.refused)
    if result.error is not None:
        _fail(summary, result.error)


# -- words -----------------------------------------------------------------------------


def describe(summary: SignalSummary) -> str:
    """The outcome in one or two sentences, for the CLI, the tray and the history."""
    if summary.kind == "etrn":
        return _describe_etrn(summary)
    return _describe_atrn(summary)


def _describe_etrn(summary: SignalSummary) -> str:
    if not summary.domains:  # nothing was asked: connecting failed
        return summary.error or "ETRN was not sent."
    head = f"ETRN sent to {summary.server}"
    if summary.no_mail:
        head += ": no mail waiting"
    words = f"{head} — " + "; ".join(summary.domains.values()) + "."
    if summary.watched is not None:
        if summary.watched:
            words += f" {messages(summary.watched)} arrived in the Maildir folders."
        else:
            words += " No new mail appeared in the Maildir folders while Postbridge watched."
    return words


def _describe_atrn(summary: SignalSummary) -> str:
    d = summary.delivery
    parts: list[str] = []
    if summary.no_mail:
        parts.append(f"No mail waiting at the ISP ({summary.server}: {summary.reply}).")
    elif summary.arrived or d.delivered or d.quarantined or d.deferred:
        arrived = f"{messages(summary.arrived)} arrived by ATRN"
        if d.delivered == summary.arrived and not (d.quarantined or d.deferred):
            parts.append(f"{arrived} and {'was' if d.delivered == 1 else 'were'} delivered.")
        else:
            counts = [f"{d.delivered} delivered"]
            if d.quarantined:
                counts.append(f"{d.quarantined} quarantined (see: postbridge quarantine list)")
            if d.deferred:
                counts.append(f"{d.deferred} waiting for a retry")
            parts.append(f"{arrived}; " + ", ".join(counts) + ".")
    elif summary.error is None:
        parts.append(f"The ISP ({summary.server}) accepted ATRN but sent no mail.")
    if summary.refused:
        shown = ", ".join(summary.refused[:5]) + (", ..." if len(summary.refused) > 5 else "")
        parts.append(
            f"Refused {len(summary.refused)} recipient(s) outside the requested domains: {shown}."
        )
    if summary.error is not None:
        parts.append(summary.error if not parts else f"Then: {summary.error}")
    if d.error and d.error != summary.error:
        parts.append(f"Delivery failed: {d.error}")
    return " ".join(parts)


__all__ = [
    "SOURCE",
    "DomainAnswer",
    "SignalHost",
    "SignalNotSupported",
    "SignalRefused",
    "answer",
    "describe",
    "failed_signal",
    "send_signal",
    "signal_before_poll",
    "signal_mailbox",
]
