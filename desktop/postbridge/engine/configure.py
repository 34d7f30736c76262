"""Save settings from the dialog: check the whole file, store the passwords, write atomically.

The dialog builds a :class:`Config` and says which passwords changed; this
module makes that durable in the one order that never leaves the app broken:

1. The config is round-tripped through the loader (``to_dict`` -> TOML ->
   ``parse``), so a file the dialog writes is a file Postbridge will load,
   with the loader's own message naming the key if not.
2. Passwords go to the keyring before the file is written: the worker reloads
   when the file changes and must find them there. A keyring failure stops
   here, with the old file still in place.
3. The file is written atomically (:func:`config.save`).

Passwords of mailboxes that were renamed move with them; those of removed
mailboxes are deleted. A password never reaches the TOML file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import tomli_w

from postbridge.engine import config as configmod
from postbridge.engine.config import Config
from postbridge.engine.secrets import SecretStore


@dataclass
class PasswordChanges:
    """What the dialog did to passwords: new ones, renamed accounts, removed accounts."""

    typed: dict[str, str] = field(default_factory=dict)  # account -> new password
    renamed: dict[str, str] = field(default_factory=dict)  # new account -> old account
    removed: set[str] = field(default_factory=set)

    @classmethod
    def of(
        cls,
        typed: Mapping[str, str],
        *,
        renamed: Mapping[str, str] | None = None,
        removed: Iterable[str] = (),
    ) -> PasswordChanges:
        return cls(
            typed={k: v for k, v in typed.items() if v},
            renamed={new: old for new, old in (renamed or {}).items() if new != old},
            removed=set(removed),
        )


def checked(config: Config) -> Config:
    """The config as the loader will read it back; raises ConfigError naming the key."""
    text = tomli_w.dumps(configmod.to_dict(config))
    return configmod.parse(text, path=config.path)


def accounts_in_use(config: Config) -> set[str]:
    used = {m.secret_account for m in config.mailboxes}
    if config.delivery.kind != "maildir" and config.delivery.username:
        used.add("delivery")
    if config.signal is not None and config.signal.enabled:
        used.add(config.signal.secret_account)
    return used


def save_settings(config: Config, changes: PasswordChanges, *, secrets: SecretStore) -> Config:
    """Validate, store passwords, write the file; return the config as saved."""
    result = checked(config)
    in_use = accounts_in_use(result)
    moved: dict[str, str] = {}
    for new, old in changes.renamed.items():
        if new in changes.typed:
            continue
        password = secrets.get(old)
        if password is not None:
            moved[new] = password
    for account, password in {**moved, **changes.typed}.items():
        secrets.set(account, password)
    for account in (changes.removed | set(changes.renamed.values())) - in_use:
        secrets.delete(account)
    configmod.save(result, config.path)
    return result


def to_toml(config: Config) -> str:
    """The text that :func:`save_settings` would write (for previews and tests)."""
    return tomli_w.dumps(configmod.to_dict(config))
