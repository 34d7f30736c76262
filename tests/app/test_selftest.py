"""``postbridge --self-test`` from source: passes, says which keyring it found, names failures.

The frozen build runs the same self-test in tests/packaging/test_frozen.py.
"""

from __future__ import annotations

import io
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

import postbridge
from postbridge.app import selftest


def source_modules() -> set[str]:
    return {
        info.name
        for info in pkgutil.walk_packages(postbridge.__path__, "postbridge.")
        if not info.name.endswith(".__main__")
    }


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_cli_self_test_passes_and_warns_about_a_file_keyring(tmp_path: Path) -> None:
    """The real command line: exit 0, every module imported, the file keyring named and warned."""
    home = Path(os.environ["HOME"])
    before = files_under(home)
    result = subprocess.run(
        [sys.executable, "-m", "postbridge", "--self-test", "--verbose"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    assert "Self-test passed" in out and "not frozen" in out
    imported = set(re.findall(r"^\s+imported (postbridge\S*)$", out, re.MULTILINE))
    assert imported == source_modules()
    # The suite's keyring is keyrings.alt's plain file: the self-test must not call that fine.
    assert re.search(
        r"^WARN\s+keyring backend: keyrings\.alt\.file\.PlaintextKeyring: not the system keyring",
        out,
        re.MULTILINE,
    )
    for line in ("config file:", "data folder:", "log folder:", "ledger: created", "TLS:"):
        assert line in out
    assert (
        "windows built and rendered: no-tray window, Activity, About, no-config window, "
        "first-run wizard" in out
    )
    assert "Settings… opens: SettingsDialog" in out
    assert "worker thread: its asyncio loop ran a poll cycle" in out
    # It ran entirely in a temporary folder: nothing new in the (test's) home, no log file.
    assert files_under(home) - before == set()


@pytest.fixture
def broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of the package that fails to import, as one left out of a bundle would."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "broken_for_selftest.py").write_text(
        "import postbridge_missing_dependency  # noqa: F401\n", encoding="utf-8"
    )
    monkeypatch.setattr(postbridge, "__path__", [*postbridge.__path__, str(extra)])
    yield "postbridge.broken_for_selftest"
    sys.modules.pop("postbridge.broken_for_selftest", None)


def test_failures_are_named_and_exit_one(
    qtbot: QtBot, broken_module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A missing module and a missing resources folder: exit 1, each named, the rest still run."""
    empty = tmp_path / "no-resources"
    empty.mkdir()
    monkeypatch.setattr(selftest, "_has_display", lambda: False)
    from postbridge.app import resources

    def missing() -> Path:
        raise FileNotFoundError(f"Postbridge's resources folder is missing (looked in {empty}).")

    monkeypatch.setattr(resources, "resources_dir", missing)
    out = io.StringIO()
    code = selftest.run_self_test(out=out)
    text = out.getvalue()
    assert code == 1, text
    assert re.search(
        rf"^FAIL\s+import {broken_module}: ModuleNotFoundError: "
        r"No module named 'postbridge_missing_dependency'",
        text,
        re.MULTILINE,
    )
    assert re.search(
        r"^FAIL\s+resources: FileNotFoundError: .*resources folder is missing", text, re.M
    )
    # Checks that do not depend on either still ran and passed.
    assert re.search(r"^ok\s+ledger: created, written and read back", text, re.MULTILINE)
    assert re.search(r"^ok\s+single-instance lock", text, re.MULTILINE)
    assert "Self-test FAILED" in text
    summary = text.split("Self-test FAILED", 1)[1]
    assert f"import {broken_module}" in summary and "resources:" in summary
