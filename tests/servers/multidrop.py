"""A private Postfix playing an ISP that keeps a whole domain's mail in one POP3 mailbox.

This is what a "global" mailbox looks like in real life: the ISP's Postfix accepts mail for
the office's domain and its virtual(8) agent drops every message, whatever the recipient,
into one Maildir, which the Dovecot of :mod:`tests.servers.dovecot` serves by POP3.
virtual(8) delivers one copy per recipient and writes the envelope recipient into
``Delivered-To:`` and ``X-Original-To:``, so the envelope headers in these tests are the
ones a real server writes, not hand-made ones.
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from pathlib import Path

from tests.servers.certs import Certificates
from tests.servers.common import wait_until
from tests.servers.postfix import PostfixConfig, PostfixInstance


class PostfixMultidropIsp(PostfixInstance):
    """Accepts mail for ``domain`` and stores all of it in ``<mail_root>/<user>/Maildir``."""

    name = "isp"

    def __init__(
        self, *, certificates: Certificates, domain: str, mail_root: Path, user: str
    ) -> None:
        self.domain = domain
        self._mail_root = mail_root
        self._user = user
        super().__init__(certificates=certificates, hostname="mx.isp.test")
        # "@domain" in virtual_mailbox_maps is the catch-all: every address of the domain.
        self.write_map("virtual_mailboxes", {f"@{domain}": f"{user}/Maildir/"})

    def _build_config(self, smtp_port: int) -> PostfixConfig:
        config = super()._build_config(smtp_port)
        mail_user = self.mail_user
        config.main.update(
            {
                "virtual_mailbox_domains": self.domain,
                "virtual_mailbox_maps": f"hash:{config.map_path('virtual_mailboxes')}",
                "virtual_mailbox_base": str(self._mail_root),
                "virtual_uid_maps": f"static:{mail_user.uid}",
                "virtual_gid_maps": f"static:{mail_user.gid}",
                "virtual_minimum_uid": str(mail_user.uid),
                "virtual_transport": "virtual",
                "virtual_mailbox_limit": "0",
            }
        )
        config.services.append("virtual   unix  -       n       n       -       -       virtual")
        return config

    def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> None:
        """Submit one message by SMTP, as the Internet would."""
        with smtplib.SMTP(self.host, self.smtp_port, timeout=10) as smtp:
            smtp.sendmail(sender, list(recipients), message)

    def wait_delivered(self, count: int, timeout: float = 15.0) -> None:
        maildir = self._mail_root / self._user / "Maildir"

        def arrived() -> bool:
            return sum(1 for sub in ("new", "cur") for _ in (maildir / sub).iterdir()) >= count

        wait_until(arrived, timeout=timeout, what=f"{count} messages in {maildir}")
