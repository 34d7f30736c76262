"""LMTP delivery: one reply per accepted recipient after DATA (RFC 2033 §4.2)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.lmtp import LMTP

from postbridge.engine.delivery.base import DeliveryJob
from postbridge.engine.delivery.lmtp import LmtpTarget
from tests.engine.delivery.mailservers import (
    MAILBOX_BUSY,
    OVER_QUOTA,
    USER_UNKNOWN,
    Dialer,
    Handler,
    StartServer,
)

KEY = "1764440000.pb42_a1b2c3d4"
PREPEND = b"X-Postbridge-Original-To: all@isp.example\r\n"
MESSAGE = b"Subject: lmtp\r\n\r\n.dot\r\nbody\r\n"
ALICE, BOB, CAROL, DAVE = (f"{n}@example.com" for n in ("alice", "bob", "carol", "dave"))


def job(spool: Callable[[bytes], Path], *recipients: str) -> DeliveryJob:
    return DeliveryJob(
        key=KEY,
        path=spool(MESSAGE),
        sender="ann@isp.example",
        recipients=recipients,
        prepend=PREPEND,
    )


def target(port: int, dialer: Dialer | None = None, **kw: Any) -> LmtpTarget:
    kw.setdefault("security", "none")
    kw.setdefault("timeout", 5)
    return LmtpTarget(host="127.0.0.1", port=port, open_connection=dialer, **kw)


async def test_each_recipient_gets_its_own_final_reply(start_server: StartServer, spool, dialer):
    handler = Handler(
        rcpt_replies={CAROL: USER_UNKNOWN},
        lmtp_replies={BOB: OVER_QUOTA},
    )
    server = await start_server(handler, lmtp=True)
    lmtp = target(server.port, dialer)
    results = await lmtp.deliver(job(spool, ALICE, BOB, CAROL, DAVE))
    await lmtp.aclose()

    assert {r: res.status for r, res in results.items()} == {
        ALICE: "accepted",
        BOB: "temporary",
        CAROL: "permanent",
        DAVE: "accepted",
    }
    assert results[ALICE].reason == (
        f"Delivered to the office mail server (LMTP): 250 2.0.0 <{ALICE}> Saved"
    )
    assert results[BOB].reason == (
        f"The office mail server (LMTP) did not accept the message for {BOB} "
        f"for now (it will be tried again): {OVER_QUOTA}"
    )
    assert "refused carol@example.com permanently: 550 5.1.1" in results[CAROL].reason
    [received] = handler.messages
    assert received.rcpt_tos == [ALICE, BOB, DAVE]
    assert received.content == PREPEND + MESSAGE
    assert dialer.writes[0].startswith(b"LHLO ")


async def test_permanent_final_reply(start_server: StartServer, spool):
    server = await start_server(Handler(lmtp_replies={ALICE: USER_UNKNOWN}), lmtp=True)
    lmtp = target(server.port)
    results = await lmtp.deliver(job(spool, ALICE))
    await lmtp.aclose()
    assert results[ALICE].status == "permanent"
    assert results[ALICE].reason.endswith(f"permanently: {USER_UNKNOWN}")


async def test_replies_already_read_stand_when_the_line_drops(fake_server, spool):
    # Alice's 250 arrived before the drop: she has the message and must not get
    # it twice; Bob's outcome is unknown, so he is tried again.
    server = await fake_server(lmtp=True, drop_after_final_replies=1)
    lmtp = target(server.port)
    results = await lmtp.deliver(job(spool, ALICE, BOB))
    await lmtp.aclose()
    assert results[ALICE].status == "accepted"
    assert results[BOB].status == "temporary"
    assert "was lost" in results[BOB].reason


async def test_rcpt_refusals_stand_when_the_line_drops_in_data(fake_server, spool):
    server = await fake_server(lmtp=True, drop_mid_data=True, rcpt_replies={CAROL: USER_UNKNOWN})
    lmtp = target(server.port)
    results = await lmtp.deliver(job(spool, ALICE, BOB, CAROL))
    await lmtp.aclose()
    assert [r.status for r in results.values()] == ["temporary", "temporary", "permanent"]
    assert USER_UNKNOWN in results[CAROL].reason
    assert server.messages == []


async def test_connection_is_kept_and_reset_after_a_refusal(fake_server, spool, dialer):
    server = await fake_server(lmtp=True, final_replies={BOB: MAILBOX_BUSY})
    lmtp = target(server.port, dialer)
    for _ in range(3):
        results = await lmtp.deliver(job(spool, ALICE, BOB))
        assert [r.status for r in results.values()] == ["accepted", "temporary"]
    await lmtp.aclose()
    assert server.connections == dialer.connections == 1
    assert server.commands.count("RSET") == 2
    assert server.commands[-1] == "QUIT"


async def test_no_reset_after_a_message_every_recipient_took(fake_server, spool, dialer):
    server = await fake_server(lmtp=True)
    lmtp = target(server.port, dialer)
    for _ in range(3):
        results = await lmtp.deliver(job(spool, ALICE, BOB))
        assert [r.status for r in results.values()] == ["accepted", "accepted"]
    await lmtp.aclose()
    assert dialer.connections == 1
    assert "RSET" not in server.commands
    assert len(server.messages) == 3
    # LHLO, then two writes per message (envelope with DATA; the message), QUIT.
    assert len(dialer.writes) == 1 + 2 * 3 + 1


@pytest.mark.skipif(os.name == "nt", reason="unix sockets")
async def test_unix_socket(spool):
    handler = Handler()
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as folder:  # short path: sun_path is ~100 bytes
        path = os.path.join(folder, "lmtp")
        protocols: list[LMTP] = []

        def factory() -> LMTP:
            protocols.append(LMTP(handler, loop=loop, hostname="mail.test"))
            return protocols[-1]

        server = await loop.create_unix_server(factory, path)
        lmtp = LmtpTarget(host=path, port=0, security="none", timeout=5)
        try:
            assert lmtp.description == f"LMTP socket {path}"
            results = await lmtp.deliver(job(spool, ALICE))
        finally:
            await lmtp.aclose()
            server.close()
            await server.wait_closed()
        assert results[ALICE].status == "accepted"
        assert handler.messages[0].content == PREPEND + MESSAGE


def test_description():
    assert LmtpTarget(host="127.0.0.1", port=24, security="none").description == (
        "LMTP server 127.0.0.1:24"
    )
