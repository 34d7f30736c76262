"""The fake server itself: it must behave like a POP3 server to a client we did not write.

CPython's blocking poplib drives it from a background thread, the way a test of
the synchronous CLI will.
"""

from __future__ import annotations

import poplib

import pytest

from tests.fakes.pop3 import FakePop3Server, run_in_thread

MESSAGES = [b"Subject: one\r\n\r\n.dot\r\n", b"Subject: two\r\n\r\nbody\r\n"]


def test_run_in_thread_serves_poplib() -> None:
    server = FakePop3Server(MESSAGES)
    (host, port), stop = run_in_thread(server)
    try:
        pop = poplib.POP3(host, port, timeout=5)
        pop.user("alice")
        pop.pass_("secret")
        assert pop.stat() == (2, sum(map(len, MESSAGES)))
        _, lines, _ = pop.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == MESSAGES[0]
        assert sorted(pop.capa()) == sorted(
            [
                "TOP",
                "RESP-CODES",
                "UIDL",
                "PIPELINING",
                "USER",
                "SASL",
                "AUTH-RESP-CODE",
                "IMPLEMENTATION",
            ]
        )
        pop.dele(1)
        pop.quit()
    finally:
        stop()
    assert server.remaining == MESSAGES[1:]
    assert server.sessions == 1


def test_apop_with_poplib() -> None:
    server = FakePop3Server(MESSAGES)
    (host, port), stop = run_in_thread(server)
    try:
        pop = poplib.POP3(host, port, timeout=5)
        pop.apop("alice", "secret")
        assert pop.stat()[0] == 2
        pop.quit()
        pop = poplib.POP3(host, port, timeout=5)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            pop.apop("alice", "wrong")
        pop.quit()
    finally:
        stop()


def test_stop_ends_a_stalled_session() -> None:
    server = FakePop3Server(MESSAGES)
    server.stall = {"STAT"}
    (host, port), stop = run_in_thread(server)
    pop = poplib.POP3(host, port, timeout=5)
    try:
        pop.user("alice")
        pop.pass_("secret")
        pop.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            pop.stat()
    finally:
        stop()
        pop.close()
