"""The one way Postbridge builds a TLS client context.

Verification is always on (CERT_REQUIRED, host name checked) against the
system's trust store; a ``ca_file`` from the config is an *extra* trust anchor
for an ISP or office server with its own certificate authority, never a
replacement for the system store. A CA file that cannot be read is a
:class:`TLSError` in words, not a traceback.

Reading the system's trust store costs ~50 ms, so contexts are shared (per CA
file and its modification time); nothing modifies a context after it is made.
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
from pathlib import Path

from postbridge.engine.errors import TLSError


def client_context(
    ca_file: str | os.PathLike[str] | None, *, used_for: str = "this server"
) -> ssl.SSLContext:
    """A verifying client context; ``used_for`` names the server in the error message."""
    path = Path(ca_file) if ca_file is not None else None
    stamp = None
    if path is not None:
        with contextlib.suppress(OSError):
            stamp = path.stat().st_mtime_ns
    try:
        return _context(path, stamp)
    except (OSError, ssl.SSLError) as error:
        raise TLSError(
            f"The CA file {path} chosen for {used_for} could not be read as a certificate.",
            detail=str(error),
        ) from error


@functools.lru_cache(maxsize=8)
def _context(ca_file: Path | None, stamp: int | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context
