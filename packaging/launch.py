"""The frozen app's entry script: PyInstaller runs this file as ``__main__``.

It is the same ``postbridge`` command as the wheel's console script (``postbridge.cli:console``):
with no arguments it starts the tray app, ``--self-test`` checks the bundle, and every
subcommand (``poll --once``, ``secret set`` ...) works from the frozen executable too.
"""

from __future__ import annotations

from postbridge.cli import console

if __name__ == "__main__":
    console()
