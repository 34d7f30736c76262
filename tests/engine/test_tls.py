"""TLS contexts: always verifying, a CA file adds trust, a bad one is an error in words."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from postbridge.engine import cycle
from postbridge.engine.config import MailboxConfig
from postbridge.engine.cycle import Collector
from postbridge.engine.errors import TLSError
from postbridge.engine.tls import client_context


def test_verifies_and_adds_the_ca_file(tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    context = client_context(pem)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    subjects = [c["subject"] for c in context.get_ca_certs()]
    assert any("trustme" in str(s) for s in subjects)
    assert client_context(None).verify_mode == ssl.CERT_REQUIRED


def test_unreadable_ca_file_is_a_tls_error_in_words(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("hello")
    with pytest.raises(TLSError, match=r"CA file .*not-a-cert.pem chosen for the office"):
        client_context(bad, used_for="the office server")


def test_only_a_mailbox_with_tls_reads_the_trust_store(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[Path | None] = []

    def counting(ca_file: Path | None) -> ssl.SSLContext:
        read.append(ca_file)
        return ssl.create_default_context()

    monkeypatch.setattr(cycle, "make_ssl_context", counting)
    for security in ("none", "starttls", "tls"):
        box = MailboxConfig(
            name=security,
            kind="user",
            host="pop.example",
            port=110,
            security=security,
            username="u",
        )
        Collector.pop3_for(box)
    assert read == [None, None]  # starttls and tls; the plaintext mailbox costs nothing
