"""Checks for single settings, in words, shared by the settings dialog and its tests.

The loader (:mod:`config`) validates a whole file and names the key; the
dialog wants the same judgement one field at a time, while the user types,
with a sentence that fits next to the field ("Enter an address such as
alice@example.com"). Each check returns ``None`` when the value is fine and
the sentence when it is not. They use the loader's own patterns, so a value
the dialog accepts is one the file accepts.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Iterable
from pathlib import Path

from postbridge.engine.config import ADDRESS_RE, DOMAIN_RE, NAME_RE, RESERVED_NAMES

_HOST_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$")
_SPLIT = re.compile(r"[\s,;]+")


def split_list(text: str) -> list[str]:
    """Items typed into one field, separated by commas, semicolons, spaces or new lines."""
    return [item for item in _SPLIT.split(text.strip()) if item]


def check_host(
    text: str, *, what: str = "the server", example: str = "pop.isp.example"
) -> str | None:
    host = text.strip()
    if not host:
        return f"Enter the name of {what}, e.g. {example}."
    if any(ch.isspace() for ch in host) or "/" in host or "@" in host:
        return f"“{host}” is not a server name; enter just the name, e.g. {example}."
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return f"“{host}” is not a valid server name."
    return None


def check_port(port: int) -> str | None:
    if not 1 <= port <= 65535:
        return "The port must be a number from 1 to 65535."
    return None


def check_address(text: str, *, what: str = "an e-mail address") -> str | None:
    value = text.strip()
    if not value:
        return f"Enter {what}, e.g. alice@example.com."
    if not ADDRESS_RE.match(value):
        return f"“{value}” is not an e-mail address; write it like alice@example.com."
    return None


def check_domain(text: str) -> str | None:
    value = text.strip()
    if not value:
        return "Enter a domain, e.g. example.com."
    if "@" in value:
        return f"“{value}” looks like an address; enter only the part after @."
    if not DOMAIN_RE.match(value):
        return f"“{value}” is not a domain name such as example.com."
    return None


def check_domains(items: Iterable[str], *, required: bool = True) -> str | None:
    values = list(items)
    if required and not values:
        return "Enter at least one domain, e.g. example.com."
    for value in values:
        problem = check_domain(value)
        if problem:
            return problem
    return None


def check_mailbox_name(name: str, *, taken: Iterable[str] = ()) -> str | None:
    value = name.strip()
    if not value:
        return "Give the mailbox a short name, e.g. office or alice."
    if value in RESERVED_NAMES:
        return f"“{value}” is reserved; choose another name."
    if not NAME_RE.match(value):
        return "Use letters, digits, '.', '_' or '-' only (no spaces), at most 64."
    if value in set(taken):
        return f"Another mailbox is already named “{value}”."
    return None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def check_map_source(text: str, local_domains: Iterable[str]) -> str | None:
    """An address-map key: an address or ``*@domain``, inside the local domains."""
    value = text.strip()
    if not value:
        return "Enter the address mail is sent to, e.g. sales@example.com."
    if value.startswith("*@"):
        problem = check_domain(value[2:])
        if problem:
            return problem
    elif check_address(value):
        return f"“{value}” is not an address (or *@domain for a whole domain)."
    domains = [d.lower() for d in local_domains]
    if domains and domain_of(value) not in domains:
        return (
            f"{domain_of(value)} is not one of the local domains ({', '.join(domains)}); "
            "only addresses in them are routed."
        )
    return None


def check_map_targets(items: Iterable[str]) -> str | None:
    values = list(items)
    if not values:
        return "Enter at least one recipient address."
    for value in values:
        problem = check_address(value)
        if problem:
            return problem
    return None


def check_ca_file(text: str) -> str | None:
    """An optional extra trust anchor: empty, or a readable PEM certificate file."""
    value = text.strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        return f"There is no file at {path}."
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError, ValueError):
        return f"{path.name} is not a certificate file (PEM) Postbridge can read."
    return None


def check_folder(text: str) -> str | None:
    value = text.strip()
    if not value:
        return "Choose a folder."
    path = Path(value).expanduser()
    if not path.is_absolute():
        return "Enter the full path of the folder."
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder."
    return None
