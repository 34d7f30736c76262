"""The config file: a valid file loads completely; every mistake names file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from postbridge.engine import config as configmod
from postbridge.engine.errors import ConfigError

FULL = """
data_dir = "{data}"
[delivery]
kind = "smtp"
host = "mail.office.lan"
port = 2525
security = "starttls"
username = "collector"

[schedule]
interval_minutes = 5

[[mailbox]]
name = "alice"
kind = "user"
host = "pop.isp.example"
port = 995
security = "tls"
username = "alice@isp.example"
recipient = "Alice@Example.com"
leave_on_server_days = 7

[[mailbox]]
name = "office"
kind = "global"
host = "pop.isp.example"
security = "starttls"
username = "company@isp.example"
local_domains = ["example.com"]
envelope_header = "Delivered-To"
postmaster = "admin@example.com"
[mailbox.map]
"sales@example.com" = ["alice@example.com", "bob@example.com"]
"*@example.com" = "admin@example.com"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "postbridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_full_example_loads(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.format(data=tmp_path / "data"))
    cfg = configmod.load(path)
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.delivery.kind == "smtp" and cfg.delivery.port == 2525
    assert cfg.schedule.interval_minutes == 5
    alice, office = cfg.mailboxes
    assert alice.recipient == "alice@example.com"
    assert alice.leave_on_server_days == 7
    assert office.port == 110  # starttls default
    assert office.address_map["sales@example.com"] == ("alice@example.com", "bob@example.com")
    assert office.address_map["*@example.com"] == ("admin@example.com",)


def test_round_trip_through_save(tmp_path: Path) -> None:
    cfg = configmod.load(write(tmp_path, FULL.format(data=tmp_path / "data")))
    out = configmod.save(cfg, tmp_path / "copy.toml")
    again = configmod.load(out)
    assert again.mailboxes == cfg.mailboxes
    assert again.delivery == cfg.delivery
    assert "password" not in out.read_text()


def test_save_keeps_timeouts_and_delete_batch(tmp_path: Path) -> None:
    text = FULL.format(data=tmp_path / "data").replace(
        'username = "collector"', 'username = "collector"\ntimeout = 10'
    )
    text = text.replace(
        "leave_on_server_days = 7", "leave_on_server_days = 7\ntimeout = 5\ndelete_batch = 50"
    )
    cfg = configmod.load(write(tmp_path, text))
    again = configmod.load(configmod.save(cfg, tmp_path / "copy.toml"))
    assert again.delivery.timeout == 10
    assert (again.mailboxes[0].timeout, again.mailboxes[0].delete_batch) == (5, 50)
    assert again.mailboxes == cfg.mailboxes


def test_minimal_defaults_to_maildir(tmp_path: Path) -> None:
    cfg = configmod.load(write(tmp_path, ""))
    assert cfg.delivery.kind == "maildir"
    assert cfg.mailboxes == ()
    assert cfg.maildir_root == cfg.data_dir / "Mail"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[mailbox]]\nname = "a"\nhost = "h"\nusername = "u"\n', "recipient"),
        (
            '[[mailbox]]\nname = "a"\nhost = "h"\nusername = "u"\nrecipient = "a@b.c"\nport = 0\n',
            "port",
        ),
        (
            '[[mailbox]]\nname = "a"\nhost = "h"\nusername = "u"\nrecipient = "a@b.c"\n'
            'security = "ssl"\n',
            '"tls", "starttls", "none"',
        ),
        (
            '[[mailbox]]\nname = "a"\nhost = "h"\nusername = "u"\nrecipient = "a@b.c"\n'
            "leave_on_server_dys = 3\n",
            "did you mean “leave_on_server_days”",
        ),
        ('[delivery]\nkind = "smtp"\n', "host"),
        ("data_dir = [\n", "not valid TOML"),
        (
            '[[mailbox]]\nname = "signal"\nhost = "h"\nusername = "u"\nrecipient = "a@b.c"\n',
            "name",
        ),
        (
            '[[mailbox]]\nname = "o"\nkind = "global"\nhost = "h"\nusername = "u"\n',
            "local_domains",
        ),
    ],
)
def test_errors_name_file_key_and_fix(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        configmod.load(path)
    message = str(info.value)
    assert str(path) in message
    assert words in message


def test_duplicate_names_rejected(tmp_path: Path) -> None:
    box = '[[mailbox]]\nname = "a"\nhost = "h"\nusername = "u"\nrecipient = "a@b.c"\n'
    with pytest.raises(ConfigError, match="two mailboxes are named"):
        configmod.load(write(tmp_path, box + box))


def test_missing_file_says_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no configuration file at"):
        configmod.load(tmp_path / "nope.toml")


def test_env_selects_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "")
    monkeypatch.setenv("POSTBRIDGE_CONFIG", str(path))
    assert configmod.load().path == path


# -- [signal] ---------------------------------------------------------------------------------

SIGNAL = """
[signal]
kind = "{kind}"
host = "mail.isp.example"
domains = ["Example.com", "example.org"]
username = "example.com"
"""


def test_no_signal_section_means_no_signal(tmp_path: Path) -> None:
    assert configmod.load(write(tmp_path, "")).signal is None


@pytest.mark.parametrize(("kind", "port"), [("etrn", 25), ("atrn", 366)])
def test_signal_defaults(tmp_path: Path, kind: str, port: int) -> None:
    cfg = configmod.load(write(tmp_path, SIGNAL.format(kind=kind)))
    sig = cfg.signal
    assert sig is not None and sig.enabled
    assert sig.kind == kind and sig.port == port
    assert sig.security == "starttls" and sig.when == "before-poll"
    assert sig.domains == ("example.com", "example.org")
    assert sig.timeout == 60 and sig.ca_file is None
    assert sig.secret_account == "signal"


def test_signal_round_trip_through_save(tmp_path: Path) -> None:
    text = SIGNAL.format(kind="atrn") + (
        'security = "tls"\nport = 1366\nwhen = "interval"\ninterval_minutes = 5\n'
        "timeout = 20\nallow_plaintext_login = true\n"
        f'ca_file = "{tmp_path / "ca.pem"}"\n'
    )
    (tmp_path / "ca.pem").write_text("not read at load time")
    cfg = configmod.load(write(tmp_path, text))
    out = configmod.save(cfg, tmp_path / "copy.toml")
    again = configmod.load(out)
    assert again.signal == cfg.signal
    assert again.signal is not None and again.signal.port == 1366
    assert "password" not in out.read_text()


def test_signal_none_keeps_its_settings(tmp_path: Path) -> None:
    cfg = configmod.load(write(tmp_path, SIGNAL.format(kind="none")))
    assert cfg.signal is not None and not cfg.signal.enabled
    again = configmod.load(configmod.save(cfg, tmp_path / "copy.toml"))
    assert again.signal == cfg.signal


def test_etrn_accepts_the_rfc_1985_forms(tmp_path: Path) -> None:
    text = '[signal]\nkind = "etrn"\nhost = "h"\ndomains = ["@example.com", "#office"]\n'
    sig = configmod.load(write(tmp_path, text)).signal
    assert sig is not None and sig.domains == ("@example.com", "#office")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[signal]\nkind = "turn"\n', '"none", "etrn", "atrn"'),
        ('[signal]\nkind = "etrn"\ndomains = ["example.com"]\n', "key “host” is missing"),
        ('[signal]\nkind = "etrn"\nhost = "h"\n', "must list the domains"),
        ('[signal]\nkind = "etrn"\nhost = "h"\ndomains = "example.com"\n', "must list"),
        ('[signal]\nkind = "etrn"\nhost = "h"\ndomains = ["exa mple"]\n', "not a domain name"),
        ('[signal]\nkind = "atrn"\nhost = "h"\ndomains = ["example.com"]\n', "username"),
        (
            '[signal]\nkind = "atrn"\nhost = "h"\nusername = "u"\ndomains = ["@example.com"]\n',
            "ATRN takes plain domain names",
        ),
        (
            '[signal]\nkind = "etrn"\nhost = "h"\ndomains = ["example.com"]\nwhen = "always"\n',
            '"before-poll", "interval"',
        ),
        (
            '[signal]\nkind = "etrn"\nhost = "h"\ndomains = ["example.com"]\nport = 70000\n',
            "port",
        ),
        (
            '[signal]\nkind = "etrn"\nhost = "h"\ndomains = ["example.com"]\ndomain = "x"\n',
            "did you mean “domains”",
        ),
        ('signal = "etrn"\n', "[signal] must be a table"),
    ],
)
def test_signal_errors_name_file_key_and_fix(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        configmod.load(path)
    assert str(path) in str(info.value)
    assert words in str(info.value)
