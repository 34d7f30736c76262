"""Login: which method is chosen, plaintext refusal, RFC 2449/3206 codes, no password in logs."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from postbridge.engine.errors import (
    AuthError,
    InsecureLoginRefused,
    MailboxBusy,
    ServerPermanentError,
    ServerTemporaryError,
)
from postbridge.engine.pop3.auth import choose_method
from postbridge.engine.pop3.client import LoginMethod
from postbridge.engine.pop3.replies import Capabilities
from tests.engine.pop3.conftest import Certs, ClientFactory
from tests.fakes.pop3 import FakePop3Server, FakePop3Session

MESSAGE = b"Subject: hello\r\n\r\nbody\r\n"
PASSWORD = "s3cr3t-Pa55"
LOGIN_VERBS = ("USER", "PASS", "APOP", "AUTH")


def login_commands(server: FakePop3Server) -> list[str]:
    return [command.split()[0] for command in server.commands if command.startswith(LOGIN_VERBS)]


@pytest.mark.parametrize(
    ("server_options", "expected"),
    [
        ({}, ["AUTH"]),  # SASL PLAIN advertised: one round trip inside TLS
        ({"sasl": ()}, ["USER", "PASS"]),
        ({"sasl": (), "user_login": False}, ["APOP"]),
        ({"sasl": (), "capa": False}, ["USER", "PASS"]),  # nothing known: USER
    ],
)
async def test_auto_over_tls(
    certs: Certs,
    make_client: ClientFactory,
    server_options: dict[str, Any],
    expected: list[str],
) -> None:
    server = FakePop3Server(
        [MESSAGE], password=PASSWORD, tls_context=certs.server, **server_options
    )
    async with server:
        client = make_client(
            server, security="tls", ssl_context=certs.client, allow_plaintext_login=False
        )
        async with client:
            await client.login("alice", PASSWORD)
            assert client.authenticated
            assert await client.stat() == (1, len(MESSAGE))
    assert login_commands(server) == expected


async def test_auto_unencrypted_prefers_apop(make_client: ClientFactory) -> None:
    server = FakePop3Server([MESSAGE], password=PASSWORD)
    async with server, make_client(server, allow_plaintext_login=False) as client:
        assert client.choose_login_method() == "apop"
        await client.login("alice", PASSWORD)
    assert login_commands(server) == ["APOP"]
    assert not any(PASSWORD in command for command in server.commands)


@pytest.mark.parametrize("method", ["auto", "user", "plain"])
async def test_plaintext_refused_over_unencrypted_connection(
    make_client: ClientFactory, method: LoginMethod
) -> None:
    server = FakePop3Server([MESSAGE], password=PASSWORD, apop=False)
    async with server, make_client(server, allow_plaintext_login=False) as client:
        with pytest.raises(InsecureLoginRefused) as caught:
            await client.login("alice", PASSWORD, method=method)
        message = str(caught.value)
        assert "not encrypted" in message and "127.0.0.1" in message
        assert "office@isp" in message
        # The session is still usable, and nothing was sent.
        await client.noop()
    assert login_commands(server) == []


@pytest.mark.parametrize(("method", "verbs"), [("user", ["USER", "PASS"]), ("plain", ["AUTH"])])
async def test_plaintext_allowed_explicitly(
    make_client: ClientFactory, method: LoginMethod, verbs: list[str]
) -> None:
    server = FakePop3Server([MESSAGE], password=PASSWORD)
    async with server, make_client(server, allow_plaintext_login=True) as client:
        await client.login("alice", PASSWORD, method=method)
    assert login_commands(server) == verbs


async def test_apop_without_timestamp(make_client: ClientFactory) -> None:
    server = FakePop3Server([MESSAGE], apop=False)
    async with server, make_client(server) as client:
        with pytest.raises(AuthError, match="does not offer APOP"):
            await client.login("alice", "secret", method="apop")


@pytest.mark.parametrize("method", ["user", "apop", "plain"])
async def test_wrong_password(make_client: ClientFactory, method: LoginMethod) -> None:
    server = FakePop3Server([MESSAGE], password=PASSWORD)
    async with server, make_client(server) as client:
        with pytest.raises(AuthError) as caught:
            await client.login("alice", "not-the-password", method=method)
        assert str(caught.value) == "The ISP rejected the password for alice"
        assert caught.value.detail == "127.0.0.1: -ERR [AUTH] Authentication failed."
        assert caught.value.needs_user
        # A rejected login leaves the session in step: another attempt works.
        await client.login("alice", PASSWORD, method=method)


async def test_in_use_knob(make_client: ClientFactory) -> None:
    server = FakePop3Server([MESSAGE])
    server.in_use = True
    async with server, make_client(server) as client:
        with pytest.raises(MailboxBusy) as caught:
            await client.login("alice", "secret")
    assert str(caught.value).startswith("Another program is reading the mailbox office@isp")
    assert "try again later" in str(caught.value)
    assert caught.value.detail is not None and "[IN-USE]" in caught.value.detail


async def test_second_session_finds_the_mailbox_locked(make_client: ClientFactory) -> None:
    server = FakePop3Server([MESSAGE])
    async with server, make_client(server) as first, make_client(server) as second:
        await first.login("alice", "secret")
        with pytest.raises(MailboxBusy):
            await second.login("alice", "secret")


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        ("[LOGIN-DELAY] Wait 15 minutes", MailboxBusy, "again so soon"),
        ("[SYS/TEMP] Maintenance", ServerTemporaryError, "temporary problem"),
        ("[SYS/PERM] Account disabled", ServerPermanentError, "the ISP has to fix it"),
        ("[SYS] unspecified", ServerPermanentError, "lasting problem"),
        ("[AUTH] Account expired", AuthError, "rejected the password for alice"),
        ("Something odd", AuthError, "rejected the password for alice"),
    ],
)
async def test_login_response_codes(
    make_client: ClientFactory, reply: str, error: type[Exception], words: str
) -> None:
    server = FakePop3Server([MESSAGE])
    server.login_error = reply
    async with server, make_client(server) as client:
        with pytest.raises(error) as caught:
            await client.login("alice", "secret")
    assert words in str(caught.value)
    assert reply.split("] ")[-1] in str(getattr(caught.value, "detail", ""))


async def test_long_plain_credentials_use_a_continuation(make_client: ClientFactory) -> None:
    """RFC 5034 §4: an AUTH line over 255 octets sends the response after '+ '."""
    long_password = "p" * 300
    server = FakePop3Server([MESSAGE], password=long_password)
    async with server, make_client(server) as client:
        await client.login("alice", long_password, method="plain")
    assert server.commands[1] == "AUTH PLAIN"


async def test_line_breaks_in_credentials_are_not_sent(make_client: ClientFactory) -> None:
    server = FakePop3Server([MESSAGE])
    async with server, make_client(server) as client:
        with pytest.raises(AuthError, match="line break"):
            await client.login("alice\r\nDELE 1", "secret", method="user")
    assert login_commands(server) == []


class PerUserExpireSession(FakePop3Session):
    """Advertises 'EXPIRE 30 USER' before login and the user's real value after."""

    async def cmd_capa(self, arg: str) -> None:
        expire = "30 USER" if self.state == "AUTHORIZATION" else "0"
        self.push(f"+OK\r\nUIDL\r\nUSER\r\nEXPIRE {expire}\r\n.")


async def test_capabilities_refreshed_after_login(make_client: ClientFactory) -> None:
    server = FakePop3Server([MESSAGE], session_class=PerUserExpireSession)
    async with server, make_client(server) as client:
        assert client.capabilities.expire == "30"
        await client.login("alice", "secret", method="user")
        assert client.capabilities.expire == "0"


@pytest.mark.parametrize("method", ["user", "apop", "plain"])
async def test_passwords_never_logged(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture, method: LoginMethod
) -> None:
    caplog.set_level(logging.DEBUG, logger="postbridge.pop3")
    server = FakePop3Server([MESSAGE], password=PASSWORD)
    async with server, make_client(server) as client:
        with pytest.raises(AuthError) as caught:
            await client.login("alice", PASSWORD + "x", method=method)
        await client.login("alice", PASSWORD, method=method)
        await client.stat()
    secrets = [
        PASSWORD,
        base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode(),
        base64.b64encode(f"\0alice\0{PASSWORD}x".encode()).decode(),
    ]
    logged = caplog.text
    for secret in secrets:
        assert secret not in logged
        assert secret not in caught.value.describe()
    assert "**REDACTED**" in logged
    assert "C: STAT" in logged  # traffic is logged, only the secrets are not
    # The fake saw the real thing, so the test would notice a client that sent nothing.
    assert any(command.split()[0] in ("PASS", "APOP", "AUTH") for command in server.commands)


async def test_sasl_continuation_line_is_redacted(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="postbridge.pop3")
    long_password = "q" * 300
    server = FakePop3Server([MESSAGE], password=long_password)
    async with server, make_client(server) as client:
        await client.login("alice", long_password, method="plain")
    token = base64.b64encode(f"\0alice\0{long_password}".encode()).decode()
    assert "qqqq" not in caplog.text
    assert token[:40] not in caplog.text
    assert "C: AUTH PLAIN" in caplog.text
    assert "C: **REDACTED**" in caplog.text


def choose(method: LoginMethod = "auto", **facts: Any) -> str:
    options: dict[str, Any] = {
        "capabilities": Capabilities(user=True, sasl=frozenset({"PLAIN"})),
        "capa_supported": True,
        "encrypted": True,
        "apop_timestamp": "<1.2@isp>",
        "allow_plaintext": False,
        "host": "pop.isp.example",
        "label": "office",
    }
    options.update(facts)
    return choose_method(method, **options)


def test_choose_method_table() -> None:
    no_sasl = Capabilities(user=True)
    nothing = Capabilities()
    assert choose() == "plain"
    assert choose(capabilities=no_sasl) == "user"
    assert choose(capabilities=nothing) == "apop"
    assert choose(capabilities=nothing, apop_timestamp=None) == "user"
    assert choose(capabilities=nothing, capa_supported=False) == "user"
    assert choose(encrypted=False) == "apop"
    assert choose(encrypted=False, apop_timestamp=None, allow_plaintext=True) == "plain"
    assert choose("user", encrypted=False, allow_plaintext=True) == "user"
    assert choose("apop") == "apop"
    with pytest.raises(InsecureLoginRefused, match=r"pop\.isp\.example"):
        choose(encrypted=False, apop_timestamp=None)
    with pytest.raises(InsecureLoginRefused):
        choose("plain", encrypted=False)
    with pytest.raises(AuthError, match="does not offer APOP"):
        choose("apop", apop_timestamp=None)
    with pytest.raises(ValueError):
        choose("cram-md5")  # type: ignore[arg-type]
