"""The GUI thread stays responsive while the worker collects 1,000 messages.

A precise 5 ms timer runs on the GUI thread with the Activity window open while the worker
collects 1,000 messages from Dovecot; the longest gap between its ticks is the longest a click
would have waited. The benchmark tests/bench/gui_stall.py prints the same figures against the
target of 50 ms.

On an idle 2-core machine the longest stall is 10-35 ms. The assertion allows twice the target
for the longest single gap, because a loaded CI machine can deschedule the GUI thread for a
few tens of milliseconds that Postbridge has no part in, and holds the 99th percentile to half
the target; what it catches is the GUI doing per-message work or waiting on the worker (a live
table refresh during the poll measured 300 ms; blocking on the network would be seconds).

The data folder goes on tmpfs where there is one: without fsync costs the worker is busier
(harsher for the GUI, which shares the interpreter lock with it) and the test five times faster.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tests.app.conftest import AppFactory, add_user, user_mailbox, write_config
from tests.app.stall import TARGET_MS, big_message, count_files, measure_poll
from tests.servers.dovecot import Dovecot

pytestmark = pytest.mark.interop

MESSAGES = 1000
SHM = Path("/dev/shm")


@pytest.fixture
def fast_data_dir(tmp_path: Path) -> Iterator[Path]:
    if SHM.is_dir():
        path = Path(tempfile.mkdtemp(prefix="pb-stall-", dir=SHM))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path / "data"


def test_gui_thread_stays_responsive_during_a_1000_message_poll(
    qtbot: QtBot, dovecot: Dovecot, tmp_path: Path, make_app: AppFactory, fast_data_dir: Path
) -> None:
    add_user(dovecot, "alice")
    dovecot.add_messages("alice", [big_message(n) for n in range(MESSAGES)])
    mailbox = user_mailbox(dovecot, "alice", "alice@example.com")
    app = make_app(write_config(tmp_path, mailbox, data_dir=fast_data_dir))
    app.start()
    new = fast_data_dir / "Mail" / "alice@example.com" / "new"
    result = measure_poll(app, expected=MESSAGES, delivered=lambda: count_files(new))
    print(
        f"\n{result.messages} messages in {result.seconds:.1f} s; longest GUI stall "
        f"{result.worst_ms:.1f} ms (99th percentile {result.p99_ms:.1f} ms, {result.ticks} ticks)"
    )
    assert app.activity is not None and app.activity.recent_model.rowCount() > 0
    assert result.ticks > result.seconds * 50, "the GUI timer hardly ran at all"
    assert result.p99_ms < TARGET_MS / 2
    assert result.worst_ms < 2 * TARGET_MS
