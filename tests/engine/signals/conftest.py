"""Fixtures for the online signal tests: a server TLS context and a config writer."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from postbridge.engine import config as configmod
from postbridge.engine.secrets import SecretStore
from tests.servers.certs import Certificates

PASSWORD = "odmr-secret"

ConfigWriter = Callable[..., configmod.Config]


@pytest.fixture
def server_tls(certificates: Certificates) -> ssl.SSLContext:
    """What the fake servers present: the test certificate for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.cert_file, certificates.key_file)
    return context


@pytest.fixture
def secrets() -> SecretStore:
    store = SecretStore()
    store.set("signal", PASSWORD)
    return store


@pytest.fixture
def write_config(tmp_path: Path, ca_file: Path) -> ConfigWriter:
    """``write_config(port, kind="atrn", **signal_keys)``: a config with a [signal] section."""

    def write(
        port: int, *, kind: str = "atrn", extra: str = "", **keys: object
    ) -> configmod.Config:
        settings: dict[str, object] = {
            "kind": kind,
            "host": "127.0.0.1",
            "port": port,
            "security": "starttls",
            "domains": ["example.com"],
            "ca_file": str(ca_file),
            "timeout": 5,
        }
        if kind == "atrn":
            settings["username"] = "example.com"
        settings.update(keys)
        lines = [f'data_dir = "{tmp_path / "data"}"', extra, "[signal]"]
        for key, value in settings.items():
            lines.append(f"{key} = {value!r}".replace("'", '"').replace("True", "true"))
        path = tmp_path / "postbridge.toml"
        path.write_text("\n".join(lines) + "\n")
        return configmod.load(path)

    return write


def maildir(config: configmod.Config, address: str) -> list[bytes]:
    """The messages delivered to ``address`` in the default Maildir target."""
    root = config.maildir_root / address
    files = sorted((root / "new").glob("*")) + sorted((root / "cur").glob("*"))
    return [f.read_bytes() for f in files]
