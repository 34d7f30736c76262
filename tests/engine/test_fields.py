"""Single-field checks: what the dialog accepts, the config loader accepts too."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postbridge.engine import config as configmod
from postbridge.engine import fields


@pytest.mark.parametrize("host", ["pop.isp.example", "localhost", "127.0.0.1", "::1", "a-b.c_d.e"])
def test_good_hosts(host: str) -> None:
    assert fields.check_host(host) is None


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("", "Enter the name"),
        ("pop isp", "not a server name"),
        ("alice@isp.example", "not a server name"),
        ("http://pop.isp", "not a server name"),
        ("-bad.example", "not a valid server name"),
    ],
)
def test_bad_hosts(host: str, words: str) -> None:
    assert words in (fields.check_host(host) or "")


def test_ports() -> None:
    assert fields.check_port(995) is None
    assert "1 to 65535" in (fields.check_port(0) or "")
    assert fields.check_port(70000)


def test_addresses_and_domains() -> None:
    assert fields.check_address("alice@example.com") is None
    assert "not an e-mail address" in (fields.check_address("alice") or "")
    assert "Enter" in (fields.check_address("") or "")
    assert fields.check_domain("example.com") is None
    assert "only the part after @" in (fields.check_domain("a@example.com") or "")
    assert fields.check_domains([]) is not None
    assert fields.check_domains([], required=False) is None


def test_split_list() -> None:
    assert fields.split_list(" a.example, b.example;c.example\nd ") == [
        "a.example",
        "b.example",
        "c.example",
        "d",
    ]


def test_mailbox_names() -> None:
    assert fields.check_mailbox_name("office") is None
    assert "reserved" in (fields.check_mailbox_name("signal") or "")
    assert "no spaces" in (fields.check_mailbox_name("my box") or "")
    assert "already" in (fields.check_mailbox_name("a", taken=["a"]) or "")


def test_map_sources_must_lie_in_the_local_domains() -> None:
    domains = ["example.com"]
    assert fields.check_map_source("sales@example.com", domains) is None
    assert fields.check_map_source("*@example.com", domains) is None
    assert "not one of the local domains" in (
        fields.check_map_source("sales@other.example", domains) or ""
    )
    assert "not an address" in (fields.check_map_source("sales", domains) or "")
    assert fields.check_map_targets(["a@example.com", "b@x.example"]) is None
    assert fields.check_map_targets([]) is not None


def test_ca_file(tmp_path: Path, ca_file: Path) -> None:
    assert fields.check_ca_file("") is None
    assert fields.check_ca_file(str(ca_file)) is None
    assert "no file" in (fields.check_ca_file(str(tmp_path / "nope.pem")) or "")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    assert "not a certificate file" in (fields.check_ca_file(str(junk)) or "")


def test_folder(tmp_path: Path) -> None:
    assert fields.check_folder(str(tmp_path / "new")) is None
    assert fields.check_folder("relative/path") is not None
    afile = tmp_path / "f"
    afile.write_text("")
    assert "is a file" in (fields.check_folder(str(afile)) or "")


@given(st.text(max_size=40))
def test_an_address_the_field_accepts_loads_as_a_recipient(text: str) -> None:
    if fields.check_address(text) is not None or '"' in text or "\\" in text:
        return
    toml = f'[[mailbox]]\nname = "a"\nhost = "h"\nusername = "u"\nrecipient = "{text.strip()}"\n'
    try:
        configmod.parse(toml, path=Path("t.toml"))
    except configmod.ConfigError as error:  # only TOML escaping may fail, not the address
        assert "not valid TOML" in str(error)
