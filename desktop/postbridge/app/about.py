"""The About box: version, and where Postbridge keeps everything.

Support questions in a small office start with "where is the file?", so the box
names the config file, the data folder (ledger, spool, Maildirs) and the log
folder, and says which keyring holds the passwords (a warning when it is not
the system's own). Non-modal: a tray app must not block its event loop on it.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QMessageBox

from postbridge import __version__
from postbridge.app.status import APP_TITLE
from postbridge.engine.paths import default_log_dir


def about_text(*, config_path: Path, data_dir: Path | None) -> str:
    from postbridge.engine.secrets import backend_info

    def e(value: object) -> str:
        return html.escape(str(value))

    data = e(data_dir) if data_dir else "(not set up yet)"
    return (
        f"<b>{APP_TITLE} {e(__version__)}</b><p>Collects the office's mail from the ISP and "
        "delivers it to the office, losing nothing.</p>"
        f"<p>Settings: {e(config_path)}<br>Data: {data}<br>Log: {e(default_log_dir())}</p>"
        f"<p>{e(backend_info().describe())}</p>"
    )


class AboutBox(QMessageBox):
    def __init__(self, icon: QIcon) -> None:
        super().__init__(QMessageBox.Icon.NoIcon, f"About {APP_TITLE}", "")
        self.setIconPixmap(icon.pixmap(48, 48))
        self.setWindowIcon(icon)
        self.setModal(False)

    def show_for(self, *, config_path: Path, data_dir: Path | None) -> None:
        self.setText(about_text(config_path=config_path, data_dir=data_dir))
        self.show()
        self.raise_()
