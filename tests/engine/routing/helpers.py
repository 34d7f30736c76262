"""Mailbox settings for routing tests, built the way the config loader builds them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from postbridge.engine.config import MailboxConfig


def mailbox(**settings: Any) -> MailboxConfig:
    """A MailboxConfig from config-file style keys (``map`` values may be one address)."""
    raw_map: Mapping[str, Any] = settings.pop("map", {})
    address_map = {
        key.lower(): tuple(t.lower() for t in ([v] if isinstance(v, str) else v))
        for key, v in raw_map.items()
    }
    kind = settings.pop("kind", "global")
    return MailboxConfig(
        name=settings.pop("name", "office"),
        kind=kind,
        host="pop.isp.example",
        port=995,
        security="tls",
        username=settings.pop("username", "company@isp.example"),
        recipient=settings.pop("recipient", "").lower(),
        local_domains=tuple(d.lower() for d in settings.pop("local_domains", ())),
        envelope_header=settings.pop("envelope_header", "auto"),
        postmaster=settings.pop("postmaster", "").lower(),
        address_map=address_map,
        **settings,
    )


OFFICE = mailbox(
    name="office",
    username="company@isp.example",
    local_domains=["example.com", "example.net"],
    postmaster="admin@example.com",
    map={
        "sales@example.com": ["alice@example.com", "bob@example.com"],
        "partners@example.com": "ext@partner.example.org",
        "*@example.net": "dave@example.com",
    },
)
USER = mailbox(
    name="alice", kind="user", username="alice@isp.example", recipient="alice@example.com"
)
