"""Importers: settings from other mail collectors, as drafts for the settings dialog.

Each importer is pure (text in, plain data out) and lists everything it did
not take over, so nothing from the old setup is lost without the user knowing.
"""
