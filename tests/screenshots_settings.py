"""Render every first-run wizard page and settings tab to PNG, at scale 1 and 2, for review.

Not a test (pytest does not collect it): a person looks at the pictures for
clipped text, misaligned fields and unclear words. Each page is shown filled in
the way a user would fill it, with a Test result and, where useful, with the
inline errors, since those are the states that crowd a page.

    uv run python tests/screenshots_settings.py [OUTPUT_DIR]

(default OUTPUT_DIR: postbridge-settings-screens in the temporary folder).

Runs itself once per scale factor (``QT_SCALE_FACTOR`` must be set before Qt
starts), on the offscreen platform unless ``QT_QPA_PLATFORM`` says otherwise
(e.g. ``xcb`` under Xvfb for the real window decorations' fonts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

SCALES = ("1", "2")


def main() -> int:
    default = Path(tempfile.gettempdir()) / "postbridge-settings-screens"
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    if os.environ.get("PB_SHOT_SCALE"):
        render(out / f"scale{os.environ['PB_SHOT_SCALE']}")
        sys.stdout.flush()
        # PySide6 6.12.0 on Python 3.11 drops a reference to None/True on many calls; the
        # pictures are written, so skip an interpreter shutdown that may trip over it.
        os._exit(0)
    for scale in SCALES:
        env = {
            **os.environ,
            "PB_SHOT_SCALE": scale,
            "QT_SCALE_FACTOR": scale,
            "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"),
        }
        subprocess.run([sys.executable, __file__, str(out)], env=env, check=True)
    print(f"Screenshots in {out.resolve()}")
    return 0


def render(out: Path) -> None:
    # Never the real keyring or config: a throwaway home for this run.
    home = Path(tempfile.mkdtemp(prefix="pb-shots-"))
    for name, sub in (
        ("HOME", ""),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
    ):
        os.environ[name] = str(home / sub)
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyrings.alt.file.PlaintextKeyring"

    from PySide6.QtWidgets import QApplication, QWidget

    from postbridge.app.autostart import XdgAutostart
    from postbridge.app.fetchmail_import import ImportReport
    from postbridge.app.mailboxes_editor import MailboxDialog
    from postbridge.app.settings import SettingsDialog
    from postbridge.app.wizard import FirstRunWizard
    from postbridge.engine import config as configmod
    from postbridge.engine.importers.fetchmail import load as load_rc
    from postbridge.engine.routing.router import EnvelopeSuggestion

    app = QApplication.instance() or QApplication(sys.argv)
    out.mkdir(parents=True, exist_ok=True)
    autostart = XdgAutostart(["/opt/postbridge/postbridge"], config_home=home / "xdg")

    def shot(widget: QWidget, name: str) -> None:
        widget.show()
        for _ in range(5):
            app.processEvents()
        widget.grab().save(str(out / f"{name}.png"))
        print(out / f"{name}.png")

    wizard = FirstRunWizard(home / "postbridge.toml", autostart=autostart)
    shot(wizard, "wizard-1-isp-empty")
    wizard.next()  # shows every inline error
    shot(wizard, "wizard-1-isp-errors")
    p = wizard.pop3
    p.host.setText("pop.isp.example")
    p.username.setText("office@isp.example")
    p.password.setText("secret")
    p.validate()
    wizard.pop3_page.show_problem(None)
    p.test._show(
        True,
        "Logged in to pop.isp.example:995 as office@isp.example over an encrypted connection. "
        "The mailbox holds 12 message(s), 1.3 MB. Nothing was downloaded or deleted.",
    )
    shot(wizard, "wizard-1-isp-tested")
    p.security.set_value("none")
    shot(wizard, "wizard-1-isp-unencrypted")
    p.security.set_value("tls")
    wizard.next()
    shot(wizard, "wizard-2-who-user")
    r = wizard.routing
    r.global_radio.setChecked(True)
    r.domains.setText("example.com, example.org")
    r.postmaster.setText("admin@example.com")
    r.map_model.add_rule("sales@example.com", "alice@example.com, bob@example.com")
    r.map_model.add_rule("info@other.example", "carol@example.com")
    found = EnvelopeSuggestion(header="X-Original-To", messages=20, evidence=())
    r.detect._succeeded(found)
    r.validate()
    shot(wizard, "wizard-2-who-global")
    r.map_model.remove_rows([1])
    r.validate()
    wizard.next()
    shot(wizard, "wizard-3-delivery-maildir")
    d = wizard.delivery
    d.server_radio.setChecked(True)
    d.host.setText("mail.office.lan")
    d.username.setText("collector")
    d.password.setText("x")
    d.test._show(
        False,
        "The office mail server at mail.office.lan:25 could not be reached (the connection was "
        "refused; is the server running?).",
    )
    shot(wizard, "wizard-3-delivery-server")
    d.maildir_radio.setChecked(True)
    wizard.next()
    shot(wizard, "wizard-4-signal-none")
    s = wizard.signal
    s.atrn_radio.setChecked(True)
    s.host.setText("odmr.isp.example")
    s.domains.setText("example.com")
    s.username.setText("example.com")
    s.test._show(
        True,
        "Logged in to the ISP's ODMR server at odmr.isp.example:366 as example.com, encrypted "
        "(TLSv1.3); it offers ATRN. The mail it holds will be fetched at the next poll.",
    )
    shot(wizard, "wizard-4-signal-atrn")
    s.none_radio.setChecked(True)
    wizard.next()
    shot(wizard, "wizard-5-schedule")
    wizard.hide()

    dialog = MailboxDialog(stored=lambda account: None, taken=["office"])
    shot(dialog, "wizard-add-mailbox")
    dialog.hide()

    data = Path(__file__).parent / "data" / "fetchmail"
    rc = data / "unsupported.rc"
    report = ImportReport(rc, load_rc(rc))
    shot(report, "import-report")
    report.hide()

    config_path = home / "settings.toml"
    config_path.write_text(
        """
[delivery]
kind = "smtp"
host = "mail.office.lan"
port = 25

[signal]
kind = "etrn"
host = "mail.isp.example"
port = 25
domains = ["example.com"]

[[mailbox]]
name = "office"
kind = "global"
host = "pop.isp.example"
username = "office@isp.example"
local_domains = ["example.com"]
envelope_header = "Delivered-To"
postmaster = "admin@example.com"
leave_on_server_days = 7
[mailbox.map]
"sales@example.com" = ["alice@example.com", "bob@example.com"]
"*@example.com" = "admin@example.com"

[[mailbox]]
name = "alice"
host = "pop.isp.example"
username = "alice@isp.example"
recipient = "alice@example.com"
"""
    )
    settings = SettingsDialog(configmod.load(config_path), autostart=autostart)
    for index, name in enumerate(("mailboxes", "delivery", "signal", "schedule")):
        settings.tabs.setCurrentIndex(index)
        shot(settings, f"settings-{index + 1}-{name}")
    settings.tabs.setCurrentIndex(0)
    settings.mailboxes.list.setCurrentRow(1)
    shot(settings, "settings-1-mailboxes-user")
    settings.mailboxes.list.setCurrentRow(0)
    settings.mailboxes.editor.routing.domains.setText("example.org")
    settings.apply()
    shot(settings, "settings-1-mailboxes-errors")


if __name__ == "__main__":
    sys.exit(main())
