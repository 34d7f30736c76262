"""Real mail servers for the tests: private Dovecot and Postfix instances on loopback ports.

Protocol code is tested against the servers our users' ISPs and offices run, not only against
fakes (see DESIGN.md, "Testing with real servers"). On a developer's laptop without them the
interop tests skip with a reason that says what to install; in CI (``CI=true``) a missing
server is a failure, so a broken ``.ci/run`` cannot turn the interop suite into silent skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# name -> (files that must exist, Debian packages that provide them)
_SERVERS: dict[str, tuple[tuple[str, ...], str]] = {
    "dovecot": (
        ("/usr/sbin/dovecot", "/usr/lib/dovecot/pop3", "/usr/lib/dovecot/lmtp"),
        "dovecot-pop3d dovecot-lmtpd",
    ),
    "postfix": (("/usr/sbin/postfix", "/usr/sbin/postmap"), "postfix"),
    "fetchmail": (("/usr/bin/fetchmail",), "fetchmail"),
}


def require_server(name: str) -> None:
    """Skip the calling test (fail it under ``CI=true``) unless server ``name`` can run here.

    The private servers need the Debian packages and root: their masters bind ports and then
    switch to the mail user, exactly as in production.
    """
    try:
        files, packages = _SERVERS[name]
    except KeyError:
        raise ValueError(f"unknown test server {name!r}; known: {sorted(_SERVERS)}") from None
    missing = [path for path in files if not Path(path).exists()]
    reason = ""
    if missing:
        reason = (
            f"{name} is not installed (missing {', '.join(missing)}): install Debian's "
            f"{packages} (apt-get install {packages}, as .ci/run does)"
        )
    elif os.geteuid() != 0:
        reason = (
            f"{name} test servers need root (the master binds ports, then switches to the "
            "test mail user); run the interop tests as root, e.g. in a container or via .ci/run"
        )
    if not reason:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)
