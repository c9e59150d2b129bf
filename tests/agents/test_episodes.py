"""The finished-game log: its chart points, the progress line's last ten and CleanRL's last-hundred score, each
against a plain recomputation from the list of games, and the same figures after a checkpoint round trip."""
from __future__ import annotations

import numpy as np

from agents.episodes import EpisodeLog
from envs import FinishedGame


class _Scalars:
    """Stands in for the TensorBoard log: keeps every point written."""

    def __init__(self) -> None:
        self.points: list[tuple[str, float, int]] = []

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.points.append((tag, float(value), step))


def _games(generator: np.random.Generator, count: int) -> list[FinishedGame]:
    return [FinishedGame(int(generator.integers(8)), float(generator.integers(0, 400)), int(generator.integers(100, 3000)))
            for _ in range(count)]


def test_figures_match_the_games_that_ended_and_survive_a_checkpoint() -> None:
    generator = np.random.default_rng(0)
    tb = _Scalars()
    log = EpisodeLog(tb)
    assert log.progress_figures() == {} and log.training_score() == {}
    every_score: list[float] = []
    for step in range(1, 61):
        finished = _games(generator, int(generator.integers(0, 5)))  # none, one or several games on a step
        log.record(finished, step)
        every_score += [game.score for game in finished]
        if finished:
            assert tb.points[-2:] == [("charts/episodic_return", np.mean([g.score for g in finished]), step),
                                      ("charts/episodic_length", np.mean([g.length for g in finished]), step)]
    assert len(every_score) > 100
    assert log.progress_figures() == {"return_last10": np.mean(every_score[-10:])}
    assert log.training_score() == {"charts/episodic_return_last100": np.mean(every_score[-100:])}
    assert np.mean(every_score[-100:]) != np.mean(every_score[-101:])  # the window really is a hundred games

    resumed = EpisodeLog(_Scalars())
    resumed.load_state_dict(log.state_dict())
    later = _games(generator, 3)
    for current in (log, resumed):
        current.record(later, 61)
    assert resumed.progress_figures() == log.progress_figures()
    assert resumed.training_score() == log.training_score()


def test_a_checkpoint_with_only_ten_games_fills_up_to_a_hundred() -> None:
    """Checkpoints written before the window grew keep ten games; the score averages those until more end."""
    log = EpisodeLog(_Scalars())
    log.load_state_dict({"recent_returns": [float(score) for score in range(10)]})
    assert log.training_score() == {"charts/episodic_return_last100": 4.5}
    log.record([FinishedGame(0, 100.0, 500)], 1)
    assert log.training_score() == {"charts/episodic_return_last100": np.mean(list(range(10)) + [100.0])}
    assert log.progress_figures() == {"return_last10": np.mean(list(range(1, 10)) + [100.0])}
