"""Find the bundled ``resources/`` folder, wherever Postbridge runs from.

Three layouts exist and the app must find its icons in each:

* a source checkout (``uv run postbridge``): ``<repo>/resources``, three levels
  above this file's package (``desktop/postbridge/app``);
* an installed wheel: pyproject force-includes ``resources`` as
  ``postbridge/resources``, i.e. next to this package's parent;
* a PyInstaller bundle: the spec copies it to ``<_MEIPASS>/postbridge/resources``.

Plain ``pathlib`` only (no Qt, no engine), so it can be used and tested anywhere.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # .../postbridge


def _candidates() -> list[Path]:
    found = [_PACKAGE / "resources"]
    bundle = getattr(sys, "_MEIPASS", None)
    if isinstance(bundle, str):
        found.append(Path(bundle) / "postbridge" / "resources")
    found.append(_PACKAGE.parent.parent / "resources")  # desktop/postbridge -> repo root
    return found


@cache
def resources_dir() -> Path:
    """The first candidate folder that holds the icons; a clear error if none does."""
    candidates = _candidates()
    for candidate in candidates:
        if (candidate / "icons").is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"Postbridge's resources folder is missing (looked in {tried}).")


def resource(*parts: str) -> Path:
    """A file under the resources folder, e.g. ``resource("icons", "idle-16.png")``."""
    return resources_dir().joinpath(*parts)
