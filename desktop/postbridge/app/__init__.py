"""The Qt shell: tray icon, worker thread, Activity window, notifications, autostart.

Everything here is presentation and plumbing; the mail logic lives in
``postbridge.engine``, which never imports this package or Qt.
"""
