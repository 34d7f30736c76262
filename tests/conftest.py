"""Fixtures for the whole suite: an isolated home per test, and the real mail servers.

Server fixtures (tests/servers/):
- ``ca_file`` (session): CA certificate (PEM path) that the test servers' certificates chain to.
- ``dovecot`` (function): a fresh private Dovecot per test (starts in ~0.03 s, stops in
  ~0.05 s), so no test sees another's users, messages or UIDLs.
- ``postfix_office`` (function view of a session server): one private Postfix for the session
  (start ~0.4 s), reset before each test: queue drained, Maildirs emptied, default users
  (alice/bob/carol@example.com) only, no deferrals.
- ``postfix_isp`` (function): a fresh private Postfix playing the ISP that holds mail for
  example.com (and held.test) until ETRN, then relays it to ``postfix_office``.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import keyring
import pytest
from keyrings.alt.file import PlaintextKeyring

from tests.servers import require_server
from tests.servers.certs import Certificates, make_certificates
from tests.servers.common import make_root, remove_tree, tail
from tests.servers.dovecot import Dovecot
from tests.servers.postfix import PostfixIsp, PostfixOffice

# Before anything imports Qt or keyring: no display, and never the desktop's real keyring.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["PYTHON_KEYRING_BACKEND"] = "keyrings.alt.file.PlaintextKeyring"

_SERVER_FIXTURES = ("dovecot", "postfix_office", "postfix_isp")


def pytest_configure(config: pytest.Config) -> None:
    # pyproject's norecursedirs replaces pytest's default (".*"), so the hypothesis plugin warns
    # about its .hypothesis cache at collection, which filterwarnings=error makes fatal.
    config.addinivalue_line(
        "filterwarnings", "ignore:Skipping collection of '.hypothesis' directory:UserWarning"
    )


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point HOME and the XDG directories into tmp_path, so no test touches the real home."""
    home = tmp_path / "home"
    dirs = {
        "HOME": home,
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_STATE_HOME": home / ".local" / "state",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(path))
    # A fresh file keyring per test: it finds its file under XDG_DATA_HOME on first use.
    monkeypatch.setattr(keyring.core, "_keyring_backend", None, raising=False)
    keyring.set_keyring(PlaintextKeyring())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When a test fails, show the tail of the logs of the servers it used."""
    report = yield
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name in _SERVER_FIXTURES:
            server = funcargs.get(name)
            if server is not None:
                report.sections.append((f"{name} log", tail(server.log_file, lines=60)))
    return report


@pytest.fixture(scope="session")
def certificates() -> Iterator[Certificates]:
    root = make_root("pb-certs-")
    try:
        yield make_certificates(root)
    finally:
        remove_tree(root)


@pytest.fixture(scope="session")
def ca_file(certificates: Certificates) -> Path:
    return certificates.ca_file


@pytest.fixture
def dovecot(certificates: Certificates) -> Iterator[Dovecot]:
    require_server("dovecot")
    server = Dovecot(certificates=certificates)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _postfix_office_server(certificates: Certificates) -> Iterator[PostfixOffice]:
    require_server("postfix")
    server = PostfixOffice(certificates=certificates)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postfix_office(_postfix_office_server: PostfixOffice) -> PostfixOffice:
    _postfix_office_server.reset()
    return _postfix_office_server


@pytest.fixture
def postfix_isp(certificates: Certificates, postfix_office: PostfixOffice) -> Iterator[PostfixIsp]:
    server = PostfixIsp(certificates=certificates, office_port=postfix_office.smtp_port)
    try:
        server.start()
        yield server
    finally:
        server.stop()
