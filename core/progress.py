"""Progress display: a tqdm bar on an interactive terminal, otherwise one plain log line every N seconds."""
from __future__ import annotations

import logging
import sys
import time
from typing import Mapping, Optional

from tqdm import tqdm

log = logging.getLogger("rlgen")

_BAR_REFRESH_S = 0.5


def _format(figures: Mapping[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in figures.items())


def format_duration(seconds: float) -> str:
    """H:MM:SS, with hours past 24 kept as hours."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class Progress:
    """Shows steps done of a total with the run's key figures; cheap enough to call every step."""

    def __init__(self, total: int, initial: int, every_s: float, interactive: Optional[bool] = None) -> None:
        self.total = total
        self.every_s = every_s
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._last_shown = time.monotonic()
        self._start_time = time.monotonic()
        self._start_step = initial
        self._bar = tqdm(total=total, initial=initial, dynamic_ncols=True, unit="step") if self.interactive else None

    def update(self, step: int, figures: Mapping[str, float]) -> None:
        now = time.monotonic()
        if self._bar is not None:
            if now - self._last_shown >= _BAR_REFRESH_S or step >= self.total:
                self._bar.n = step
                self._bar.set_postfix_str(_format(figures), refresh=True)
                self._last_shown = now
        elif now - self._last_shown >= self.every_s or step >= self.total:
            self._last_shown = now
            log.info("step %d/%d (%.1f%%) %s%s", step, self.total, 100 * step / max(self.total, 1),
                     _format(figures), self._eta(step, now))

    def _eta(self, step: int, now: float) -> str:
        done = step - self._start_step
        if done <= 0:
            return ""
        # A task whose step is a whole rollout can end past the total: nothing remains then.
        remaining = max(self.total - step, 0) * (now - self._start_time) / done
        return f" eta={format_duration(remaining)}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class TqdmLogHandler(logging.Handler):
    """Log records to stderr through tqdm.write, so they never break an active progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)
