"""Logging: one named logger per area, a rotating file in the log directory.

Passwords never reach a log: protocol modules redact their own traffic, and
:class:`RedactingFilter` is a second line of defence at the handler that masks
the arguments of ``PASS``, ``APOP`` and ``AUTH`` lines wherever they appear.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
from pathlib import Path

_SECRET_RE = re.compile(r"(?i)\b(PASS|APOP\s+\S+|AUTH\s+\S+)\s+\S+")


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_RE.sub(lambda m: f"{m.group(1)} **REDACTED**", message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


def setup(log_dir: Path | None, *, verbose: bool = False) -> Path | None:
    """Log to ``<log_dir>/postbridge.log`` (rotated) and WARNING+ to stderr (DEBUG if verbose)."""
    root = logging.getLogger("postbridge")
    # No lower than the handlers need: a DEBUG logger level would make every
    # guarded ``logger.debug`` (one per POP3 reply) build a record nobody keeps.
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    redactor = RedactingFilter()
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.addFilter(redactor)
    root.addHandler(console)
    log_file: Path | None = None
    if log_dir is not None:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            log_file = log_dir / "postbridge.log"
            handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=2_000_000, backupCount=5, encoding="utf-8"
            )
            handler.setLevel(logging.INFO if not verbose else logging.DEBUG)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            handler.addFilter(redactor)
            root.addHandler(handler)
        except OSError:
            log_file = None
    return log_file


def shutdown() -> None:
    """Close the handlers :func:`setup` installed (end of a CLI command)."""
    root = logging.getLogger("postbridge")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
