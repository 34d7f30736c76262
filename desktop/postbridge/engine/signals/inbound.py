"""What the poll cycle needs to know of ATRN without loading it: where its mail goes.

:mod:`.atrn` imports aiosmtpd (its server half), which costs a noticeable part
of a headless ``postbridge poll --once`` start-up. The poll cycle names the
ledger source of ATRN mail and is itself the :class:`Inbound` on every run, ATRN
configured or not, so those two live here and :mod:`.atrn` loads only when an
ATRN signal is actually sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from postbridge.engine.config import SIGNAL_SOURCE

SOURCE = SIGNAL_SOURCE  # the ledger source of mail that arrives by ATRN (a reserved name)
SESSION_LIMIT = 2 * 3600.0  # the whole reversed session; the idle timeout is cfg.timeout


class Inbound(Protocol):
    """Where received mail goes: the poll cycle's spool and ledger (Collector)."""

    stop_requested: bool

    def spool_inbound(
        self,
        *,
        source: str,
        data: bytes,
        envelope_from: str,
        recipients: Sequence[str],
        route_note: str,
    ) -> int: ...
