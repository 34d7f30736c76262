from __future__ import annotations

from postbridge.cli import console

console()
