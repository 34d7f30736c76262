"""The configuration file: one TOML file, human-readable, validated on load.

The file is the single source of truth; the settings dialog edits it and the
CLI reads it. Loading either yields a complete, valid :class:`Config` or
raises :class:`ConfigError` naming the file, the key and the fix, so the
program never starts half-configured. Unknown keys are errors too (with a
"did you mean" hint): a misspelt ``leave_on_server_days`` silently ignored
would delete mail the user meant to keep.

Passwords are never part of it; they live in the keyring (see secrets.py).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from postbridge.engine.errors import ConfigError
from postbridge.engine.paths import default_config_file, default_data_dir

Security = Literal["tls", "starttls", "none"]
SECURITY_VALUES: tuple[Security, ...] = ("tls", "starttls", "none")
DeliveryKind = Literal["maildir", "smtp", "lmtp"]
MailboxKind = Literal["user", "global"]
LoginMethod = Literal["auto", "user", "apop", "plain"]
SignalKind = Literal["none", "etrn", "atrn"]
SignalWhen = Literal["before-poll", "interval"]
ENVELOPE_HEADERS = (
    "auto",
    "none",
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "X-Rcpt-To",
    "Received",
)
RESERVED_NAMES = ("delivery", "signal")
# The ledger source of mail that arrives by ATRN: the reserved mailbox name "signal".
SIGNAL_SOURCE = "signal"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ADDRESS_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.?[^@\s<>,;]*$")
DOMAIN_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class DeliveryConfig:
    """Where collected mail goes: local Maildirs (default), an SMTP or an LMTP server."""

    kind: DeliveryKind = "maildir"
    path: Path | None = None  # maildir root; default: <data_dir>/Mail
    host: str = ""
    port: int = 0
    security: Security = "starttls"
    username: str = ""
    ca_file: Path | None = None
    allow_plaintext_login: bool = False
    timeout: float = 60.0


@dataclass(frozen=True)
class MailboxConfig:
    """One ISP POP3 mailbox."""

    name: str
    kind: MailboxKind
    host: str
    port: int
    security: Security
    username: str
    recipient: str = ""  # user mailbox: where everything goes
    ca_file: Path | None = None
    leave_on_server_days: int = 0
    allow_plaintext_login: bool = False
    auth: LoginMethod = "auto"
    timeout: float = 60.0
    delete_batch: int = 500  # QUIT and reconnect after this many deletions
    enabled: bool = True
    # global mailboxes
    local_domains: tuple[str, ...] = ()
    envelope_header: str = "auto"
    postmaster: str = ""
    address_map: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def secret_account(self) -> str:
        return self.name


@dataclass(frozen=True)
class ScheduleConfig:
    interval_minutes: int = 15


@dataclass(frozen=True)
class SignalConfig:
    """The online signal that makes the ISP release the mail it holds for the office.

    ``etrn`` (RFC 1985): the ISP then delivers to the office server by itself.
    ``atrn`` (RFC 2645, On-Demand Mail Relay): Postbridge logs in (password in
    the keyring under ``signal``) and the ISP delivers down the same connection.
    ``when``: "before-poll" sends it at the start of every poll cycle;
    "interval" sends it on its own timer (``interval_minutes``, 0 = the
    [schedule] interval) in ``postbridge run`` and the app, not in ``poll``.
    """

    kind: SignalKind = "none"
    host: str = ""
    port: int = 0
    security: Security = "starttls"
    domains: tuple[str, ...] = ()
    username: str = ""
    ca_file: Path | None = None
    when: SignalWhen = "before-poll"
    allow_plaintext_login: bool = False
    timeout: float = 60.0
    interval_minutes: int = 0
    watch_seconds: float = 0.0  # etrn + maildir target: watch it this long for arrivals

    secret_account = "signal"

    @property
    def enabled(self) -> bool:
        return self.kind != "none"


@dataclass(frozen=True)
class Config:
    path: Path
    data_dir: Path
    delivery: DeliveryConfig
    mailboxes: tuple[MailboxConfig, ...]
    schedule: ScheduleConfig = ScheduleConfig()
    data_dir_explicit: bool = False
    signal: SignalConfig | None = None

    def mailbox(self, name: str) -> MailboxConfig:
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox
        names = ", ".join(m.name for m in self.mailboxes) or "none"
        raise ConfigError(
            f"There is no mailbox named “{name}” in {self.path} (mailboxes: {names})."
        )

    @property
    def maildir_root(self) -> Path:
        return self.delivery.path or (self.data_dir / "Mail")


class _Section:
    """Reads one TOML table, remembering which keys were used, for precise errors."""

    def __init__(self, path: Path, where: str, data: Any) -> None:
        self.path = path
        self.where = where
        if not isinstance(data, dict):
            self.fail(where, "must be a table (a [section] with keys)")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def fail(self, key: str, problem: str) -> None:
        place = f"{self.where}, key “{key}”" if key != self.where else self.where
        raise ConfigError(f"Configuration error in {self.path}: {place} {problem}.")

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.data

    def str_(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.get(key)
        if value is None:
            if required or default is None:
                self.fail(key, f'is missing; add it, e.g. {key} = "..."')
            return cast(str, default)
        if not isinstance(value, str):
            self.fail(key, f'must be text in quotes, e.g. {key} = "..."')
        return cast(str, value).strip()

    def int_(self, key: str, default: int, *, low: int, high: int) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"must be a whole number from {low} to {high}, e.g. {key} = {default}")
        return cast(int, value)

    def float_(self, key: str, default: float, *, low: float, high: float) -> float:
        value = self.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not low <= value <= high:
            self.fail(key, f"must be a number from {low:g} to {high:g}, e.g. {key} = {default:g}")
        return float(value)

    def bool_(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, e.g. {key} = {str(default).lower()}")
        return cast(bool, value)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, default)
        if value not in choices:
            options = ", ".join(f'"{c}"' for c in choices)
            self.fail(key, f"is {value!r}; it must be one of {options}")
        return cast(str, value)

    def path_(self, key: str, *, must_exist: bool = False) -> Path | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f'must be a folder or file path in quotes, e.g. {key} = "/path"')
        path = Path(os.path.expandvars(cast(str, value))).expanduser()
        if not path.is_absolute():
            path = (self.path.parent / path).resolve()
        if must_exist and not path.exists():
            self.fail(
                key, f"names {path}, which does not exist; correct the path or remove the key"
            )
        return path

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                import difflib  # only for this error: not on every start-up

                close = difflib.get_close_matches(key, sorted(self.used), n=1)
                hint = f"; did you mean “{close[0]}”?" if close else "; remove it"
                self.fail(key, f"is not a setting Postbridge knows{hint}")


def _address(section: _Section, key: str, value: Any) -> str:
    if not isinstance(value, str) or not ADDRESS_RE.match(value.strip()):
        section.fail(
            key, f'must be an e-mail address such as "alice@example.com" (found {value!r})'
        )
    return cast(str, value).strip()


def _load_delivery(path: Path, data: Any) -> DeliveryConfig:
    s = _Section(path, "[delivery]", data if data is not None else {})
    kind = cast(DeliveryKind, s.choice("kind", ("maildir", "smtp", "lmtp"), "maildir"))
    if kind == "maildir":
        cfg = DeliveryConfig(kind=kind, path=s.path_("path"))
    else:
        security = cast(Security, s.choice("security", SECURITY_VALUES, "starttls"))
        default_port = {"smtp": 465 if security == "tls" else 25, "lmtp": 24}[kind]
        cfg = DeliveryConfig(
            kind=kind,
            host=s.str_("host", required=True),
            port=s.int_("port", default_port, low=1, high=65535),
            security=security,
            username=s.str_("username", ""),
            ca_file=s.path_("ca_file", must_exist=True),
            allow_plaintext_login=s.bool_("allow_plaintext_login", False),
            timeout=s.float_("timeout", 60.0, low=1, high=3600),
        )
        if not cfg.host:
            s.fail("host", 'is empty; name the office mail server, e.g. host = "mail.office.lan"')
    s.finish()
    return cfg


def _load_map(s: _Section) -> dict[str, tuple[str, ...]]:
    raw = s.get("map", {})
    if not isinstance(raw, dict):
        s.fail("map", 'must be a table: [mailbox.map] with "address" = ["recipient", ...]')
    result: dict[str, tuple[str, ...]] = {}
    for source, target in cast(dict[str, Any], raw).items():
        key = f"map.{source}"
        if not source.startswith("*@"):
            _address(s, key, source)
        targets = [target] if isinstance(target, str) else target
        if not isinstance(targets, list) or not targets:
            s.fail(key, 'must be an address or a list of addresses, e.g. ["bob@example.com"]')
        result[source.lower()] = tuple(_address(s, key, t).lower() for t in targets)
    return result


def _load_mailbox(path: Path, index: int, data: Any) -> MailboxConfig:
    label = f"[[mailbox]] number {index + 1}"
    s = _Section(path, label, data)
    name = s.str_("name", required=True)
    if not NAME_RE.match(name) or name in RESERVED_NAMES:
        s.fail(
            "name",
            "must be a short name of letters, digits, '.', '_' or '-' "
            f'(not {" or ".join(RESERVED_NAMES)}), e.g. name = "alice"',
        )
    s.where = f"[[mailbox]] “{name}”"
    kind = cast(MailboxKind, s.choice("kind", ("user", "global"), "user"))
    security = cast(Security, s.choice("security", SECURITY_VALUES, "tls"))
    host = s.str_("host", required=True)
    if not host:
        s.fail("host", 'is empty; name the ISP\'s POP3 server, e.g. host = "pop.isp.example"')
    recipient = ""
    local_domains: tuple[str, ...] = ()
    postmaster = ""
    address_map: dict[str, tuple[str, ...]] = {}
    envelope = "auto"
    if kind == "user":
        recipient = _address(s, "recipient", s.get("recipient"))
    else:
        domains = s.get("local_domains")
        if not isinstance(domains, list) or not domains:
            s.fail(
                "local_domains",
                'must list the office\'s domains, e.g. local_domains = ["example.com"]',
            )
        for domain in cast(list[Any], domains):
            if not isinstance(domain, str) or not DOMAIN_RE.match(domain):
                s.fail("local_domains", f"contains {domain!r}, which is not a domain name")
        local_domains = tuple(d.lower() for d in cast(list[str], domains))
        envelope = s.get("envelope_header", "auto")
        if not isinstance(envelope, str) or envelope.lower() not in {
            h.lower() for h in ENVELOPE_HEADERS
        }:
            s.fail(
                "envelope_header", "must be one of " + ", ".join(f'"{h}"' for h in ENVELOPE_HEADERS)
            )
        postmaster = _address(s, "postmaster", s.get("postmaster")) if s.has("postmaster") else ""
        address_map = _load_map(s)
    cfg = MailboxConfig(
        name=name,
        kind=kind,
        host=host,
        port=s.int_("port", 995 if security == "tls" else 110, low=1, high=65535),
        security=security,
        username=s.str_("username", required=True),
        recipient=recipient.lower(),
        ca_file=s.path_("ca_file", must_exist=True),
        leave_on_server_days=s.int_("leave_on_server_days", 0, low=0, high=3650),
        allow_plaintext_login=s.bool_("allow_plaintext_login", False),
        auth=cast(LoginMethod, s.choice("auth", ("auto", "user", "apop", "plain"), "auto")),
        timeout=s.float_("timeout", 60.0, low=1, high=3600),
        delete_batch=s.int_("delete_batch", 500, low=1, high=100000),
        enabled=s.bool_("enabled", True),
        local_domains=local_domains,
        envelope_header=envelope,
        postmaster=postmaster.lower(),
        address_map=address_map,
    )
    s.finish()
    return cfg


def _signal_domains(s: _Section, kind: str) -> tuple[str, ...]:
    domains = s.get("domains", [])
    example = 'domains = ["example.com"]'
    if not isinstance(domains, list) or (kind != "none" and not domains):
        s.fail("domains", f"must list the domains whose mail the ISP holds, e.g. {example}")
    result: list[str] = []
    for domain in cast(list[Any], domains):
        # RFC 1985 §3: "ETRN @example.com" includes subdomains, "ETRN #queue" names a queue.
        bare = domain[1:] if isinstance(domain, str) and domain[:1] in "@#" else domain
        if kind == "atrn" and bare is not domain:
            s.fail("domains", f"contains {domain!r}; ATRN takes plain domain names")
        if not isinstance(bare, str) or not DOMAIN_RE.match(bare):
            s.fail("domains", f"contains {domain!r}, which is not a domain name")
        result.append(cast(str, domain).lower())
    return tuple(dict.fromkeys(result))


def _load_signal(path: Path, data: Any) -> SignalConfig:
    s = _Section(path, "[signal]", data)
    kind = cast(SignalKind, s.choice("kind", ("none", "etrn", "atrn"), "none"))
    host = s.str_("host", "")
    if kind != "none" and not host:
        s.fail(
            "host", 'is missing or empty; name the ISP\'s server, e.g. host = "mail.isp.example"'
        )
    domains = _signal_domains(s, kind)
    username = s.str_("username", "")
    if kind == "atrn" and not username:
        s.fail(
            "username",
            'is needed for ATRN (the ISP\'s login, often the domain): username = "example.com"',
        )
    cfg = SignalConfig(
        kind=kind,
        host=host,
        port=s.int_("port", 366 if kind == "atrn" else 25, low=1, high=65535),
        security=cast(Security, s.choice("security", SECURITY_VALUES, "starttls")),
        domains=domains,
        username=username,
        ca_file=s.path_("ca_file", must_exist=True),
        when=cast(SignalWhen, s.choice("when", ("before-poll", "interval"), "before-poll")),
        allow_plaintext_login=s.bool_("allow_plaintext_login", False),
        timeout=s.float_("timeout", 60.0, low=1, high=3600),
        interval_minutes=s.int_("interval_minutes", 0, low=0, high=1440),
        watch_seconds=s.float_("watch_seconds", 0.0, low=0, high=600),
    )
    s.finish()
    return cfg


def parse(text: str, *, path: Path) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Configuration error in {path}: it is not valid TOML ({exc}). "
            "Check quotes, brackets and '=' signs on that line."
        ) from exc
    top = _Section(path, "the top level", data)
    data_dir_value = top.path_("data_dir")
    delivery = _load_delivery(path, top.get("delivery"))
    raw_boxes = top.get("mailbox", [])
    if not isinstance(raw_boxes, list):
        top.fail("mailbox", "must be written as [[mailbox]] tables (double brackets)")
    mailboxes = tuple(_load_mailbox(path, i, m) for i, m in enumerate(cast(list[Any], raw_boxes)))
    seen: set[str] = set()
    for mailbox in mailboxes:
        if mailbox.name in seen:
            raise ConfigError(
                f"Configuration error in {path}: two mailboxes are named “{mailbox.name}”; "
                "give each [[mailbox]] its own name."
            )
        seen.add(mailbox.name)
    sched = _Section(path, "[schedule]", top.get("schedule", {}))
    schedule = ScheduleConfig(interval_minutes=sched.int_("interval_minutes", 15, low=1, high=1440))
    sched.finish()
    signal = _load_signal(path, top.get("signal")) if top.has("signal") else None
    top.finish()
    return Config(
        path=path,
        data_dir=data_dir_value or default_data_dir(),
        delivery=delivery,
        mailboxes=mailboxes,
        schedule=schedule,
        data_dir_explicit=data_dir_value is not None,
        signal=signal,
    )


def load(path: Path | None = None) -> Config:
    """Read and validate the config file (default: the platform's config dir)."""
    path = path or default_config_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"There is no configuration file at {path}. Create it (see the README for an "
            "example) or start the Postbridge app to set it up."
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Postbridge could not read its configuration file {path}: {exc}"
        ) from exc
    return parse(text, path=path)


def to_dict(config: Config) -> dict[str, Any]:
    """The config as TOML-ready data (defaults left out where that keeps it readable)."""
    out: dict[str, Any] = {}
    if config.data_dir_explicit:
        out["data_dir"] = str(config.data_dir)
    d = config.delivery
    delivery: dict[str, Any] = {"kind": d.kind}
    if d.kind == "maildir":
        if d.path:
            delivery["path"] = str(d.path)
    else:
        delivery.update(host=d.host, port=d.port, security=d.security)
        if d.username:
            delivery["username"] = d.username
        if d.ca_file:
            delivery["ca_file"] = str(d.ca_file)
        if d.allow_plaintext_login:
            delivery["allow_plaintext_login"] = True
        if d.timeout != DeliveryConfig.timeout:
            delivery["timeout"] = d.timeout
    out["delivery"] = delivery
    out["schedule"] = {"interval_minutes": config.schedule.interval_minutes}
    if config.signal is not None:
        out["signal"] = _signal_dict(config.signal)
    boxes = []
    for m in config.mailboxes:
        box: dict[str, Any] = {
            "name": m.name,
            "kind": m.kind,
            "host": m.host,
            "port": m.port,
            "security": m.security,
            "username": m.username,
        }
        if m.kind == "user":
            box["recipient"] = m.recipient
        else:
            box["local_domains"] = list(m.local_domains)
            box["envelope_header"] = m.envelope_header
            if m.postmaster:
                box["postmaster"] = m.postmaster
            if m.address_map:
                box["map"] = {k: list(v) if len(v) > 1 else v[0] for k, v in m.address_map.items()}
        if m.ca_file:
            box["ca_file"] = str(m.ca_file)
        box["leave_on_server_days"] = m.leave_on_server_days
        if m.allow_plaintext_login:
            box["allow_plaintext_login"] = True
        if m.auth != "auto":
            box["auth"] = m.auth
        if m.timeout != MailboxConfig.timeout:
            box["timeout"] = m.timeout
        if m.delete_batch != MailboxConfig.delete_batch:
            box["delete_batch"] = m.delete_batch
        if not m.enabled:
            box["enabled"] = False
        boxes.append(box)
    if boxes:
        out["mailbox"] = boxes
    return out


def _signal_dict(sig: SignalConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": sig.kind}
    if sig.host:
        out["host"] = sig.host
    out.update(port=sig.port, security=sig.security, domains=list(sig.domains))
    if sig.username:
        out["username"] = sig.username
    if sig.ca_file:
        out["ca_file"] = str(sig.ca_file)
    out["when"] = sig.when
    if sig.allow_plaintext_login:
        out["allow_plaintext_login"] = True
    if sig.timeout != 60.0:
        out["timeout"] = sig.timeout
    if sig.interval_minutes:
        out["interval_minutes"] = sig.interval_minutes
    if sig.watch_seconds:
        out["watch_seconds"] = sig.watch_seconds
    return out


def save(config: Config, path: Path | None = None) -> Path:
    """Write the config atomically (temp file, fsync, rename)."""
    import tomli_w  # only the app's settings write the file; every command reads it

    path = path or config.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = tomli_w.dumps(to_dict(config)).encode("utf-8")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


__all__ = [
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "MailboxConfig",
    "ScheduleConfig",
    "SignalConfig",
    "default_config_file",
    "load",
    "parse",
    "save",
    "to_dict",
]


def signal_before_poll(config: Config) -> bool:
    """Whether a poll cycle should send the online signal first.

    Here rather than with the signals, so that a poll that sends none never loads
    them (ETRN, the SMTP client: a few ms of every ``poll --once``).
    """
    return (
        config.signal is not None and config.signal.enabled and config.signal.when == "before-poll"
    )
