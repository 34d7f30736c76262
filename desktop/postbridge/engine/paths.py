"""Where Postbridge keeps its files, in one place.

Config, data (ledger, spool, the default Maildir) and logs each live in the
platform's own directory for them (platformdirs). On Windows the config and
data directories are the same folder, so everything goes in named
subfolders. Tests and portable installs override the lot: the config file by
``--config`` or ``POSTBRIDGE_CONFIG``, the data directory by the config's
``data_dir`` key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import PlatformDirs

APP_NAME = "Postbridge"
CONFIG_ENV = "POSTBRIDGE_CONFIG"


def _dirs() -> PlatformDirs:
    return PlatformDirs(APP_NAME, appauthor=False, roaming=False)


def default_config_file() -> Path:
    """The config file: ``$POSTBRIDGE_CONFIG`` or ``<user config dir>/postbridge.toml``."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return Path(_dirs().user_config_dir) / "postbridge.toml"


def default_data_dir() -> Path:
    return Path(_dirs().user_data_dir) / "data"


def default_log_dir() -> Path:
    return Path(_dirs().user_log_dir)


@dataclass(frozen=True)
class DataPaths:
    """The files under one data directory."""

    root: Path

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite3"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def maildir(self) -> Path:
        """The default delivery target: one Maildir per local recipient."""
        return self.root / "Mail"

    @property
    def lock(self) -> Path:
        return self.root / "postbridge.lock"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.spool.mkdir(parents=True, exist_ok=True)
