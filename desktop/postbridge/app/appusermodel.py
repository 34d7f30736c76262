"""Windows: the AppUserModelID that ties the running app to its Start-menu shortcut.

Windows attributes notifications, taskbar grouping and pinning to an AppUserModelID.
The installer (packaging/windows/postbridge.iss) gives Postbridge's Start-menu shortcut the
ID :data:`~postbridge.app.autostart.APP_ID`; the frozen app claims the same ID for its
process at start, before any window exists, so that Windows matches the two and shows its
notifications instead of dropping them. Run from source, the process is python.exe and has
no such shortcut, so nothing is set there.
"""

from __future__ import annotations

import logging
import sys

from postbridge.app.autostart import APP_ID

log = logging.getLogger("postbridge.app")


def set_app_user_model_id(app_id: str = APP_ID) -> bool:
    """Claim ``app_id`` for this process (frozen on Windows only); True when it was set."""
    if sys.platform != "win32" or not getattr(sys, "frozen", False):
        return False
    import ctypes

    try:
        result = ctypes.windll.shell32.SetCurrentProcessExplicitAppUserModelID(app_id)
    except (AttributeError, OSError) as exc:  # very old Windows: notifications still work
        log.warning("could not set the AppUserModelID: %s", exc)
        return False
    if result != 0:  # an HRESULT: 0 is S_OK
        log.warning("SetCurrentProcessExplicitAppUserModelID failed: 0x%08x", result & 0xFFFFFFFF)
        return False
    return True
