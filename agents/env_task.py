"""What the Q-learning tasks (the DQN loop, PQN) share around their learning rules: length in environment steps,
the charts of finished games, evaluation by the standard protocol, the progress line and the env's release."""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from agents.episodes import EpisodeLog
from agents.evaluation import evaluate_policy, log_gameplay
from core.run import Run
from core.task import Task
from envs import VectorEnv


class EnvTask(Task):
    """A task that trains an agent on `self.env`, a vector env it builds, and evaluates `self.agent`, which acts
    by `act(obs, epsilon)`. One step counts environment steps summed over the environments."""

    summary_metrics = ("eval/score_mean", "eval/human_normalized", "charts/episodic_return_last100")
    training_curve = "charts/episodic_return"
    length_keys = ("train.total_steps",)
    compiles = True  # `compile: true` compiles the Q-networks (benchmarks/update_variants.py)
    # The agent's class, built as Agent(config.agent, config.optim, obs_shape, num_actions, total_updates, device,
    # seed=, precision=): `rlgen play` (agents/play.py) builds it alone, without the training envs and memory.
    Agent: ClassVar[type]
    env: VectorEnv
    agent: Any
    state_attributes = ("agent", "episodes.recent_returns")

    def __init__(self, config: Any, run: Run, device: torch.device) -> None:
        super().__init__(config, run, device)
        self.episodes = EpisodeLog(run.tb)

    @property
    def total_steps(self) -> int:
        return self.config.train.total_steps

    def evaluate(self, final: bool = False) -> dict[str, float]:
        metrics, frames = evaluate_policy(self.agent, self.config.env, self.config.eval, self.config.seed, self.device)
        if frames is not None:
            log_gameplay(self.run.tb, frames, self.step)
        return {**metrics, **self.episodes.training_score()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        # The vector env cannot restore emulator state: new games start on the next step, as in Dopamine.
        self.obs = None

    def progress_figures(self) -> dict[str, float]:
        return self.episodes.progress_figures()

    def close(self) -> None:
        self.env.close()
