"""fetchmailrc import: sample files become mailboxes, and nothing is left out unmentioned.

Each sample in tests/data/fetchmail/ is a situation an office moving from
fetchmail is in. Where fetchmail is installed, its own parser
(``fetchmail --configdump``) reads the same files and the test checks that
both agree on servers, users, passwords and local names: the samples are real
fetchmail syntax, and the importer reads them the way fetchmail does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from postbridge.engine.importers.draft import ImportDraft, ImportFileError
from postbridge.engine.importers.fetchmail import load, parse

DATA = Path(__file__).parents[2] / "data" / "fetchmail"
SAMPLES = sorted(DATA.glob("*.rc"))
VALID_FOR_FETCHMAIL = [p for p in SAMPLES if p.name != "broken.rc"]


def sample(name: str) -> ImportDraft:
    return load(DATA / name)


def notes(draft: ImportDraft, kind: str) -> str:
    return "\n".join(n.describe() for n in draft.notes_of(kind))  # type: ignore[arg-type]


def test_there_are_enough_samples() -> None:
    assert len(SAMPLES) >= 8


def test_single_mailbox_with_ssl_and_keep() -> None:
    draft = sample("single_ssl.rc")
    (box,) = draft.mailboxes
    assert (box.kind, box.host, box.port, box.security) == ("user", "pop.isp.example", 995, "tls")
    assert box.username == "alice@isp.example"
    assert box.recipient == "alice@example.com"
    assert box.leave_on_server_days == 3650
    assert draft.passwords == {box.name: "s3cret pass"}
    assert "“keep” became “leave a copy on the ISP for 3650 days”" in notes(draft, "changed")


def test_multidrop_with_envelope_localdomains_and_mappings() -> None:
    draft = sample("multidrop_envelope.rc")
    (box,) = draft.mailboxes
    assert box.kind == "global"
    assert box.local_domains == ("example.com", "example.org")
    assert box.envelope_header == "X-Original-To"
    assert box.postmaster == "admin@example.com"
    assert dict(box.address_map) == {
        "bill@example.com": ("wilma@example.com",),
        "bill@example.org": ("wilma@example.org",),
    }
    assert draft.interval_minutes == 5
    assert draft.passwords == {"company": "domain-pw"}
    assert "“fetchall”" in notes(draft, "skipped")


def test_multidrop_variants() -> None:
    draft = sample("multidrop_variants.rc")
    a, b, c = draft.mailboxes
    assert a.envelope_header == "none" and a.postmaster == "postmaster@example.com"
    assert b.envelope_header == "Delivered-To"
    assert c.envelope_header == "auto" and c.local_domains == ()
    assert "envelope skip count was dropped" in notes(draft, "changed")
    assert "fetchmail accepted only mia, ned" in notes(draft, "changed")
    assert "“X-Funny-Header” is not one Postbridge reads" in notes(draft, "changed")
    assert "office-c: collects for several people" in notes(draft, "todo")
    assert "Line 7: “aka”" in notes(draft, "skipped")


def test_several_polls_users_via_and_skip() -> None:
    draft = sample("several_polls.rc")
    names = [m.name for m in draft.mailboxes]
    assert names == ["alice", "bob", "carol", "dave"]
    alice, bob, carol, dave = draft.mailboxes
    assert alice.host == bob.host == "pop.isp.example"
    assert bob.leave_on_server_days == 3650 and alice.leave_on_server_days == 0
    assert carol.host == "192.0.2.10" and carol.security == "tls"
    assert not dave.enabled and dave.security == "starttls"
    assert draft.passwords == {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c", "dave": "pw-d"}
    assert draft.interval_minutes == 10
    assert "dave: imported switched off" in notes(draft, "changed")


def test_quoted_strings() -> None:
    draft = sample("quoted_strings.rc")
    manager, frank = draft.mailboxes
    assert manager.username == "office manager" and manager.name == "office-manager"
    assert draft.passwords["office-manager"] == "p#ssA\tword"
    assert manager.recipient == "eve@example.com"
    assert frank.recipient == "frank@example.com"
    assert draft.passwords["frank"] == "'it''s'"  # as fetchmail itself reads it


def test_unsupported_options_are_each_listed_with_a_reason() -> None:
    draft = sample("unsupported.rc")
    (box,) = draft.mailboxes
    assert box.name == "gus"
    skipped = notes(draft, "skipped")
    for word in (
        "set logfile",
        "set syslog",
        "protocol IMAP",
        "“uidl”",
        "“interval”",
        "“flush”",
        "“mda”",
        "“limit”",
        "“fetchlimit”",
        "“mimedecode”",
        "“preconnect”",
        "“antispam”",
        "“sslfingerprint”",
    ):
        assert word in skipped, word
    assert "bouncemail" not in skipped  # "no bouncemail": Postbridge never bounces either
    assert "rewrite" not in skipped  # "no rewrite": Postbridge never rewrites either


def test_defaults_smtphost_lmtp_and_delivery_login() -> None:
    draft = sample("defaults_lmtp.rc")
    harry, ida = draft.mailboxes
    for box in (harry, ida):
        assert box.security == "tls" and box.leave_on_server_days == 3650
        assert box.timeout == 60 and box.delete_batch == 100
    assert draft.delivery is not None
    assert (draft.delivery.kind, draft.delivery.host, draft.delivery.port) == (
        "lmtp",
        "mail.office.lan",
        2424,
    )
    assert draft.delivery.username == "collector"
    assert draft.passwords["delivery"] == "smtp-pw"


def test_etrn_and_odmr_become_the_online_signal() -> None:
    draft = sample("signals.rc")
    assert draft.signal is not None
    assert draft.signal.kind == "etrn"
    assert draft.signal.host == "smtp.isp.example" and draft.signal.port == 25
    assert draft.signal.domains == ("example.com", "example.org")
    assert [m.name for m in draft.mailboxes] == ["jack"]
    assert "Postbridge sends one online signal" in notes(draft, "skipped")


def test_odmr_alone_becomes_atrn_with_its_password() -> None:
    draft = parse(
        'poll odmr.isp proto odmr user "example.com" password "pw" fetchdomains a.example'
    )
    assert draft.signal is not None
    assert (draft.signal.kind, draft.signal.port, draft.signal.username) == (
        "atrn",
        366,
        "example.com",
    )
    assert draft.passwords == {"signal": "pw"}


def test_implicit_user_apop_and_bare_local_names() -> None:
    draft = sample("implicit_user.rc")
    implicit, quinn, rita = draft.mailboxes
    assert implicit.auth == "apop" and implicit.username == ""
    assert quinn.username == "q.remote" and quinn.recipient == "quinn"
    assert rita.port == 995 and rita.ca_file == Path("/etc/ssl/isp-ca.pem")
    todo = notes(draft, "todo")
    assert "enter the ISP user name" in todo
    assert "“quinn” is a local user name; enter the full address" in todo
    assert "“no sslcertck”: Postbridge always checks" in notes(draft, "changed")


def test_a_domain_completes_bare_local_names() -> None:
    draft = load(DATA / "implicit_user.rc", domain="example.com")
    assert draft.mailboxes[1].recipient == "quinn@example.com"


def test_broken_file_imports_what_it_can_and_lists_the_rest() -> None:
    draft = sample("broken.rc")
    assert [m.name for m in draft.mailboxes] == ["sam", "tom"]
    skipped = notes(draft, "skipped")
    assert "Line 2: not understood: “frobnicate”" in skipped
    assert "Line 3: not understood: “wibble”" in skipped
    assert 'Line 6: not understood: a " quote that is never closed' in skipped


def test_summary_groups_notes_by_line() -> None:
    text = sample("unsupported.rc").summary()
    assert text.startswith("Imported 1 mailbox(es).")
    assert text.index("Line 2:") < text.index("Line 14:")


def test_empty_file_says_so() -> None:
    assert "no POP3 poll entries" in parse("# nothing\n").summary()


def test_unreadable_file_is_an_error_in_words(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="could not read"):
        load(tmp_path / "missing.rc")


# -- agreement with fetchmail's own parser -----------------------------------------------


def configdump(rc: Path, tmp_path: Path) -> dict[str, Any]:
    fetchmail = shutil.which("fetchmail")
    if fetchmail is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fetchmail is not installed (.ci/run installs it)")
        pytest.skip("fetchmail is not installed")
    copy = tmp_path / "fetchmailrc"
    copy.write_bytes(rc.read_bytes())
    copy.chmod(0o600)  # fetchmail refuses a readable rc file
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    done = subprocess.run(
        [fetchmail, "-f", str(copy), "--configdump"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert "fetchmailrc = {" in done.stdout, done.stderr
    scope: dict[str, Any] = {}
    exec(done.stdout, scope)  # fetchmail's dump is Python source (fetchmailconf reads it so)
    return scope["fetchmailrc"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("rc", VALID_FOR_FETCHMAIL, ids=lambda p: p.name)
def test_fetchmail_reads_the_samples_the_same_way(rc: Path, tmp_path: Path) -> None:
    dump = configdump(rc, tmp_path)
    draft = load(rc)
    boxes = iter(draft.mailboxes)
    for server in dump["servers"]:
        if server["protocol"] not in ("POP3", "APOP", "auto"):
            continue
        for user in server["users"]:
            box = next(boxes)
            assert box.host == (server["via"] or server["pollname"])
            assert box.enabled == bool(server["active"])
            assert box.local_domains == tuple(server["localdomains"])
            if box.username:  # an implicit user is whoever runs fetchmail
                assert box.username == user["remote"]
            assert draft.passwords.get(box.name) == user["password"]
            assert (box.security == "tls") == bool(user["ssl"]) or box.port == 995
            assert (box.leave_on_server_days > 0) == bool(user["keep"])
            names = user["localnames"]
            if box.kind == "user" and not box.recipient:  # fetchmail: the login running it
                assert names == [user["remote"]] or not box.username
            elif box.kind == "user":
                assert len(names) == 1 and "*" not in names
                assert box.recipient.split("@")[0] == names[0].split("@")[0]
            else:
                assert len(names) > 1 or "*" in names
                pairs = [n for n in names if isinstance(n, tuple)]
                assert {
                    k.split("@")[0]: v[0].split("@")[0] for k, v in box.address_map.items()
                } == {a: b for a, b in pairs}
    assert next(boxes, None) is None
