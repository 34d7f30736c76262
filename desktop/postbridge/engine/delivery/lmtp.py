"""Delivery over LMTP (RFC 2033): Dovecot's and Cyrus's local delivery protocol.

LMTP is SMTP without a queue: the server delivers into the mailboxes while the
client waits, and after ``DATA`` it answers once *per accepted recipient*, in
``RCPT`` order (RFC 2033 §4.2). That is why it suits Postbridge: the message is
either in bob's mailbox or not, with no queue in between, and a full mailbox for
one user does not hold back the others. The greeting is ``LHLO``; everything
else (TLS, AUTH, pipelining, the kept-open connection) is shared with
:class:`~postbridge.engine.delivery.smtp.SmtpTarget`.

``host`` may be the path of a unix socket (``/run/dovecot/lmtp``) on POSIX
systems; ``port`` is then ignored.
"""

from __future__ import annotations

from postbridge.engine.delivery.smtp import SmtpTarget


class LmtpTarget(SmtpTarget):
    """An LMTP server (Dovecot, Cyrus), with one result per recipient after DATA."""

    protocol = "LMTP"
    _lmtp = True
    _server_words = "office mail server (LMTP)"
