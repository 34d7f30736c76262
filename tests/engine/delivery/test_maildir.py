"""Maildir delivery: durable, idempotent, streaming, and never outside its root."""

from __future__ import annotations

import errno
import itertools
import os
import stat
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postbridge.engine.delivery import maildir
from postbridge.engine.delivery.base import DeliveryJob
from postbridge.engine.delivery.groupsync import FileSystemSync
from postbridge.engine.delivery.maildir import MaildirTarget, crlf_to_lf, folder_name
from postbridge.engine.errors import StorageError

KEY = "1764440000.pb42_a1b2c3d4"
MESSAGE = b"From: a@isp.example\r\nSubject: hi\r\n\r\nline one\r\n.dot line\r\nbare\rcr\r\n"
PREPEND = b"X-Postbridge-Original-To: all@isp.example\r\n"


def make_job(
    tmp_path: Path, *recipients: str, key: str = KEY, body: bytes = MESSAGE
) -> DeliveryJob:
    spool = tmp_path / "spool" / f"{key}.eml"
    spool.parent.mkdir(exist_ok=True)
    spool.write_bytes(body)
    return DeliveryJob(
        key=key, path=spool, sender="a@isp.example", recipients=recipients, prepend=PREPEND
    )


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()) if folder.is_dir() else []


@given(
    st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"x", b"\r\r\n"]), max_size=40).map(b"".join),
    st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_crlf_to_lf_is_independent_of_chunk_boundaries(data: bytes, cuts: list[int]):
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(edges)]
    assert b"".join(crlf_to_lf(chunks)) == data.replace(b"\r\n", b"\n")


async def test_message_lands_in_new_with_lf_and_deterministic_name(tmp_path: Path):
    root = tmp_path / "Mail"
    target = MaildirTarget(root=root)
    results = await target.deliver(make_job(tmp_path, "Bob@Example.com"))

    assert results["Bob@Example.com"].status == "accepted"
    folder = root / "bob@example.com"
    assert all((folder / sub).is_dir() for sub in ("tmp", "new", "cur"))
    [stored] = files(folder / "new")
    expected = (PREPEND + MESSAGE).replace(b"\r\n", b"\n")
    assert stored.read_bytes() == expected
    assert stored.name.startswith(f"{KEY}.")
    assert stored.name.endswith(f",S={len(expected)}")
    assert files(folder / "tmp") == []
    assert target.description == f"Maildir folders in {root}"


async def test_skip_replaces_the_header_block(tmp_path: Path):
    head = b"To: all@isp.example\r\nSubject: hi\r\n\r\n"
    body = head + b"text\r\n"
    spool = tmp_path / "spooled.eml"
    spool.write_bytes(body)
    new_head = b"To: bob@example.com\r\nSubject: hi\r\n\r\n"
    job = DeliveryJob(
        key=KEY,
        path=spool,
        sender="",
        recipients=("bob@example.com",),
        prepend=new_head,
        skip=len(head),
    )
    await MaildirTarget(root=tmp_path / "Mail").deliver(job)
    [stored] = files(tmp_path / "Mail" / "bob@example.com" / "new")
    assert stored.read_bytes() == b"To: bob@example.com\nSubject: hi\n\ntext\n"


async def test_crlf_split_across_small_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(maildir, "CHUNK_SIZE", 3)
    body = b"ab\r\n\r\ncd\r\r\nef\r" * 50
    target = MaildirTarget(root=tmp_path / "Mail")
    await target.deliver(make_job(tmp_path, "bob@example.com", body=body))
    [stored] = files(tmp_path / "Mail" / "bob@example.com" / "new")
    assert stored.read_bytes() == (PREPEND + body).replace(b"\r\n", b"\n")


async def test_one_copy_per_recipient(tmp_path: Path):
    target = MaildirTarget(root=tmp_path / "Mail")
    results = await target.deliver(
        make_job(tmp_path, "alice@example.com", "bob@example.com", "alice@example.com")
    )
    assert list(results) == ["alice@example.com", "bob@example.com"]
    for user in ("alice@example.com", "bob@example.com"):
        assert len(files(tmp_path / "Mail" / user / "new")) == 1


async def test_redelivery_after_crash_writes_nothing_twice(tmp_path: Path):
    root = tmp_path / "Mail"
    job = make_job(tmp_path, "bob@example.com")
    await MaildirTarget(root=root).deliver(job)
    new = root / "bob@example.com" / "new"
    [first] = files(new)

    # Same target (the ledger commit failed) and a new process (crash): no second copy.
    again = await MaildirTarget(root=root).deliver(job)
    assert again["bob@example.com"].status == "accepted"
    assert "delivered before" in again["bob@example.com"].reason
    assert files(new) == [first]


@pytest.mark.parametrize("flags", [":2,S", ":2,", "!2,RS"])
async def test_redelivery_finds_the_message_after_a_client_moved_it_to_cur(
    tmp_path: Path, flags: str
):
    root = tmp_path / "Mail"
    job = make_job(tmp_path, "bob@example.com")
    target = MaildirTarget(root=root)
    await target.deliver(job)
    folder = root / "bob@example.com"
    [stored] = files(folder / "new")
    stored.rename(folder / "cur" / (stored.name + flags))

    for attempt in (target, MaildirTarget(root=root)):
        result = await attempt.deliver(job)
        assert result["bob@example.com"].status == "accepted"
    assert files(folder / "new") == []
    assert len(files(folder / "cur")) == 1


async def test_keys_sharing_a_prefix_are_different_messages(tmp_path: Path):
    root = tmp_path / "Mail"
    target = MaildirTarget(root=root)
    await target.deliver(make_job(tmp_path, "bob@example.com", key="1764440000.pb1"))
    await MaildirTarget(root=root).deliver(
        make_job(tmp_path, "bob@example.com", key="1764440000.pb")
    )
    await target.deliver(make_job(tmp_path, "bob@example.com", key="1764440000.pb10"))
    assert len(files(root / "bob@example.com" / "new")) == 3


@pytest.mark.parametrize(
    "address",
    [
        "../evil@example.com",
        "a/b@example.com",
        "a\\b@example.com",
        "..",
        "",
        "nul\x00@example.com",
        ".hidden@example.com",
        "x..y@example.com",
        "con.x@example.com",
        "a:b@example.com",
        "trailing.",
    ],
)
async def test_addresses_that_would_escape_the_root_fail_permanently(tmp_path: Path, address: str):
    box = tmp_path / "box"
    root = box / "Mail"
    root.mkdir(parents=True)
    results = await MaildirTarget(root=root).deliver(make_job(tmp_path, address))
    assert results[address].status == "permanent"
    assert "cannot be used as a Maildir folder name" in results[address].reason
    assert files(root) == []
    assert files(box) == [root]


def test_folder_name_lowercases():
    assert folder_name("Bob.Smith@Example.COM") == "bob.smith@example.com"


@pytest.fixture
def per_file_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The portable way (Windows, macOS, other file systems): an fsync per copy and folder.

    On Linux the batch is otherwise made durable by syncfs (test_groupsync.py).
    """
    monkeypatch.setattr(FileSystemSync, "open", classmethod(lambda cls, path: None))


def spy_on_disk_steps(monkeypatch: pytest.MonkeyPatch, *, inodes: bool = False) -> list[str]:
    """From now on, record each fsync (of a file or a folder) and each rename, in order.

    With ``inodes``, a file's fsync and its rename carry the file's inode number
    ("fsync-file 1234", "replace 1234"), so steps of one file can be paired.
    """
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        info = os.fstat(fd)
        step = "fsync-dir" if stat.S_ISDIR(info.st_mode) else "fsync-file"
        events.append(f"{step} {info.st_ino}" if inodes and step == "fsync-file" else step)
        real_fsync(fd)

    def spy_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(f"replace {os.stat(src).st_ino}" if inodes else "replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    return events


async def test_file_is_fsynced_before_rename_and_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_file_fsync: None
):
    target = MaildirTarget(root=tmp_path / "Mail")
    await target.deliver(make_job(tmp_path, "bob@example.com"))  # creates the folders
    events = spy_on_disk_steps(monkeypatch)
    await target.deliver(make_job(tmp_path, "bob@example.com", key="1764440001.pb43_x"))
    if os.name == "nt":
        assert events == ["fsync-file", "replace"]
    else:
        assert events == ["fsync-file", "replace", "fsync-dir"]


async def test_disk_full_is_temporary_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_file_fsync: None
):
    target = MaildirTarget(root=tmp_path / "Mail")
    await target.check()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    results = await target.deliver(make_job(tmp_path, "bob@example.com"))
    assert results["bob@example.com"].status == "temporary"
    assert "the disk is full" in results["bob@example.com"].reason
    folder = tmp_path / "Mail" / "bob@example.com"
    assert files(folder / "tmp") == []
    assert files(folder / "new") == []

    monkeypatch.undo()  # space freed: the retry delivers
    results = await target.deliver(make_job(tmp_path, "bob@example.com"))
    assert results["bob@example.com"].status == "accepted"
    assert len(files(folder / "new")) == 1


async def test_permission_error_on_rename_is_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def denied(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)
    results = await MaildirTarget(root=tmp_path / "Mail").deliver(
        make_job(tmp_path, "bob@example.com")
    )
    assert results["bob@example.com"].status == "temporary"
    assert "permission denied" in results["bob@example.com"].reason
    assert files(tmp_path / "Mail" / "bob@example.com" / "tmp") == []


async def test_missing_spool_file_is_temporary(tmp_path: Path):
    job = make_job(tmp_path, "bob@example.com")
    assert job.path is not None
    job.path.unlink()
    results = await MaildirTarget(root=tmp_path / "Mail").deliver(job)
    assert results["bob@example.com"].status == "temporary"
    assert "Could not read the spooled message" in results["bob@example.com"].reason


async def test_big_message_is_streamed_not_loaded(tmp_path: Path):
    line = b"x" * 98 + b"\r\n"
    body = line * (20 * 1024 * 1024 // len(line))
    job = make_job(tmp_path, "bob@example.com", body=body)
    assert job.path is not None
    del body
    target = MaildirTarget(root=tmp_path / "Mail")
    tracemalloc.start()
    try:
        results = await target.deliver(job)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert results["bob@example.com"].status == "accepted"
    assert peak < 6 * 1024 * 1024, f"peak {peak} bytes for a 20 MB message"
    [stored] = files(tmp_path / "Mail" / "bob@example.com" / "new")
    assert stored.stat().st_size == len(PREPEND) - 1 + job.path.stat().st_size * 99 // 100


async def test_check_reports_words_and_fails_with_storage_error(tmp_path: Path):
    words = await MaildirTarget(root=tmp_path / "Mail").check()
    assert "writable" in words and str(tmp_path / "Mail") in words
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="cannot write to the Maildir folders"):
        await MaildirTarget(root=blocker / "Mail").check()


async def test_a_job_held_in_memory_is_delivered_like_a_spool_file(tmp_path: Path) -> None:
    target = MaildirTarget(root=tmp_path / "mail")
    job = DeliveryJob(
        key="k-mem",
        path=None,
        data=b"Subject: in memory\r\n\r\nbody\r\n",
        sender="a@isp.example",
        recipients=("alice@example.com",),
    )
    results = await target.deliver(job)
    assert results["alice@example.com"].status == "accepted"
    (saved,) = (tmp_path / "mail" / "alice@example.com" / "new").iterdir()
    assert saved.read_bytes() == b"Subject: in memory\n\nbody\n"


def test_a_job_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        DeliveryJob(key="k", path=None, sender="", recipients=("a@b",))
    with pytest.raises(ValueError, match="exactly one"):
        DeliveryJob(key="k", path=tmp_path / "x", data=b"x", sender="", recipients=("a@b",))


async def test_a_batch_fsyncs_each_file_before_its_rename_and_each_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_file_fsync: None
):
    target = MaildirTarget(root=tmp_path / "Mail")
    await target.deliver(make_job(tmp_path, "bob@example.com"))  # creates the folders
    await target.deliver(make_job(tmp_path, "amy@example.com", key="1764440000.pb1_a"))
    events = spy_on_disk_steps(monkeypatch, inodes=True)
    jobs = [make_job(tmp_path, "bob@example.com", key=f"1764440001.pb{n}_x") for n in range(10, 14)]
    jobs.append(make_job(tmp_path, "amy@example.com", key="1764440001.pb20_x"))
    results = await target.deliver_many(jobs)
    assert [r.status for res in results for r in res.values()] == ["accepted"] * 5
    # Each file is fsynced before its own rename (the pool's threads work side by side):
    # new/ never holds a file not on disk. Then each folder once, after all its renames.
    files_synced = [e.split()[1] for e in events if e.startswith("fsync-file")]
    renamed = [e.split()[1] for e in events if e.startswith("replace")]
    assert len(set(files_synced)) == 5 and sorted(renamed) == sorted(files_synced)
    for inode in renamed:
        assert events.index(f"fsync-file {inode}") < events.index(f"replace {inode}")
    assert all(not e.startswith("fsync-dir") for e in events[:10])
    if os.name != "nt":
        assert events[10:] == ["fsync-dir", "fsync-dir"]
    assert len(files(tmp_path / "Mail" / "bob@example.com" / "new")) == 5
    assert len(files(tmp_path / "Mail" / "amy@example.com" / "new")) == 2


async def test_a_batch_reports_each_copy_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    target = MaildirTarget(root=tmp_path / "Mail")
    done = make_job(tmp_path, "bob@example.com", key="1764440001.pb1_x")
    await target.deliver(done)
    jobs = [
        done,  # delivered before: found again, not written twice
        make_job(tmp_path, "bad/name@example.com", key="1764440001.pb2_x"),
        make_job(tmp_path, "bob@example.com", key="1764440001.pb3_x"),
    ]
    results = await target.deliver_many(jobs)
    assert results[0]["bob@example.com"].status == "accepted"
    assert "delivered before" in results[0]["bob@example.com"].reason
    assert results[1]["bad/name@example.com"].status == "permanent"
    assert results[2]["bob@example.com"].status == "accepted"
    assert len(files(tmp_path / "Mail" / "bob@example.com" / "new")) == 2


async def test_a_copy_from_memory_that_cannot_be_written_is_temporary_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = MaildirTarget(root=tmp_path / "Mail")
    await target.check()
    jobs = [
        DeliveryJob(
            key=f"1764440002.pb{n}_m",
            path=None,
            data=b"Subject: %d\r\n\r\nbody\r\n" % n,
            sender="a@isp.example",
            recipients=("bob@example.com",),
        )
        for n in range(3)
    ]
    real_write = os.write

    def full_for_the_second(fd: int, data: bytes) -> int:
        if b"Subject: 1\n" in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_for_the_second)
    results = await target.deliver_many(jobs)
    statuses = [r["bob@example.com"].status for r in results]
    assert statuses == ["accepted", "temporary", "accepted"]
    assert "the disk is full" in results[1]["bob@example.com"].reason
    folder = tmp_path / "Mail" / "bob@example.com"
    assert files(folder / "tmp") == []
    saved = sorted(p.read_bytes() for p in files(folder / "new"))
    assert saved == [b"Subject: 0\n\nbody\n", b"Subject: 2\n\nbody\n"]
