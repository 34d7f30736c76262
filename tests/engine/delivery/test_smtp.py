"""SMTP delivery against aiosmtpd on loopback, and a misbehaving fake server."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import ssl
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from postbridge.engine.delivery.base import DeliveryJob
from postbridge.engine.delivery.smtp import SmtpTarget
from postbridge.engine.errors import AuthError, InsecureLoginRefused, TLSError
from tests.engine.delivery.mailservers import (
    CONTENT_REJECTED,
    MAILBOX_BUSY,
    PASSWORD,
    SENDER_REJECTED,
    TRY_LATER,
    USER,
    USER_UNKNOWN,
    Dialer,
    Handler,
    StartServer,
)

KEY = "1764440000.pb42_a1b2c3d4"
PREPEND = b"X-Postbridge-Original-To: all@isp.example\r\n"
MESSAGE = (
    b"From: Ann <ann@isp.example>\r\nTo: office@example.com\r\nSubject: dots\r\n\r\n"
    b".leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n\xc3\xa9t\xc3\xa9\r\n"
)
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


def job(spool: Callable[[bytes], Path], *recipients: str, body: bytes = MESSAGE, **kw: Any):
    return DeliveryJob(
        key=KEY,
        path=spool(body),
        sender=kw.pop("sender", "ann@isp.example"),
        recipients=recipients,
        prepend=kw.pop("prepend", PREPEND),
    )


def target(port: int, dialer: Dialer | None = None, **kw: Any) -> SmtpTarget:
    kw.setdefault("security", "none")
    kw.setdefault("timeout", 5)
    return SmtpTarget(host="127.0.0.1", port=port, open_connection=dialer, **kw)


async def test_pipelined_transaction_is_byte_exact(start_server: StartServer, spool, dialer):
    handler = Handler()
    server = await start_server(handler)
    smtp = target(server.port, dialer)
    try:
        results = await smtp.deliver(job(spool, ALICE, BOB))
    finally:
        await smtp.aclose()

    assert {r: res.status for r, res in results.items()} == {ALICE: "accepted", BOB: "accepted"}
    assert (
        "Delivered to the office mail server: 250 2.0.0 Ok: queued as 4XyZ" in results[BOB].reason
    )
    [received] = handler.messages
    assert received.content == PREPEND + MESSAGE
    assert received.rcpt_tos == [ALICE, BOB]
    assert f"SIZE={len(PREPEND + MESSAGE)}" in received.mail_options
    assert "BODY=8BITMIME" in received.mail_options
    # RFC 2920: MAIL, every RCPT and DATA went out in a single write.
    assert any(
        w.startswith(b"MAIL FROM:<ann@isp.example>")
        and w.count(b"RCPT TO:") == 2
        and w.endswith(b"\r\nDATA\r\n")
        for w in dialer.writes
    )
    assert dialer.writes[-1] == b"QUIT\r\n"


async def test_without_pipelining_commands_go_one_at_a_time(
    start_server: StartServer, spool, dialer
):
    handler = Handler(pipelining=False)
    server = await start_server(handler)
    smtp = target(server.port, dialer)
    results = await smtp.deliver(job(spool, ALICE, BOB))
    await smtp.aclose()
    assert all(r.status == "accepted" for r in results.values())
    assert all(w.count(b"\r\n") == 1 for w in dialer.writes if w.startswith((b"MAIL", b"RCPT")))
    assert handler.messages[0].content == PREPEND + MESSAGE


async def test_without_pipelining_reset_only_after_a_refusal(
    start_server: StartServer, spool, dialer
):
    handler = Handler(pipelining=False, rcpt_replies={BOB: USER_UNKNOWN})
    server = await start_server(handler)
    smtp = target(server.port, dialer)
    statuses = []
    for rcpt in (ALICE, ALICE, BOB, ALICE):
        results = await smtp.deliver(job(spool, rcpt))
        statuses.append(results[rcpt].status)
    await smtp.aclose()
    assert statuses == ["accepted", "accepted", "permanent", "accepted"]
    assert dialer.connections == 1
    # One RSET, on its own (no pipelining), between Bob's refusal and the next MAIL.
    assert dialer.sent.count(b"RSET\r\n") == 1
    assert dialer.writes[dialer.writes.index(b"RSET\r\n") + 1].startswith(b"MAIL FROM:")
    assert len(handler.messages) == 3


async def test_skip_replaces_the_header_block(start_server: StartServer, spool):
    handler = Handler()
    server = await start_server(handler)
    head = b"To: all@isp.example\r\n\r\n"
    new_head = b"To: alice@example.com\r\n\r\n"
    smtp = target(server.port)
    the_job = DeliveryJob(
        key=KEY,
        path=spool(head + b".body\r\n"),
        sender="ann@isp.example",
        recipients=(ALICE,),
        prepend=new_head,
        skip=len(head),
    )
    await smtp.deliver(the_job)
    await smtp.aclose()
    [received] = handler.messages
    assert received.content == new_head + b".body\r\n"
    assert f"SIZE={len(received.content)}" in received.mail_options


async def test_a_job_held_in_memory_is_sent_with_skip_and_size(start_server: StartServer):
    handler = Handler()
    server = await start_server(handler)
    head = b"To: all@isp.example\r\n\r\n"
    new_head = b"To: alice@example.com\r\n\r\n"
    smtp = target(server.port)
    the_job = DeliveryJob(
        key=KEY,
        path=None,
        data=head + b".body\r\n",
        sender="ann@isp.example",
        recipients=(ALICE,),
        prepend=new_head,
        skip=len(head),
    )
    results = await smtp.deliver(the_job)
    await smtp.aclose()
    assert results[ALICE].status == "accepted"
    [received] = handler.messages
    assert received.content == new_head + b".body\r\n"
    assert f"SIZE={len(received.content)}" in received.mail_options


async def test_message_without_final_newline_gets_one(start_server: StartServer, spool):
    handler = Handler()
    server = await start_server(handler)
    smtp = target(server.port)
    await smtp.deliver(job(spool, ALICE, body=b"Subject: x\r\n\r\nno newline", prepend=b""))
    await smtp.aclose()
    assert handler.messages[0].content == b"Subject: x\r\n\r\nno newline\r\n"


async def test_per_recipient_outcomes(start_server: StartServer, spool):
    handler = Handler(rcpt_replies={BOB: MAILBOX_BUSY, CAROL: USER_UNKNOWN})
    server = await start_server(handler)
    smtp = target(server.port)
    results = await smtp.deliver(job(spool, ALICE, BOB, CAROL))
    await smtp.aclose()

    assert results[ALICE].status == "accepted"
    assert results[BOB].status == "temporary"
    assert results[BOB].reason == (
        f"The office mail server refused {BOB} for now (it will be tried again): {MAILBOX_BUSY}"
    )
    assert results[CAROL].status == "permanent"
    assert results[CAROL].reason == (
        f"The office mail server refused {CAROL} permanently: {USER_UNKNOWN}"
    )
    [received] = handler.messages
    assert received.rcpt_tos == [ALICE]


async def test_no_accepted_recipient_means_no_message_and_a_reset_before_the_next(
    start_server: StartServer, spool, dialer
):
    handler = Handler(rcpt_replies={ALICE: USER_UNKNOWN, BOB: MAILBOX_BUSY})
    server = await start_server(handler)
    smtp = target(server.port, dialer)
    results = await smtp.deliver(job(spool, ALICE, BOB))
    assert [r.status for r in results.values()] == ["permanent", "temporary"]
    assert handler.messages == []
    assert b"leading dot" not in dialer.sent  # DATA was refused: the content never went out

    # The connection is still good for the next message; RSET ends the refused
    # transaction first (RFC 5321 §4.1.4), in the same write as the next MAIL.
    handler.rcpt_replies.clear()
    results = await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()
    assert results[ALICE].status == "accepted"
    assert dialer.connections == 1
    assert dialer.sent.count(b"RSET\r\n") == 1
    assert sum(w.startswith(b"RSET\r\nMAIL FROM:") for w in dialer.writes) == 1


async def test_refused_message_is_followed_by_a_reset(start_server: StartServer, spool, dialer):
    # MAIL may follow only a transaction that ended with a successful DATA.
    handler = Handler(data_reply=TRY_LATER)
    server = await start_server(handler)
    smtp = target(server.port, dialer)
    results = await smtp.deliver(job(spool, ALICE))
    assert results[ALICE].status == "temporary"
    handler.data_reply = None
    results = await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()
    assert results[ALICE].status == "accepted"
    assert dialer.connections == 1
    assert sum(w.startswith(b"RSET\r\nMAIL FROM:") for w in dialer.writes) == 1
    assert len(handler.messages) == 1


async def test_data_accepted_without_recipients_gets_a_lone_dot(fake_server, spool, dialer):
    # RFC 2920 §3.1: DATA goes out in the envelope's group, so a server may accept it
    # although it refused every recipient; the message itself must not follow.
    server = await fake_server(rcpt_replies={ALICE: USER_UNKNOWN})
    smtp = target(server.port, dialer)
    results = await smtp.deliver(job(spool, ALICE))
    assert results[ALICE].status == "permanent"
    assert "User unknown" in results[ALICE].reason
    await asyncio.sleep(0.05)  # the server reads the lone dot
    assert server.messages == [("ann@isp.example", [], b"")]
    assert b"leading dot" not in dialer.sent
    # That connection was closed (the server's state is unknown); the next one is fresh.
    results = await smtp.deliver(job(spool, BOB))
    await smtp.aclose()
    assert results[BOB].status == "accepted"
    assert dialer.connections == 2
    assert server.messages[-1][1] == [BOB]


@pytest.mark.parametrize(
    ("reply", "status", "words"),
    [
        (TRY_LATER, "temporary", "for now (it will be tried again)"),
        (CONTENT_REJECTED, "permanent", "permanently"),
    ],
)
async def test_reply_after_data_applies_to_accepted_recipients(
    start_server: StartServer, spool, reply: str, status: str, words: str
):
    handler = Handler(data_reply=reply, rcpt_replies={CAROL: USER_UNKNOWN})
    server = await start_server(handler)
    smtp = target(server.port)
    results = await smtp.deliver(job(spool, ALICE, BOB, CAROL))
    await smtp.aclose()
    for rcpt in (ALICE, BOB):
        assert results[rcpt].status == status
        assert results[rcpt].reason.endswith(f"{words}: {reply}")
        assert "did not accept the message" in results[rcpt].reason
    assert results[CAROL].status == "permanent"
    assert "User unknown" in results[CAROL].reason


async def test_refused_sender_fails_every_recipient(start_server: StartServer, spool):
    server = await start_server(Handler(mail_reply=SENDER_REJECTED))
    smtp = target(server.port)
    results = await smtp.deliver(job(spool, ALICE, BOB))
    await smtp.aclose()
    for result in results.values():
        assert result.status == "permanent"
        assert result.reason == (
            f"The office mail server refused the sender <ann@isp.example> permanently: "
            f"{SENDER_REJECTED}"
        )


async def test_kept_open_connection_carries_three_messages(
    start_server: StartServer, spool, dialer
):
    handler = Handler()
    server = await start_server(handler)
    smtp = target(server.port, dialer)
    for _ in range(3):
        results = await smtp.deliver(job(spool, ALICE))
        assert results[ALICE].status == "accepted"
    await smtp.aclose()
    assert dialer.connections == 1
    assert len(handler.messages) == 3
    # RFC 5321 §4.1.4: after a transaction that ended with 250, MAIL follows at once.
    assert b"RSET" not in dialer.sent
    # Two writes per message: MAIL, RCPT and DATA as one group (RFC 2920), then the
    # message with its terminator; the EHLO before and the QUIT after.
    envelope = f"MAIL FROM:<ann@isp.example> SIZE={len(PREPEND + MESSAGE)} BODY=8BITMIME\r\n"
    group = f"{envelope}RCPT TO:<{ALICE}>\r\nDATA\r\n".encode()
    assert dialer.writes[1:-1] == [group, *dialer.writes[2:3]] * 3
    assert dialer.writes[2].endswith(b"\r\n.\r\n")


async def test_two_messages_at_once_go_over_two_kept_connections(
    start_server: StartServer, spool, dialer
):
    handler = Handler()
    server = await start_server(handler)
    smtp = target(server.port, dialer)
    assert smtp.parallel == 2
    for _ in range(3):
        results = await asyncio.gather(
            smtp.deliver(job(spool, ALICE)),
            smtp.deliver(job(spool, BOB)),
            smtp.deliver(job(spool, CAROL)),  # waits for one of the two
        )
        assert [r[rcpt].status for r, rcpt in zip(results, (ALICE, BOB, CAROL), strict=True)] == [
            "accepted"
        ] * 3
    await smtp.aclose()
    assert dialer.connections == 2  # made when first needed, then kept
    assert sorted(m.rcpt_tos[0] for m in handler.messages) == sorted([ALICE, BOB, CAROL] * 3)


async def test_connection_closed_by_server_is_reopened(start_server: StartServer, spool, dialer):
    handler = Handler()
    # aiosmtpd says "421 Timeout" and hangs up after 0.2 s idle.
    server = await start_server(handler, timeout=0.2)
    smtp = target(server.port, dialer)
    await smtp.deliver(job(spool, ALICE))
    await asyncio.sleep(0.5)
    results = await smtp.deliver(job(spool, BOB))
    await smtp.aclose()
    assert results[BOB].status == "accepted"
    assert dialer.connections == 2
    assert [m.rcpt_tos for m in handler.messages] == [[ALICE], [BOB]]


async def test_connection_dropped_silently_is_reopened(fake_server, spool, dialer):
    server = await fake_server()
    smtp = target(server.port, dialer)
    await smtp.deliver(job(spool, ALICE))
    server.hang_up_all()
    await asyncio.sleep(0.05)
    results = await smtp.deliver(job(spool, BOB))
    await smtp.aclose()
    assert results[BOB].status == "accepted"
    assert server.connections == dialer.connections == 2
    assert len(server.messages) == 2


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_temporary_in_words(spool):
    port = unused_port()
    smtp = target(port)
    results = await smtp.deliver(job(spool, ALICE, BOB))
    for result in results.values():
        assert result.status == "temporary"
        assert result.reason.startswith(
            f"The office mail server at 127.0.0.1:{port} could not be reached"
        )
        assert "refused" in result.reason
        assert "will be tried again" in result.reason
    await smtp.aclose()


async def test_silent_server_times_out(fake_server, spool):
    server = await fake_server(silent=True)
    smtp = target(server.port, timeout=0.2)
    results = await smtp.deliver(job(spool, ALICE))
    assert results[ALICE].status == "temporary"
    assert "did not answer within 0.2 seconds" in results[ALICE].reason
    await smtp.aclose()


async def test_server_dropping_mid_data_is_temporary(fake_server, spool):
    server = await fake_server(drop_mid_data=True)
    smtp = target(server.port)
    results = await smtp.deliver(job(spool, ALICE, BOB))
    await smtp.aclose()
    assert all(r.status == "temporary" for r in results.values())
    assert results[ALICE].reason.startswith(
        f"The connection to the office mail server at 127.0.0.1:{server.port} was lost"
    )
    assert server.messages == []
    # The next attempt works on a fresh connection.
    server.drop_mid_data = False
    results = await smtp.deliver(job(spool, ALICE, BOB))
    await smtp.aclose()
    assert all(r.status == "accepted" for r in results.values())


async def test_drop_after_the_final_dot_is_not_retried_on_the_spot(fake_server, spool):
    # The unavoidable window: the server may have the message. Report temporary
    # and do not resend now (the ledger decides), rather than risk two copies.
    server = await fake_server(drop_before_final_reply=True)
    smtp = target(server.port)
    await smtp.deliver(job(spool, ALICE))  # first message on a fresh connection
    results = await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()
    assert results[ALICE].status == "temporary"
    assert server.commands.count("DATA") == 2


async def test_drop_before_the_mail_reply_on_a_kept_connection_is_retried(
    fake_server, spool, dialer
):
    # Nothing of the message was acknowledged: the line was dead before it began,
    # so it goes once more on a fresh connection, and arrives once.
    server = await fake_server(hang_up_on=("MAIL", 2))
    smtp = target(server.port, dialer)
    await smtp.deliver(job(spool, ALICE))
    results = await smtp.deliver(job(spool, BOB))
    await smtp.aclose()
    assert results[BOB].status == "accepted"
    assert server.connections == dialer.connections == 2
    assert [m[1] for m in server.messages] == [[ALICE], [BOB]]


async def test_drop_after_the_mail_reply_is_not_retried_on_the_spot(fake_server, spool, dialer):
    # The server had answered MAIL: the transaction was under way, so the outcome
    # is left to the next poll (the ledger decides), not retried at once.
    server = await fake_server(hang_up_on=("RCPT", 2))
    smtp = target(server.port, dialer)
    await smtp.deliver(job(spool, ALICE))
    results = await smtp.deliver(job(spool, BOB))
    await smtp.aclose()
    assert results[BOB].status == "temporary"
    assert "was lost" in results[BOB].reason
    assert server.connections == dialer.connections == 1
    assert [m[1] for m in server.messages] == [[ALICE]]


async def test_drop_on_a_fresh_connection_is_not_retried(fake_server, spool, dialer):
    server = await fake_server(hang_up_on=("MAIL", 1))
    smtp = target(server.port, dialer)
    results = await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()
    assert results[ALICE].status == "temporary"
    assert dialer.connections == 1
    assert server.messages == []


async def test_timeout_applies_to_each_answer_not_the_whole_group(fake_server, spool):
    # Three RCPT replies 0.2 s apart: 0.6 s for the group, each within the 0.4 s.
    server = await fake_server(rcpt_delay=0.2)
    smtp = target(server.port, timeout=0.4)
    results = await smtp.deliver(job(spool, ALICE, BOB, CAROL))
    assert all(r.status == "accepted" for r in results.values())
    server.rcpt_delay = 0.6
    results = await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()
    assert results[ALICE].status == "temporary"
    assert "did not answer within 0.4 seconds" in results[ALICE].reason


async def test_cancelled_delivery_never_leaves_a_half_used_connection(fake_server, spool, dialer):
    # The user quits while the server is still storing the message: the next
    # delivery must start on a fresh connection, not send RSET into old state.
    server = await fake_server(stall_final_reply_once=True)
    smtp = target(server.port, dialer)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(smtp.deliver(job(spool, ALICE)), 0.3)
    results = await smtp.deliver(job(spool, BOB))
    await smtp.aclose()
    assert results[BOB].status == "accepted"
    assert dialer.connections == 2
    assert [m[1] for m in server.messages] == [[BOB]]


async def test_big_message_is_streamed_not_loaded(fake_server, spool):
    server = await fake_server(keep_messages=False)
    line = b"x" * 98 + b"\r\n"
    path = spool(line * (20 * 1024 * 1024 // len(line)))
    smtp = target(server.port)
    the_job = DeliveryJob(key=KEY, path=path, sender="a@isp.example", recipients=(ALICE,))
    tracemalloc.start()
    try:
        results = await smtp.deliver(the_job)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await smtp.aclose()
    assert results[ALICE].status == "accepted"
    assert server.received_bytes == path.stat().st_size + len(b".\r\n")
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a 20 MB message"


async def test_null_sender(fake_server, spool):
    server = await fake_server()
    smtp = target(server.port)
    results = await smtp.deliver(job(spool, ALICE, sender=""))
    await smtp.aclose()
    assert results[ALICE].status == "accepted"
    assert server.messages[0][0] == ""
    assert any(c.startswith("MAIL FROM:<> ") for c in server.commands)


async def test_missing_spool_file_is_temporary(start_server: StartServer, spool):
    server = await start_server(Handler())
    smtp = target(server.port)
    the_job = job(spool, ALICE)
    the_job.path.unlink()
    results = await smtp.deliver(the_job)
    await smtp.aclose()
    assert results[ALICE].status == "temporary"
    assert "Could not read the spooled message" in results[ALICE].reason


async def test_international_address_needs_smtputf8(start_server: StartServer, spool):
    handler = Handler()
    server = await start_server(handler)
    smtp = target(server.port)
    results = await smtp.deliver(job(spool, ALICE, "jörg@example.com"))
    await smtp.aclose()
    assert results[ALICE].status == "accepted"
    assert results["jörg@example.com"].status == "permanent"
    assert "SMTPUTF8" in results["jörg@example.com"].reason

    utf8 = Handler()
    server = await start_server(utf8, enable_SMTPUTF8=True)
    smtp = target(server.port)
    results = await smtp.deliver(job(spool, "jörg@example.com"))
    await smtp.aclose()
    assert results["jörg@example.com"].status == "accepted"
    assert "SMTPUTF8" in utf8.messages[0].mail_options


async def test_injection_attempt_in_an_address_is_refused(start_server: StartServer, spool):
    handler = Handler()
    server = await start_server(handler)
    smtp = target(server.port)
    evil = "x@example.com>\r\nRCPT TO:<victim@example.com"
    results = await smtp.deliver(job(spool, evil, ALICE))
    await smtp.aclose()
    assert results[evil].status == "permanent"
    assert handler.messages[0].rcpt_tos == [ALICE]


# -- TLS and login ----------------------------------------------------------------


async def test_starttls_with_verified_certificate(
    start_server: StartServer, spool, server_tls: ssl.SSLContext, ca_pem: Path
):
    handler = Handler()
    server = await start_server(handler, tls_context=server_tls, require_starttls=True)
    smtp = target(server.port, security="starttls", ca_file=ca_pem)
    results = await smtp.deliver(job(spool, ALICE))
    words = await smtp.check()
    await smtp.aclose()
    assert results[ALICE].status == "accepted"
    assert handler.messages[0].content == PREPEND + MESSAGE
    assert words.startswith("Connected to the office mail server at 127.0.0.1:")
    assert "encrypted (TLSv1." in words


async def test_untrusted_certificate_raises_tls_error(
    start_server: StartServer, spool, server_tls: ssl.SSLContext, tmp_path: Path
):
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    handler = Handler()
    server = await start_server(handler, tls_context=server_tls)
    smtp = target(server.port, security="starttls", ca_file=stranger)
    with pytest.raises(TLSError, match=r"certificate .* is not trusted") as caught:
        await smtp.deliver(job(spool, ALICE))
    assert caught.value.detail
    with pytest.raises(TLSError):
        await smtp.check()
    await smtp.aclose()
    assert handler.messages == []


async def test_unreadable_ca_file_is_a_tls_error_in_words(spool, tmp_path: Path):
    smtp = target(unused_port(), security="starttls", ca_file=tmp_path / "missing.pem")
    with pytest.raises(TLSError, match=r"missing\.pem chosen for the office mail server"):
        await smtp.check()


async def test_starttls_not_offered_refuses_to_continue_in_clear(
    start_server: StartServer, spool, dialer
):
    handler = Handler()
    server = await start_server(handler)
    smtp = target(server.port, dialer, security="starttls")
    with pytest.raises(TLSError, match="does not offer STARTTLS"):
        await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()
    assert b"MAIL FROM" not in dialer.sent
    assert handler.messages == []


async def test_implicit_tls(start_server: StartServer, spool, server_tls, ca_pem: Path):
    handler = Handler()
    server = await start_server(handler, implicit_tls=server_tls)
    smtp = target(server.port, security="tls", ca_file=ca_pem)
    results = await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()
    assert results[ALICE].status == "accepted"
    assert handler.messages[0].content == PREPEND + MESSAGE


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_login_over_starttls(
    start_server: StartServer, spool, server_tls, ca_pem: Path, mechanism: str
):
    handler = Handler()
    other = "LOGIN" if mechanism == "PLAIN" else "PLAIN"
    server = await start_server(
        handler, tls_context=server_tls, auth_required=True, auth_exclude_mechanism=[other]
    )
    smtp = target(
        server.port, security="starttls", ca_file=ca_pem, username=USER, password=PASSWORD
    )
    results = await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()
    assert results[ALICE].status == "accepted"
    assert handler.mechanisms_used == [mechanism]


async def test_wrong_password_raises_auth_error(
    start_server: StartServer, spool, server_tls, ca_pem: Path
):
    server = await start_server(Handler(), tls_context=server_tls, auth_required=True)
    smtp = target(server.port, security="starttls", ca_file=ca_pem, username=USER, password="wrong")
    with pytest.raises(AuthError, match="rejected the user name or password for office"):
        await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()


async def test_login_over_plain_text_is_refused(start_server: StartServer, spool, dialer):
    handler = Handler()
    server = await start_server(handler, auth_require_tls=False)
    smtp = target(server.port, dialer, username=USER, password=PASSWORD)
    with pytest.raises(InsecureLoginRefused, match="not encrypted"):
        await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()
    assert b"AUTH" not in dialer.sent
    assert handler.messages == []


async def test_login_over_plain_text_when_explicitly_allowed(start_server: StartServer, spool):
    handler = Handler()
    # (auth_required=True without TLS would make aiosmtpd itself warn.)
    server = await start_server(handler, auth_require_tls=False)
    smtp = target(server.port, username=USER, password=PASSWORD, allow_plaintext_login=True)
    results = await smtp.deliver(job(spool, ALICE))
    await smtp.aclose()
    assert results[ALICE].status == "accepted"
    assert handler.mechanisms_used == ["PLAIN"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_password_never_reaches_the_log(
    start_server: StartServer,
    spool,
    server_tls,
    ca_pem: Path,
    caplog: pytest.LogCaptureFixture,
    mechanism: str,
):
    other = "LOGIN" if mechanism == "PLAIN" else "PLAIN"
    server = await start_server(
        Handler(), tls_context=server_tls, auth_required=True, auth_exclude_mechanism=[other]
    )
    smtp = target(
        server.port, security="starttls", ca_file=ca_pem, username=USER, password=PASSWORD
    )
    with caplog.at_level(logging.DEBUG, logger="postbridge.smtp"):
        await smtp.deliver(job(spool, ALICE))
        await smtp.aclose()
    text = caplog.text
    assert "MAIL FROM:<ann@isp.example>" in text  # the log is on
    assert f"AUTH {mechanism} **REDACTED**" in text
    secrets = [
        PASSWORD,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    ]
    assert not [s for s in secrets if s in text]


async def test_check_reports_unreachable_server(spool):
    from postbridge.engine.errors import NetworkError

    smtp = target(unused_port())
    with pytest.raises(NetworkError, match="could not be reached"):
        await smtp.check()
