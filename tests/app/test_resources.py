"""The icons are where the app looks for them, in a checkout and in an installed wheel."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from postbridge.app import resources
from postbridge.app.icons import SIZES, Icons
from postbridge.app.status import AppState


def test_every_state_has_a_sharp_png_at_every_size() -> None:
    for state in AppState:
        for size in SIZES:
            image = QImage(str(resources.resource("icons", f"{state.value}-{size}.png")))
            assert (image.width(), image.height()) == (size, size), (state, size)
            assert image.hasAlphaChannel()


def test_icons_load(qtbot: QtBot) -> None:
    icons = Icons()
    for state in AppState:
        assert sorted(s.width() for s in icons.for_state(state).availableSizes()) == list(SIZES)


def test_wheel_layout_is_found_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pyproject force-includes resources/ as postbridge/resources/ in the wheel.
    package = tmp_path / "site-packages" / "postbridge"
    shutil.copytree(resources.resources_dir() / "icons", package / "resources" / "icons")
    monkeypatch.setattr(resources, "_PACKAGE", package)
    resources.resources_dir.cache_clear()
    try:
        assert resources.resources_dir() == package / "resources"
    finally:
        resources.resources_dir.cache_clear()


def test_a_missing_folder_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "_PACKAGE", tmp_path / "nowhere" / "postbridge")
    resources.resources_dir.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="resources folder is missing"):
            resources.resources_dir()
    finally:
        resources.resources_dir.cache_clear()
