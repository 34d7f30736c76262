"""Passwords, kept in the OS keyring and nowhere else.

Every password lives in the keyring under the service ``postbridge``, one
entry per mailbox (its ``name``), per delivery login (``delivery``) and for
the online signal (``signal``). The config file never holds one.

``keyring`` picks a backend by itself. Two of its choices must not pass
unnoticed: the ``fail`` backend (no Secret Service on a Linux desktop), which
makes every lookup raise, and ``keyrings.alt``'s file backends, which become
the default merely by being installed and store passwords base64-encoded in a
plain file. :func:`backend_info` says which backend is in use and whether it
is a real OS keyring, so ``postbridge check`` and the app can warn. There is
no silent fallback to plaintext anywhere.

keyring is imported on first use, not with this module: its own imports
(jaraco.*, more_itertools, importlib_metadata, urllib.request) are a large
part of the CLI's start-up, and many commands (``status``, ``history``,
``quarantine list``, a poll with nothing configured) never read a password.
"""

from __future__ import annotations

from dataclasses import dataclass

from postbridge.engine.errors import SecretError

SERVICE = "postbridge"

# Backends that keep passwords in the operating system's own protected store.
_OS_KEYRING_MODULES = (
    "keyring.backends.Windows",
    "keyring.backends.macOS",
    "keyring.backends.SecretService",
    "keyring.backends.kwallet",
    "keyring.backends.libsecret",
)


_FRIENDLY = (
    ("keyring.backends.Windows", "Windows Credential Manager"),
    ("keyring.backends.macOS", "the macOS Keychain"),
    ("keyring.backends.SecretService", "the desktop's Secret Service (GNOME Keyring, KWallet)"),
    ("keyring.backends.kwallet", "KWallet"),
    ("keyring.backends.libsecret", "the desktop's Secret Service (libsecret)"),
    ("keyrings.alt.file", "a file of keyrings.alt (passwords only base64-encoded)"),
    ("keyring.backends.fail", "no keyring at all"),
    ("keyring.backends.null", "no keyring at all"),
)


def friendly_name(backend: str) -> str:
    """Words for a keyring backend's class name, e.g. "the macOS Keychain"."""
    for prefix, words in _FRIENDLY:
        if backend.startswith(prefix):
            return words
    return backend


@dataclass(frozen=True)
class BackendInfo:
    name: str
    is_os_keyring: bool
    usable: bool

    def describe(self) -> str:
        friendly = friendly_name(self.name)
        if not self.usable:
            return (
                f"No usable keyring ({friendly}). Postbridge cannot store passwords: "
                "install or unlock your desktop's keyring (Secret Service, KWallet)."
            )
        if self.is_os_keyring:
            return f"Passwords are kept in the system keyring: {friendly}."
        return (
            f"Warning: passwords are kept in {friendly}, which is not the system keyring; "
            "they may be stored in a file that other programs can read."
        )


def _backend_name(backend: object) -> str:
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def backend_info() -> BackendInfo:
    import keyring  # on first use, see above

    backend = keyring.get_keyring()
    name = _backend_name(backend)
    inner = [backend]
    # A ChainerBackend wraps the real ones; judge by what it chains.
    chained = getattr(backend, "backends", None)
    if chained:
        inner = list(chained)
    names = [_backend_name(b) for b in inner]
    is_os = any(n.startswith(_OS_KEYRING_MODULES) for n in names)
    usable = not name.startswith("keyring.backends.fail") and bool(inner)
    if chained:
        # Name what actually holds the passwords: the first OS store, else the first backend.
        name = next((n for n in names if n.startswith(_OS_KEYRING_MODULES)), names[0])
    return BackendInfo(name=name, is_os_keyring=is_os, usable=usable)


class SecretStore:
    """A small interface over keyring; tests may pass another service name."""

    def __init__(self, service: str = SERVICE) -> None:
        self.service = service

    def get(self, account: str) -> str | None:
        import keyring.errors  # binds keyring too; on first use, see above

        try:
            return keyring.get_password(self.service, account)
        except keyring.errors.KeyringError as exc:
            raise SecretError(
                f"Postbridge could not read the password for “{account}” from the keyring.",
                detail=str(exc),
            ) from exc

    def require(self, account: str) -> str:
        password = self.get(account)
        if password is None:
            raise SecretError(
                f"No password is stored for “{account}”. "
                f"Set it with: postbridge secret set {account}"
            )
        return password

    def set(self, account: str, password: str) -> None:
        import keyring.errors  # binds keyring too; on first use, see above

        try:
            keyring.set_password(self.service, account, password)
        except keyring.errors.KeyringError as exc:
            raise SecretError(
                f"Postbridge could not store the password for “{account}” in the keyring.",
                detail=str(exc),
            ) from exc

    def delete(self, account: str) -> bool:
        import keyring.errors  # binds keyring too; on first use, see above

        try:
            keyring.delete_password(self.service, account)
        except keyring.errors.PasswordDeleteError:
            return False
        except keyring.errors.KeyringError as exc:
            raise SecretError(
                f"Postbridge could not remove the password for “{account}”.", detail=str(exc)
            ) from exc
        return True
