"""Show the frozen build's size and build time at the end of the run, where CI logs show them."""

from __future__ import annotations

import pytest

BUILD_FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if BUILD_FIGURES:
        terminalreporter.section("frozen build (packaging/linux/build.sh)")
        for line in BUILD_FIGURES:
            terminalreporter.write_line(line)
