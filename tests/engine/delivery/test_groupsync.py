"""A Maildir batch made durable by syncfs (Linux): when it is used, in what order, failures."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from postbridge.engine.delivery import groupsync
from postbridge.engine.delivery.base import DeliveryJob
from postbridge.engine.delivery.groupsync import (
    DIRTY_LIMIT,
    FileSystemSync,
    dirty_bytes,
    kernel_reports_errors,
)
from postbridge.engine.delivery.maildir import MaildirTarget

from .test_maildir import files, make_job, spy_on_disk_steps


@pytest.fixture
def grouped(tmp_path: Path) -> None:
    """Skip off Linux (or where tmp_path's file system has no usable syncfs), fail under CI."""
    reason = ""
    if sys.platform != "linux":
        reason = "syncfs is Linux only; elsewhere each copy is fsynced (test_maildir.py)"
    else:
        probe = FileSystemSync.open(tmp_path)
        if probe is None:
            reason = f"syncfs is not used for {tmp_path} (old kernel, file system, dirty pages)"
        else:
            probe.close()
    if reason and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)


def spy_on_syncs(monkeypatch: pytest.MonkeyPatch, events: list[str], folder: Path) -> list[int]:
    """Record each syncfs in ``events``; returns how many files were in tmp/ at each."""
    real_sync = FileSystemSync.sync
    in_tmp: list[int] = []

    def spy(self: FileSystemSync) -> None:
        events.append("syncfs")
        in_tmp.append(len(files(folder / "tmp")))
        real_sync(self)

    monkeypatch.setattr(FileSystemSync, "sync", spy)
    return in_tmp


def memory_job(n: int, *recipients: str) -> DeliveryJob:
    return DeliveryJob(
        key=f"1764440003.pb{n}_g",
        path=None,
        data=b"Subject: %d\r\n\r\nbody\r\n" % n,
        sender="a@isp.example",
        recipients=recipients,
    )


async def test_a_batch_is_written_synced_renamed_and_synced_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grouped: None
) -> None:
    target = MaildirTarget(root=tmp_path / "Mail")
    await target.deliver(make_job(tmp_path, "bob@example.com"))  # creates the folders
    await target.deliver(make_job(tmp_path, "amy@example.com", key="1764440000.pb1_a"))
    events = spy_on_disk_steps(monkeypatch)
    bob = tmp_path / "Mail" / "bob@example.com"
    in_tmp = spy_on_syncs(monkeypatch, events, bob)
    jobs = [memory_job(n, "bob@example.com") for n in range(4)]
    jobs.append(make_job(tmp_path, "amy@example.com", "bob@example.com", key="1764440003.pb9_s"))
    results = await target.deliver_many(jobs)
    assert [r.status for res in results for r in res.values()] == ["accepted"] * 6
    # No file fsynced one by one: all six written, one sync, the renames, one sync for both
    # folders. new/ never names a file that was not on disk first.
    assert events == ["syncfs"] + ["replace"] * 6 + ["syncfs"]
    assert in_tmp == [5, 0]
    saved = sorted(p.read_bytes() for p in files(bob / "new"))
    assert b"Subject: 3\n\nbody\n" in saved and len(saved) == 6
    assert len(files(tmp_path / "Mail" / "amy@example.com" / "new")) == 2


def fail_sync_number(monkeypatch: pytest.MonkeyPatch, failing: int) -> None:
    """From now on, the ``failing``-th syncfs (1: before the renames, 2: after) fails."""
    real_sync = FileSystemSync.sync
    calls: list[int] = []

    def sync(self: FileSystemSync) -> None:
        calls.append(1)
        if len(calls) == failing:
            raise OSError(errno.EIO, "Input/output error")
        real_sync(self)

    monkeypatch.setattr(FileSystemSync, "sync", sync)


@pytest.mark.parametrize("failing", [1, 2])
async def test_a_failed_sync_is_temporary_and_the_retry_delivers_each_copy_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grouped: None, failing: int
) -> None:
    target = MaildirTarget(root=tmp_path / "Mail")
    await target.check()
    fail_sync_number(monkeypatch, failing)
    jobs = [memory_job(n, "bob@example.com") for n in range(3)]
    results = await target.deliver_many(jobs)
    assert [r["bob@example.com"].status for r in results] == ["temporary"] * 3
    assert "Input/output error" in results[0]["bob@example.com"].reason
    folder = tmp_path / "Mail" / "bob@example.com"
    assert files(folder / "tmp") == []
    # Before the renames: nothing in new/. After them: the files are in new/ but maybe
    # not on disk, and the retry finds them rather than writing them again.
    assert len(files(folder / "new")) == (0 if failing == 1 else 3)

    monkeypatch.undo()
    results = await target.deliver_many(jobs)
    assert [r["bob@example.com"].status for r in results] == ["accepted"] * 3
    again = all("delivered before" in r["bob@example.com"].reason for r in results)
    assert again is (failing == 2)
    assert len(files(folder / "new")) == 3


async def test_much_dirty_data_elsewhere_means_an_fsync_per_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grouped: None
) -> None:
    target = MaildirTarget(root=tmp_path / "Mail")
    await target.check()
    # A big file copy in progress: a syncfs would wait for all of it.
    monkeypatch.setattr(groupsync, "dirty_bytes", lambda: DIRTY_LIMIT + 1)
    events = spy_on_disk_steps(monkeypatch)
    spy_on_syncs(monkeypatch, events, tmp_path)
    await target.deliver_many([memory_job(n, "bob@example.com") for n in range(2)])
    assert "syncfs" not in events
    assert events.count("fsync-file") == 2 and events[-1] == "fsync-dir"


async def test_a_folder_on_another_file_system_means_an_fsync_per_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grouped: None
) -> None:
    target = MaildirTarget(root=tmp_path / "Mail")
    await target.check()
    # As if amy's folder were a link to another disk: syncing the root's would not do.
    monkeypatch.setattr(FileSystemSync, "holds", lambda self, path: "amy@" not in str(path))
    events = spy_on_disk_steps(monkeypatch)
    spy_on_syncs(monkeypatch, events, tmp_path)
    await target.deliver_many([memory_job(1, "bob@example.com", "amy@example.com")])
    assert "syncfs" not in events and events.count("fsync-file") == 2


def test_kernels_before_5_8_do_not_report_syncfs_errors() -> None:
    assert kernel_reports_errors("6.1.0-13-amd64")
    assert kernel_reports_errors("5.8.0")
    assert kernel_reports_errors("5.15.167.4-microsoft-standard-WSL2")
    assert not kernel_reports_errors("5.7.19")
    assert not kernel_reports_errors("4.19.0-26-amd64")
    assert not kernel_reports_errors("unknown")


def test_dirty_bytes_adds_dirty_and_writeback(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemFree:  100 kB\nDirty:            2048 kB\nWriteback:          12 kB\n")
    assert dirty_bytes(str(meminfo)) == 2060 * 1024
    meminfo.write_text("MemFree:  100 kB\n")
    assert dirty_bytes(str(meminfo)) is None
    assert dirty_bytes(str(tmp_path / "missing")) is None


def test_only_local_file_systems_are_synced_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grouped: None
) -> None:
    sync = FileSystemSync.open(tmp_path)
    assert sync is not None
    with sync:
        assert sync.holds(tmp_path) and not sync.holds(tmp_path / "missing")
    nfs = 0x6969
    monkeypatch.setattr(groupsync, "file_system_type", lambda fd: nfs)
    assert FileSystemSync.open(tmp_path) is None
    assert FileSystemSync.open(tmp_path / "missing") is None
