"""The one rule of the layout: the engine never imports Qt or the app (DESIGN.md, "Architecture").

Two checks, because each misses something the other catches: a scan of every ``import`` in
``engine/`` (also those inside functions, which an import-time check never runs), and a fresh
interpreter that imports every engine module and then looks for Qt in ``sys.modules`` (which
catches Qt arriving through a third-party dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import postbridge.engine

ENGINE = Path(postbridge.engine.__file__).parent
FORBIDDEN = ("PySide6", "shiboken6", "PyQt5", "PyQt6", "postbridge.app")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def test_engine_sources_never_import_qt_or_the_app() -> None:
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) > 10, f"found only {len(files)} engine modules under {ENGINE}"
    offenders = [
        f"{path.relative_to(ENGINE.parent)}:{line}: import {module}"
        for path in files
        for line, module in _imports(path)
        if _forbidden(module)
    ]
    assert offenders == [], "the engine must stay Qt-free:\n" + "\n".join(offenders)


def test_the_scan_would_notice_a_qt_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def later():\n    from PySide6.QtCore import QObject\n"
        "import importlib\nimportlib.import_module('postbridge.app.tray')\n"
    )
    assert [m for _, m in _imports(sample) if _forbidden(m)] == [
        "PySide6.QtCore",
        "postbridge.app.tray",
    ]


def test_importing_the_whole_engine_loads_no_qt() -> None:
    code = (
        "import pkgutil, importlib, sys, postbridge.engine as e\n"
        "for m in pkgutil.walk_packages(e.__path__, 'postbridge.engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('PySide6', 'shiboken6', 'PyQt5', 'PyQt6') or n.startswith('postbridge.app'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "", f"engine imports pulled in: {result.stdout.strip()}"
