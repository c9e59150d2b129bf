"""Scores over seeds: mean, median and interquartile mean with stratified-bootstrap confidence intervals.

Agarwal et al. 2021 ("Deep RL at the Edge of the Statistical Precipice"), as rliable computes them: scores are
a (runs, tasks) array; the IQM is the mean of the middle 50% of all of them (scipy's trim_mean, cutting
int(n / 4) from each end); a bootstrap sample redraws the runs of each task with replacement, independently
per task, and the interval is the percentile interval of the statistic over the samples. With one task it is
the plain bootstrap over seeds. The median here is that of all the scores, the middle seed of one task, where
rliable's aggregate_median is the median over tasks of each task's mean. Vectorized over the samples: 50,000
take milliseconds, where rliable 1.2 (through arch's bootstrap, a Python loop) took 20 s for one array.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_REPS = 50_000  # rliable's default number of bootstrap samples
CONFIDENCE = 0.95


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean along `axis`: int(n / 4) values cut from each end of the sorted scores, the rest averaged."""
    ordered = np.sort(scores, axis=axis)
    count = ordered.shape[axis]
    cut = count // 4
    return np.take(ordered, np.arange(cut, count - cut), axis=axis).mean(axis=axis)


STATISTICS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "mean": lambda scores, axis: np.mean(scores, axis=axis),
    "median": lambda scores, axis: np.median(scores, axis=axis),
    "iqm": iqm,
}


@dataclass(frozen=True)
class Estimate:
    """A statistic of the scores and its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | list[float]]:
        return {"value": self.value, "ci": [self.low, self.high]}


def stratified_bootstrap(
    scores: np.ndarray, reps: int = DEFAULT_REPS, confidence: float = CONFIDENCE, seed: int = 0
) -> dict[str, Estimate]:
    """Mean, median and IQM of a (runs,) or (runs, tasks) array with their `confidence` percentile intervals
    from `reps` stratified bootstrap samples drawn with numpy's generator seeded by `seed`."""
    scores = np.asarray(scores, dtype=np.float64)
    table = scores.reshape(len(scores), -1)
    runs, tasks = table.shape
    if runs == 0:
        raise ValueError("no scores to aggregate")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, runs, size=(reps, runs, tasks))
    # Resample the runs of each task column on its own: the strata are the tasks.
    samples = np.take_along_axis(np.broadcast_to(table, (reps, runs, tasks)), picks, axis=1).reshape(reps, -1)
    tail = 100 * (1 - confidence) / 2
    estimates = {}
    for name, statistic in STATISTICS.items():
        low, high = np.percentile(statistic(samples, 1), [tail, 100 - tail])
        estimates[name] = Estimate(float(statistic(table.reshape(1, -1), 1)[0]), float(low), float(high))
    return estimates
