"""Progress display: a tqdm bar on an interactive terminal, otherwise one plain log line every N seconds.

`Progress` shows a run's training steps. Its rate (`sps`) and ETA come from the last couple of minutes of
stepping within the current phase: a phase whose steps cost differently (a DQN's random warm-up runs ~20x
faster than its learning) starts the estimate afresh, and time spent in evaluations and checkpoints is left
out of the rate and added to the ETA as what the remaining ones will cost. `progress_of` counts down one long
piece of work (a 5,000-sample likelihood bound, AIS, FID, a hundred games) and stays silent when it is short.
"""
from __future__ import annotations

import bisect
import logging
import sys
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Optional

from tqdm import tqdm

log = logging.getLogger("rlgen")

_BAR_REFRESH_S = 0.5
# A countdown's bar appears only once its work has lasted this long.
_BAR_DELAY_S = 2.0
# The rate is measured over this much stepping time, from samples at most one per SAMPLE_EVERY_S...
RATE_WINDOW_S = 120.0
SAMPLE_EVERY_S = 1.0
# ...and is unknown ("?") until the current phase has run this long.
MIN_SPAN_S = 2.0
# Training figures, then what `Progress` adds: the tqdm rate and remaining time would be session averages.
_TRAINING_BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

Clock = Callable[[], float]


@dataclass
class ProgressDefaults:
    """What countdowns use unless told otherwise; the driver sets `every_s` from `run.progress_every_s`."""

    every_s: float = 30.0


DEFAULTS = ProgressDefaults()


def configure(every_s: float) -> None:
    """Seconds between the plain lines of the countdowns that follow (long evaluations)."""
    DEFAULTS.every_s = every_s


def _format(figures: Mapping[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in figures.items())


def format_duration(seconds: float) -> str:
    """H:MM:SS, with hours past 24 kept as hours."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _interactive(interactive: Optional[bool]) -> bool:
    return sys.stderr.isatty() if interactive is None else interactive


class RecentRate:
    """Units per second over the last RATE_WINDOW_S seconds of a clock, from sparse (time, done) samples."""

    def __init__(self, now: float, done: float) -> None:
        self.samples: deque[tuple[float, float]] = deque([(now, done)])

    def record(self, now: float, done: float) -> None:
        if now - self.samples[-1][0] >= SAMPLE_EVERY_S:
            self.samples.append((now, done))
        # Keep the newest sample at least a window old, so the rate always spans the whole window.
        while len(self.samples) > 1 and self.samples[1][0] <= now - RATE_WINDOW_S:
            self.samples.popleft()

    def rate(self, now: float, done: float, min_span_s: float = MIN_SPAN_S) -> Optional[float]:
        """None until `min_span_s` has passed or while nothing got done."""
        since, done_then = self.samples[0]
        if now - since < max(min_span_s, 1e-9) or done <= done_then:
            return None
        return (done - done_then) / (now - since)


def _occasions(step: int, total: int, every: int) -> int:
    """How many of the driver's cadence points (multiples of `every`, and always the last step) lie in (step, total]."""
    if step >= total:
        return 0
    periodic = total // every - step // every if every > 0 else 0
    return periodic + (0 if every > 0 and total % every == 0 else 1)


class Progress:
    """Shows steps done of a total with the run's key figures, the recent rate and an honest ETA; cheap enough
    to call every step.

    `phases` names the stretches of training in order, each with the step it ends at (the last one ends at
    `total`); `cadences` maps a kind of pause (`evaluation`, `checkpoint`) to its period in steps, so the ETA
    can add the remaining ones at the duration of the last one `pause(kind)` measured.
    """

    def __init__(self, total: int, initial: int, every_s: float, interactive: Optional[bool] = None,
                 phases: Optional[Mapping[str, int]] = None, cadences: Optional[Mapping[str, int]] = None,
                 clock: Clock = time.monotonic) -> None:
        self.total = total
        self.every_s = every_s
        self.interactive = _interactive(interactive)
        self.clock = clock
        self.phase_names = list(phases or {})
        self.phase_ends = list((phases or {}).values())
        self.cadences = dict(cadences or {})
        self.costs: dict[str, float] = {}  # seconds the last pause of each kind took
        self._paused_s = 0.0
        self._phase = self._phase_of(initial)
        self._rate = RecentRate(self.stepping_seconds(), initial)
        self._last_shown = clock()
        self._bar = tqdm(total=total, initial=initial, dynamic_ncols=True, unit="step",
                         bar_format=_TRAINING_BAR) if self.interactive else None

    def stepping_seconds(self) -> float:
        """The clock less the time spent in pauses: a stopwatch that runs only while the task steps."""
        return self.clock() - self._paused_s

    @contextmanager
    def pause(self, kind: str) -> Iterator[None]:
        """Time spent inside is no stepping time; its duration is kept as the cost of the next `kind`."""
        start = self.clock()
        try:
            yield
        finally:
            spent = self.clock() - start
            self._paused_s += spent
            self.costs[kind] = spent

    def _phase_of(self, step: int) -> int:
        return min(bisect.bisect_right(self.phase_ends, step), max(len(self.phase_ends) - 1, 0))

    def update(self, step: int, figures: Mapping[str, float]) -> None:
        now = self.clock()
        stepping = now - self._paused_s
        phase = self._phase_of(step)
        if phase != self._phase:
            self._phase, self._rate = phase, RecentRate(stepping, step)
        else:
            self._rate.record(stepping, step)
        if self._bar is not None:
            if now - self._last_shown >= _BAR_REFRESH_S or step >= self.total:
                self._bar.n = step
                self._bar.set_postfix_str(self._describe(step, figures, stepping), refresh=True)
                self._last_shown = now
        elif now - self._last_shown >= self.every_s or step >= self.total:
            self._last_shown = now
            log.info("step %d/%d (%.1f%%) %s", step, self.total, 100 * step / max(self.total, 1),
                     self._describe(step, figures, stepping))

    def _describe(self, step: int, figures: Mapping[str, float], stepping: float) -> str:
        """The figures, the phase (where the task has several), the recent steps per second and the ETA."""
        # At the end any span will do: a short run's last line should still say how fast it went.
        rate = self._rate.rate(stepping, step, 0.0 if step >= self.total else MIN_SPAN_S)
        parts = [_format(figures)] if figures else []
        if len(self.phase_names) > 1:
            parts.append(f"phase={self.phase_names[self._phase]}")
        parts.append(f"sps={rate:.4g}" if rate is not None else "sps=?")
        parts.append(self._eta(step, rate))
        return " ".join(parts)

    def _eta(self, step: int, rate: Optional[float]) -> str:
        # A task whose step is a whole rollout can end past the total: nothing remains then.
        if step >= self.total:
            return "eta=0:00:00"
        if rate is None:
            return "eta=?"
        last_phase = self._phase >= len(self.phase_ends) - 1
        phase_end = self.total if last_phase else self.phase_ends[self._phase]
        stepping = (phase_end - step) / rate
        if not last_phase:
            # The next phase's pace is unknown until it runs: averaging this one's in would be the old lie.
            return f"eta=? ({self.phase_names[self._phase]} ends in {format_duration(stepping)})"
        measured = [kind for kind in self.cadences if kind in self.costs]
        overhead = sum(self.costs[kind] * _occasions(step, self.total, self.cadences[kind]) for kind in measured)
        text = f"eta={format_duration(stepping + overhead)}"
        if overhead >= 1.0:
            text += f" ({'+'.join(kind + 's' for kind in measured)} {format_duration(overhead)} of it)"
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Countdown:
    """Progress of one long piece of work: `advance(count)` as parts of it finish. A bar on a terminal once the
    work has lasted a moment; otherwise a line with done/total, rate and ETA every `every_s` seconds and one
    with the duration at the end, and no line at all for work that ends within `every_s`."""

    def __init__(self, total: int, label: str, unit: str, every_s: Optional[float] = None,
                 interactive: Optional[bool] = None, clock: Clock = time.monotonic) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.every_s = DEFAULTS.every_s if every_s is None else every_s
        self.clock = clock
        self.done = 0
        self.shown = False
        self._start = self._last_shown = clock()
        self._rate = RecentRate(self._start, 0)
        self._bar = tqdm(total=total, desc=label, unit=f" {unit}", delay=_BAR_DELAY_S, leave=False,
                         dynamic_ncols=True) if _interactive(interactive) else None

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = self.clock()
        self._rate.record(now, self.done)
        if now - self._last_shown >= self.every_s and self.done < self.total:
            self._last_shown, self.shown = now, True
            rate = self._rate.rate(now, self.done)
            pace = f"{rate:.3g} {self.unit}/s eta={format_duration((self.total - self.done) / rate)}" \
                if rate is not None else "eta=?"
            log.info("%s: %d/%d %s (%.1f%%) %s", self.label, self.done, self.total, self.unit,
                     100 * self.done / max(self.total, 1), pace)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.shown:
            self.shown = False
            log.info("%s: %d/%d %s in %s", self.label, self.done, self.total, self.unit,
                     format_duration(self.clock() - self._start))

    def __enter__(self) -> "Countdown":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Silent:
    """What `progress_of` gives for a display turned off: the same calls, doing nothing."""

    def advance(self, count: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_of(total: int, label: Optional[str], unit: str) -> Countdown | _Silent:
    """A countdown of `total` units of work named `label` (see `Countdown`); None for `label` shows nothing.
    Use as a context manager and call `advance(count)` as parts finish."""
    return _Silent() if label is None else Countdown(total, label, unit)


class TqdmLogHandler(logging.Handler):
    """Log records to stderr through tqdm.write, so they never break an active progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)
