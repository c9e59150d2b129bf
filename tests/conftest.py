"""Test-session hooks: one visible line at the end of a run that says how many tests skipped for want of MNIST."""
from __future__ import annotations

from typing import Any

MNIST_SKIP_PREFIX = "MNIST is not in "


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Count the skips whose reason is missing MNIST; a green run that skipped them should say so."""
    reports = terminalreporter.stats.get("skipped", [])
    reasons = [str(report.longrepr[2]) for report in reports if isinstance(report.longrepr, tuple)]
    missing = [reason for reason in reasons if MNIST_SKIP_PREFIX in reason]
    if missing:
        reason = missing[0][missing[0].index(MNIST_SKIP_PREFIX):]
        terminalreporter.write_line(f"rlgen: {len(missing)} tests skipped: {reason}", yellow=True, bold=True)
