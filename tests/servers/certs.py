"""A throw-away certificate authority and a server certificate for the private test servers.

Clients under test must verify certificates exactly as they would against a real ISP, so the
servers present a certificate for ``localhost`` and ``127.0.0.1`` signed by a CA that only the
tests trust (``ca_file``). fetchmail matches DNS names only, hence both names in the SAN, and it
refuses a certificate without a subject CommonName ("Server name not specified"), hence the CN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Certificates:
    """PEM files on disk: ``ca_file`` for clients, cert/key for the servers."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_certificates(directory: Path) -> Certificates:
    """Write a new CA and a server certificate (localhost, 127.0.0.1) as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
    certs = Certificates(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server-chain.pem",
        key_file=directory / "server.key",
    )
    ca.cert_pem.write_to_path(str(certs.ca_file))
    # Leaf first, then the CA: the servers send the whole chain.
    server.cert_chain_pems[0].write_to_path(str(certs.cert_file))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(certs.cert_file), append=True)
    server.private_key_pem.write_to_path(str(certs.key_file))
    certs.key_file.chmod(0o600)
    certs.ca_file.chmod(0o644)
    certs.cert_file.chmod(0o644)
    return certs
