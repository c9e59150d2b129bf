"""Whole games that end during training: their TensorBoard charts and the recent scores on the progress line.

Every Q-learning task (the DQN loop, PQN) reports the games its vector env finishes through one `EpisodeLog`,
so the tags, the curve's shape and the checkpointed figures are the same whichever task trained.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from core.tensorboard import TensorBoardLog
from envs import FinishedGame

RECENT_GAMES = 10  # games averaged into the progress line's return_last10
# Games averaged into `charts/episodic_return_last100` at each evaluation: CleanRL's tables (openrlbenchmark's
# rlops, metric_last_n_average_window=100) score a run by the mean of its last 100 training games.
SCORED_GAMES = 100


class EpisodeLog:
    """Charts of finished games (`charts/episodic_return`: raw score, `charts/episodic_length`: agent steps)
    and the scores of the last hundred, which checkpoints keep so a resumed run's figures go on."""

    def __init__(self, tb: TensorBoardLog) -> None:
        self.tb = tb
        self.recent_returns: list[float] = []

    def record(self, finished: Sequence[FinishedGame], step: int) -> None:
        """Chart the games that ended at `step` (environment steps); nothing for an empty list."""
        if not finished:
            return
        # Games of several envs can end on the same step: one point per step keeps the curve a function.
        scores = [game.score for game in finished]
        self.tb.scalar("charts/episodic_return", float(np.mean(scores)), step)
        self.tb.scalar("charts/episodic_length", float(np.mean([game.length for game in finished])), step)
        self.recent_returns = (self.recent_returns + scores)[-SCORED_GAMES:]

    def progress_figures(self) -> dict[str, float]:
        """The mean score of the last ten games, once a game has ended."""
        if not self.recent_returns:
            return {}
        return {"return_last10": float(np.mean(self.recent_returns[-RECENT_GAMES:]))}

    def training_score(self) -> dict[str, float]:
        """The mean raw score of the last hundred training games (fewer early on), the figure CleanRL reports
        for a run, logged beside the evaluation so both protocols can be compared; nothing before a game ends."""
        if not self.recent_returns:
            return {}
        return {"charts/episodic_return_last100": float(np.mean(self.recent_returns))}

    def state_dict(self) -> dict[str, Any]:
        return {"recent_returns": list(self.recent_returns)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent_returns = list(state["recent_returns"])
