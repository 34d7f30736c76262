"""Saving settings: the file the dialog writes loads, and passwords follow their mailboxes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from postbridge.engine import config as configmod
from postbridge.engine.configure import PasswordChanges, checked, save_settings, to_toml
from postbridge.engine.errors import ConfigError, SecretError
from postbridge.engine.secrets import SecretStore

TEXT = """
[[mailbox]]
name = "alice"
host = "pop.isp.example"
username = "alice"
recipient = "alice@example.com"

[[mailbox]]
name = "bob"
host = "pop.isp.example"
username = "bob"
recipient = "bob@example.com"
"""


def load(tmp_path: Path) -> configmod.Config:
    path = tmp_path / "postbridge.toml"
    path.write_text(TEXT)
    return configmod.load(path)


def test_rename_moves_remove_deletes_new_is_stored(tmp_path: Path) -> None:
    config = load(tmp_path)
    store = SecretStore()
    store.set("alice", "a-pw")
    store.set("bob", "b-pw")
    alice, _bob = config.mailboxes
    carol = replace(alice, name="carol", username="carol", recipient="carol@example.com")
    changed = replace(config, mailboxes=(replace(alice, name="alice2"), carol))
    changes = PasswordChanges.of(
        {"alice2": "", "carol": "c-pw"}, renamed={"alice2": "alice"}, removed=["bob"]
    )
    saved = save_settings(changed, changes, secrets=store)
    assert [m.name for m in saved.mailboxes] == ["alice2", "carol"]
    assert (store.get("alice2"), store.get("carol")) == ("a-pw", "c-pw")
    assert store.get("alice") is None and store.get("bob") is None
    text = config.path.read_text()
    assert "pw" not in text
    assert configmod.load(config.path).mailboxes == saved.mailboxes


def test_a_swap_of_names_keeps_each_password_with_its_mailbox(tmp_path: Path) -> None:
    config = load(tmp_path)
    store = SecretStore()
    store.set("alice", "a-pw")
    store.set("bob", "b-pw")
    alice, bob = config.mailboxes
    swapped = replace(config, mailboxes=(replace(alice, name="bob"), replace(bob, name="alice")))
    changes = PasswordChanges.of({}, renamed={"bob": "alice", "alice": "bob"})
    save_settings(swapped, changes, secrets=store)
    assert (store.get("bob"), store.get("alice")) == ("a-pw", "b-pw")


def test_what_the_loader_refuses_is_not_written(tmp_path: Path) -> None:
    config = load(tmp_path)
    before = config.path.read_text()
    broken = replace(
        config, mailboxes=(replace(config.mailboxes[0], ca_file=tmp_path / "missing.pem"),)
    )
    with pytest.raises(ConfigError, match="does not exist"):
        save_settings(broken, PasswordChanges(), secrets=SecretStore())
    assert config.path.read_text() == before
    assert checked(config).mailboxes == config.mailboxes
    assert "[[mailbox]]" in to_toml(config)


def test_a_keyring_failure_leaves_the_old_file(tmp_path: Path) -> None:
    class Broken(SecretStore):
        def set(self, account: str, password: str) -> None:
            raise SecretError("no keyring")

    config = load(tmp_path)
    before = config.path.read_text()
    renamed = replace(config, mailboxes=(replace(config.mailboxes[0], name="zed"),))
    with pytest.raises(SecretError):
        save_settings(renamed, PasswordChanges.of({"zed": "pw"}), secrets=Broken())
    assert config.path.read_text() == before
