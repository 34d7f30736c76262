"""Fixtures for the POP3 client tests: certificates and a client factory."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trustme

from postbridge.engine.pop3.client import Pop3Client
from tests.fakes.pop3 import FakePop3Server

# Small, so fault tests (stalls) finish quickly.
FAST_TIMEOUT = 0.5


@dataclass(frozen=True)
class Certs:
    """A private CA, a server context holding a cert it issued, and a client trusting it."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    untrusting_client: ssl.SSLContext


@pytest.fixture(scope="session")
def certs() -> Certs:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    other_ca = trustme.CA()
    untrusting = ssl.create_default_context()
    other_ca.configure_trust(untrusting)
    return Certs(server=server, client=client, untrusting_client=untrusting)


ClientFactory = Callable[..., Pop3Client]


@pytest.fixture
def make_client() -> ClientFactory:
    """Build a client for a fake server; plain connection and fast timeout by default."""

    def factory(server: FakePop3Server, **overrides: Any) -> Pop3Client:
        options: dict[str, Any] = {
            "host": server.host,
            "port": server.port,
            "security": "none",
            "timeout": FAST_TIMEOUT,
            "allow_plaintext_login": True,
            "label": "office@isp",
        }
        options.update(overrides)
        return Pop3Client(**options)

    return factory
