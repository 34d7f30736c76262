"""The online signal page's Test button, against a Postfix ISP (ETRN) and the fake ODMR server.

ETRN is sent for real (the ISP then delivers what it held to the office, as it
would after a poll); ATRN only logs in and checks that ATRN is offered, so the
ISP's held mail stays there until the first real poll.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from postbridge.app.signal_editor import SignalEditor
from postbridge.engine.config import SignalConfig
from tests.app.wizard_helpers import press_test, wait_idle
from tests.fakes.odmr import FakeOdmrServer, QueuedMessage, run_in_thread
from tests.servers.certs import Certificates
from tests.servers.postfix import PostfixIsp, PostfixOffice

ODMR_PASSWORD = "odmr-pw"


@pytest.fixture
def editor(qtbot: QtBot) -> Iterator[SignalEditor]:
    page = SignalEditor(stored=lambda account: None)
    qtbot.addWidget(page)
    page.show()
    yield page
    wait_idle(qtbot)


def fill(editor: SignalEditor, cfg: SignalConfig, *, password: str = "") -> None:
    editor.load(cfg)
    editor.password.setText(password)


def test_etrn_test_sends_it_and_reports_each_domain(
    qtbot: QtBot,
    editor: SignalEditor,
    postfix_isp: PostfixIsp,
    postfix_office: PostfixOffice,
    ca_file: Path,
) -> None:
    cfg = SignalConfig(
        kind="etrn",
        host="127.0.0.1",
        port=postfix_isp.smtp_port,
        domains=("example.com",),
        ca_file=ca_file,
    )
    fill(editor, cfg)
    ok, words = press_test(qtbot, editor.test)
    assert ok, words
    assert f"ETRN sent to 127.0.0.1:{postfix_isp.smtp_port}" in words
    assert "example.com: the ISP started delivering the held mail" in words

    editor.domains.setText("noflush.test")
    ok, words = press_test(qtbot, editor.test)
    assert not ok
    assert "ETRN was refused: noflush.test:" in words and "459" in words


def test_etrn_test_without_a_server_says_so(qtbot: QtBot, editor: SignalEditor) -> None:
    fill(editor, SignalConfig(kind="etrn", host="127.0.0.1", port=1, domains=("example.com",)))
    ok, words = press_test(qtbot, editor.test)
    assert not ok and "could not be reached (the connection was refused" in words


@pytest.fixture
def odmr(certificates: Certificates) -> Iterator[FakeOdmrServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.cert_file, certificates.key_file)
    held = QueuedMessage(
        sender="x@outside.test",
        recipients=["alice@example.com"],
        data=b"Subject: held\r\n\r\nheld\r\n",
    )
    server = FakeOdmrServer([held], password=ODMR_PASSWORD, tls_context=context)
    _, stop = run_in_thread(server)
    try:
        yield server
    finally:
        stop()


def test_atrn_test_logs_in_and_leaves_the_mail_at_the_isp(
    qtbot: QtBot, editor: SignalEditor, odmr: FakeOdmrServer, ca_file: Path
) -> None:
    cfg = SignalConfig(
        kind="atrn",
        host=odmr.host,
        port=odmr.port,
        domains=("example.com",),
        username="example.com",
        ca_file=ca_file,
    )
    fill(editor, cfg, password=ODMR_PASSWORD)
    ok, words = press_test(qtbot, editor.test)
    assert ok, words
    assert "as example.com" in words and "it offers ATRN" in words
    assert len(odmr.queue) == 1 and not odmr.acknowledged  # nothing was fetched

    editor.password.setText("wrong")
    ok, words = press_test(qtbot, editor.test)
    assert not ok, words
    assert "password" in words.lower() or "login" in words.lower()
