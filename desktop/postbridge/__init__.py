"""Postbridge: collects a small office's mail from its ISP and delivers it to the office server."""

from __future__ import annotations

__version__ = "0.1.0"
