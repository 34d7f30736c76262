"""The test servers themselves work: if these fail, every other interop failure is noise.

Each test talks to the private Dovecot or Postfix with the standard library's clients only
(poplib, smtplib), so a failure here points at tests/servers/, not at Postbridge.
"""

from __future__ import annotations

import contextlib
import os
import poplib
import smtplib
import ssl
import time
from pathlib import Path

import psutil
import pytest

from tests import servers
from tests.servers import require_server
from tests.servers.certs import Certificates
from tests.servers.dovecot import Dovecot
from tests.servers.postfix import PostfixOffice

pytestmark = pytest.mark.interop

# Reply codes (RFC 5321 §4.2.3), named as in aiosmtpd's testing/statuscodes.py.
OK = 250
TRY_LATER = 450
USER_UNKNOWN = 550

MESSAGE = b"From: sender@isp.test\r\nTo: alice@example.com\r\nSubject: testbed\r\n\r\nHello.\r\n"
TIMEOUT = 10


def _context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie has exited; only its parent has not reaped it)."""
    alive = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


def _names(processes: list[psutil.Process]) -> set[str]:
    names = set()
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):  # short-lived helpers come and go
            names.add(proc.name())
    return names


# -- Dovecot: POP3 -------------------------------------------------------------------------


def test_pop3_stls_login_lists_and_retrieves_an_added_message(dovecot: Dovecot, ca_file: Path):
    dovecot.add_user("alice", "s3cret")
    dovecot.add_message("alice", MESSAGE)

    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=TIMEOUT)
    try:
        assert "STLS" in client.capa()
        client.stls(_context(ca_file))
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        client.user("alice")
        client.pass_("s3cret")
        assert client.stat() == (1, len(MESSAGE))
        _, listing, _ = client.list()
        assert listing == [f"1 {len(MESSAGE)}".encode()]
        _, uidls, _ = client.uidl()
        uidl = uidls[0].split()[1]
        assert len(uidl) == 16  # pop3_uidl_format = %08Xu%08Xv
        _, lines, _ = client.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == MESSAGE
    finally:
        client.quit()

    # The UIDL is stable across sessions: Postbridge's "seen" bookkeeping depends on it.
    again = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=TIMEOUT)
    try:
        again.stls(_context(ca_file))
        again.user("alice")
        again.pass_("s3cret")
        assert again.uidl()[1][0].split()[1] == uidl
    finally:
        again.quit()


def test_pop3s_verifies_certificate_against_ca_file(dovecot: Dovecot, ca_file: Path):
    dovecot.add_user("bob", "pw")
    client = poplib.POP3_SSL(
        dovecot.host, dovecot.pop3s_port, timeout=TIMEOUT, context=_context(ca_file)
    )
    try:
        client.user("bob")
        client.pass_("pw")
        assert client.stat() == (0, 0)
    finally:
        client.quit()


def test_pop3s_rejects_a_client_that_does_not_trust_the_ca(dovecot: Dovecot):
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(
            dovecot.host,
            dovecot.pop3s_port,
            timeout=TIMEOUT,
            context=ssl.create_default_context(),  # system CAs only
        )


def test_apop_login(dovecot: Dovecot):
    dovecot.add_user("carol", "apop-secret")
    dovecot.add_message("carol", MESSAGE)
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=TIMEOUT)
    try:
        # Dovecot puts the APOP timestamp into its greeting when "apop" is an auth mechanism.
        assert b"<" in client.getwelcome()
        client.apop("carol", "apop-secret")
        assert client.stat()[0] == 1
    finally:
        client.quit()


def test_wrong_password_is_refused(dovecot: Dovecot):
    dovecot.add_user("dave", "right")
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=TIMEOUT)
    try:
        client.user("dave")
        with pytest.raises(poplib.error_proto, match=r"-ERR"):
            client.pass_("wrong")
    finally:
        client.close()


def test_user_added_while_running_can_log_in(dovecot: Dovecot):
    dovecot.add_user("first", "one")
    for name in ("second", "third"):
        dovecot.add_user(name, name)
        client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=TIMEOUT)
        try:
            client.user(name)
            client.pass_(name)
        finally:
            client.quit()


def test_add_messages_keeps_order_and_is_fast(dovecot: Dovecot):
    dovecot.add_user("bulk", "pw")
    bodies = [b"Subject: %d\n\nbody %d\n" % (i, i) for i in range(1000)]
    started = time.monotonic()
    dovecot.add_messages("bulk", bodies)
    # Benchmarks fill mailboxes with thousands of messages; ~0.2 s here, 5 s only when broken.
    assert time.monotonic() - started < 5

    assert dovecot.count("bulk") == 1000
    assert dovecot.messages("bulk") == bodies
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=TIMEOUT)
    try:
        client.user("bulk")
        client.pass_("pw")
        assert client.stat()[0] == 1000
        # POP3 numbering follows the order of add_messages().
        assert b"body 999" in b"\n".join(client.retr(1000)[1])
    finally:
        client.quit()


# -- Dovecot: LMTP -------------------------------------------------------------------------


def test_lmtp_delivery_lands_in_the_maildir(dovecot: Dovecot):
    dovecot.add_user("alice", "pw")
    lmtp = smtplib.LMTP(dovecot.host, dovecot.lmtp_port, timeout=TIMEOUT)
    try:
        refused = lmtp.sendmail("sender@isp.test", ["alice@example.com"], MESSAGE)
    finally:
        lmtp.quit()
    assert refused == {}
    (stored,) = dovecot.messages("alice")
    assert stored.replace(b"\r\n", b"\n").endswith(b"Subject: testbed\n\nHello.\n")
    assert b"Delivered-To: alice@example.com" in stored


def test_lmtp_refuses_unknown_recipient_permanently(dovecot: Dovecot):
    lmtp = smtplib.LMTP(dovecot.host, dovecot.lmtp_port, timeout=TIMEOUT)
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            lmtp.sendmail("sender@isp.test", ["nobody@example.com"], MESSAGE)
    finally:
        lmtp.quit()
    assert refused.value.recipients["nobody@example.com"][0] == USER_UNKNOWN


def test_dovecot_stop_leaves_no_process(certificates: Certificates):
    require_server("dovecot")
    server = Dovecot(certificates=certificates)
    server.start()
    client = None
    try:
        server.add_user("alice", "pw")
        client = poplib.POP3(server.host, server.pop3_port, timeout=TIMEOUT)
        client.user("alice")
        client.pass_("pw")  # a pop3 process runs as the mail user now, mid-session
        processes = server.processes()
        assert {"dovecot", "pop3"} <= _names(processes)
    finally:
        server.stop()
        if client is not None:
            client.close()
    assert _alive(processes) == []
    assert not server.root.exists()
    server.stop()  # idempotent


# -- Postfix as the office server ------------------------------------------------------------


def _smtp(office: PostfixOffice) -> smtplib.SMTP:
    return smtplib.SMTP(office.host, office.smtp_port, timeout=TIMEOUT)


def test_smtp_delivery_lands_in_the_maildir(postfix_office: PostfixOffice):
    with _smtp(postfix_office) as client:
        assert client.sendmail("sender@isp.test", ["alice@example.com"], MESSAGE) == {}
    (stored,) = postfix_office.wait_for("alice@example.com", 1)
    # Postfix stores LF line ends and adds its own headers (Received, Message-Id, Date).
    assert b"\nSubject: testbed\n" in stored
    assert stored.endswith(b"\n\nHello.\n")
    assert b"X-Original-To: alice@example.com" in stored
    assert postfix_office.messages("bob@example.com") == []


def test_reset_restores_the_state_after_start(postfix_office: PostfixOffice):
    # The fixture shares one Postfix between tests and relies on reset() for isolation.
    with _smtp(postfix_office) as client:
        client.sendmail("sender@isp.test", ["alice@example.com"], MESSAGE)
    postfix_office.wait_for("alice@example.com", 1)
    postfix_office.add_user("erin@example.com")
    postfix_office.defer("bob@example.com")

    postfix_office.reset()

    assert postfix_office.messages("alice@example.com") == []
    assert postfix_office.queue_is_empty()
    with _smtp(postfix_office) as client:
        client.ehlo()
        client.mail("sender@isp.test")
        assert client.rcpt("erin@example.com")[0] == USER_UNKNOWN
        assert client.rcpt("bob@example.com")[0] == OK


def test_unknown_user_gets_permanent_failure(postfix_office: PostfixOffice):
    with _smtp(postfix_office) as client:
        client.ehlo()
        client.mail("sender@isp.test")
        code, text = client.rcpt("nobody@example.com")
    assert code == USER_UNKNOWN
    assert b"5.1.1" in text


def test_added_user_receives_mail_at_once(postfix_office: PostfixOffice):
    postfix_office.add_user("dave@example.com")
    with _smtp(postfix_office) as client:
        assert client.sendmail("sender@isp.test", ["dave@example.com"], MESSAGE) == {}
    assert len(postfix_office.wait_for("dave@example.com", 1)) == 1


def test_defer_answers_4xx_until_undefer(postfix_office: PostfixOffice):
    postfix_office.defer("bob@example.com")
    with _smtp(postfix_office) as client:
        client.ehlo()
        client.mail("sender@isp.test")
        code, text = client.rcpt("bob@example.com")
        assert (code, b"4.2.0" in text) == (TRY_LATER, True)
        # Other recipients are unaffected.
        assert client.rcpt("alice@example.com")[0] == OK

    postfix_office.undefer("bob@example.com")
    with _smtp(postfix_office) as client:
        assert client.sendmail("sender@isp.test", ["bob@example.com"], MESSAGE) == {}
    assert len(postfix_office.wait_for("bob@example.com", 1)) == 1


def test_postfix_offers_starttls_with_the_test_certificate(
    postfix_office: PostfixOffice, ca_file: Path
):
    with _smtp(postfix_office) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=_context(ca_file))
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.sendmail("sender@isp.test", ["carol@example.com"], MESSAGE) == {}
    (stored,) = postfix_office.wait_for("carol@example.com", 1)
    assert b"(using TLS" in stored  # Postfix records TLS in its Received: header


def test_postfix_stop_leaves_no_process(certificates: Certificates):
    require_server("postfix")
    server = PostfixOffice(certificates=certificates)
    server.start()
    try:
        with smtplib.SMTP(server.host, server.smtp_port, timeout=TIMEOUT) as client:
            client.sendmail("sender@isp.test", ["alice@example.com"], MESSAGE)
            server.wait_for("alice@example.com", 1)
            # With an smtpd mid-session. virtual(8) may already have exited after the
            # delivery; these three are always there, though on a busy machine the listing
            # can miss a process between fork and exec: look again for a while.
            deadline = time.monotonic() + 10
            processes = server.processes()
            while not {"master", "qmgr", "smtpd"} <= _names(processes):
                assert time.monotonic() < deadline, _names(processes)
                time.sleep(0.05)
                processes = server.processes()
    finally:
        server.stop()
    assert _alive(processes) == []
    assert not server.root.exists()


# -- require_server ---------------------------------------------------------------------------


def test_require_server_skips_on_a_laptop_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(
        servers._SERVERS, "imaginary", (("/nonexistent/imaginaryd",), "imaginary-server")
    )
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="install Debian's imaginary-server"):
        require_server("imaginary")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="need root"):
        require_server("dovecot")

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but imaginary is not installed"):
        require_server("imaginary")
