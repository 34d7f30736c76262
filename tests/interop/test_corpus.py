"""Every real-world message of ../shared/corpus survives the whole pipeline.

373 fixtures from other mail projects, many malformed (broken MIME, undecodable bytes,
headers that make CPython's own parser raise, mbox From_ lines, bare LFs), are put into a
global mailbox at a private Dovecot and collected in one poll. Each must be delivered
exactly once per recipient — to the postmaster at worst — with none lost, none
quarantined and the poll not aborted.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postbridge.engine import config as configmod
from postbridge.engine.cycle import Collector
from postbridge.engine.ledger import DELIVERED
from postbridge.engine.secrets import SecretStore
from tests.servers.dovecot import Dovecot

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus"
PASSWORD = "corpus-pw"


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the shared corpus is missing at {CORPUS}")
        pytest.skip(f"no shared corpus at {CORPUS} (it lives beside the repository)")
    skip = {"README.md", "manifest.tsv"}
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and "LICENSES" not in p.parts and p.name not in skip
    )


async def test_every_corpus_message_is_delivered_once(dovecot: Dovecot, tmp_path: Path) -> None:
    files = corpus_files()
    assert len(files) == 373
    dovecot.add_user("company", PASSWORD)
    dovecot.add_messages("company", [p.read_bytes() for p in files])
    config_path = tmp_path / "postbridge.toml"
    config_path.write_text(
        f"""
data_dir = "{tmp_path / "data"}"
[[mailbox]]
name = "office"
kind = "global"
host = "{dovecot.host}"
port = {dovecot.pop3s_port}
security = "tls"
ca_file = "{dovecot.ca_file}"
username = "company"
local_domains = ["example.com", "example.org", "example.net"]
envelope_header = "auto"
postmaster = "postmaster@example.com"
timeout = 30
"""
    )
    config = configmod.load(config_path)
    secrets = SecretStore()
    secrets.set("office", PASSWORD)
    collector = Collector(config, secrets=secrets)
    try:
        result = await collector.run_cycle()
        rows = collector.ledger.recent(limit=1000)
    finally:
        await collector.aclose()
    (summary,) = result.summaries
    assert summary.error is None, summary.error
    assert summary.downloaded == 373
    assert dovecot.count("company") == 0
    assert len(rows) == 373
    not_delivered = [(r.id, r.state, r.last_error) for r in rows if r.state != DELIVERED]
    assert not not_delivered
    # exactly one Maildir file per (message, recipient): nothing lost, nothing twice
    expected = sum(len(r.recipients) for r in rows)
    delivered = [p for folder in config.maildir_root.iterdir() for p in (folder / "new").iterdir()]
    assert len(delivered) == expected
    keys = {p.name.split(".")[1] for p in delivered}  # "<time>.pb<id>_<rand>.<host>,S=..."
    # Identical copies (same Message-ID and body; the corpus has several) are delivered once:
    # without an envelope header they are what an ISP's one-copy-per-recipient storage
    # looks like. Each of them names the delivered message it duplicates.
    duplicates = [r for r in rows if not r.recipients]
    assert len(keys) + len(duplicates) == 373
    delivered_ids = {r.message_id for r in rows if r.recipients}
    for dup in duplicates:
        assert dup.last_error and "already delivered" in dup.last_error
        assert dup.message_id in delivered_ids
