"""The off-policy training loop as an rlgen task: act in N environments, store, learn, evaluate.

One task step is one step of all N environments, so `step` counts environment steps (agent
decisions, four frames each on Atari) summed over the environments, as CleanRL and Dopamine count.
Updates happen at a fixed rate per environment step (`train_every`), whatever N is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agents.dqn import Batch, DQNAgent, DQNAgentConfig
from agents.env_task import EnvTask
from agents.evaluation import EvalConfig
from agents.exploration import linear_epsilon
from core.config import ExperimentConfig, RunConfig
from core.errors import UserError
from core.optim import OptimConfig
from core.replay import ReplayMemory
from core.run import Run
from core.task import TASKS
from envs import EnvConfig, make_env


@dataclass
class ReplayConfig:
    """The replay memory; capacity counts transitions over all environments."""

    capacity: int = 1_000_000  # transitions kept (Nature: 1M)
    prioritized: bool = False  # proportional prioritized replay (Schaul et al. 2016)
    alpha: float = 0.6  # priority exponent
    beta_start: float = 0.4  # importance-weight exponent, annealed to 1 over the run


@dataclass
class DQNTrainConfig:
    """Length and pace of training; defaults are the Nature DQN's (Mnih et al. 2015, Extended Data Table 1)."""

    total_steps: int = 12_500_000  # environment steps over all envs (50M frames at frame skip 4)
    learning_starts: int = 50_000  # environment steps of random play before the first update
    train_every: int = 4  # environment steps per update, kept whatever num_envs is
    batch_size: int = 32  # transitions per update
    epsilon_start: float = 1.0  # exploration at the start
    epsilon_end: float = 0.1  # exploration after the decay
    epsilon_decay_steps: int = 1_000_000  # environment steps of the linear decay
    epsilon_warmup_steps: int = 0  # environment steps at epsilon_start before the decay begins (Dopamine: learning_starts)


@dataclass
class DQNConfig(ExperimentConfig):
    """A DQN experiment: environment, agent, replay memory, optimizer, training and evaluation."""

    task: str = "dqn"
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: DQNAgentConfig = field(default_factory=DQNAgentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    # Nature's RMSProp: squared-gradient and gradient momentum 0.95, min squared gradient 0.01.
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(name="rmsprop", lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)
    )
    train: DQNTrainConfig = field(default_factory=DQNTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(
        default_factory=lambda: RunConfig(log_every=1_000, eval_every=250_000, checkpoint_every=250_000)
    )


@TASKS.register("dqn")
class DQNTask(EnvTask):
    """Deep Q-learning on a vector of environments."""

    Config = DQNConfig
    Agent = DQNAgent
    state_attributes = (*EnvTask.state_attributes, "memory", "update_credit")

    def __init__(self, config: DQNConfig, run: Run, device: torch.device) -> None:
        super().__init__(config, run, device)
        train = config.train
        if train.train_every < 1 or train.batch_size < 1:
            raise UserError("train.train_every and train.batch_size must be at least 1")
        if train.epsilon_warmup_steps < 0:
            raise UserError(f"train.epsilon_warmup_steps must be >= 0, got {train.epsilon_warmup_steps}")
        self.env = make_env(config.env, seed=config.seed)
        self.num_envs = self.env.num_envs
        total_updates = max(train.total_steps - train.learning_starts, 0) // train.train_every
        self.agent = self.Agent(
            config.agent, config.optim, tuple(self.env.obs_shape), self.env.num_actions, total_updates, device,
            seed=config.seed, precision=self.precision,
        )
        self.memory = ReplayMemory(
            capacity=config.replay.capacity,
            num_envs=self.num_envs,
            obs_shape=tuple(self.env.obs_shape),
            obs_dtype=self.env.obs_dtype,
            device=device,
            n_step=config.agent.n_step,
            gamma=config.agent.gamma,
            prioritized=config.replay.prioritized,
            alpha=config.replay.alpha,
            beta_start=config.replay.beta_start,
            beta_steps=total_updates,
            seed=config.seed,
        )
        self.obs: np.ndarray | None = None  # games start on the first step (see `_start_games`)
        self.update_credit = 0.0

    def epsilon(self) -> float:
        """epsilon_start for epsilon_warmup_steps, then a linear decay to epsilon_end over epsilon_decay_steps
        environment steps."""
        train = self.config.train
        return linear_epsilon(self.step, train.epsilon_start, train.epsilon_end, train.epsilon_decay_steps,
                              train.epsilon_warmup_steps)

    def progress_phases(self) -> dict[str, int]:
        # A step learns once its count reaches learning_starts (see train_step): random play runs ~20x faster.
        train = self.config.train
        if 0 < train.learning_starts < train.total_steps:
            return {"warm-up": train.learning_starts, "learning": train.total_steps}
        return {}

    def _start_games(self) -> np.ndarray:
        """New games in every env; the memory ends the episodes it holds there (they bootstrap)."""
        obs = self.env.reset()
        self.memory.add_reset(obs)
        return obs

    def train_step(self) -> dict[str, Any]:
        train = self.config.train
        if self.obs is None:
            self.obs = self._start_games()
        epsilon = self.epsilon()
        obs = torch.as_tensor(self.obs, device=self.device)
        actions = self.agent.act(obs, epsilon)
        # The emulators play this step in their own threads while the updates run on what is stored.
        self.env.send(actions.cpu().numpy())
        figures: dict[str, Any] = {"charts/epsilon": epsilon}
        # learning_starts counts this step's transitions, as the memory will once they are stored.
        if self.step + self.num_envs >= train.learning_starts and self.memory.can_sample:
            figures.update(self._learn())
        result = self.env.receive()
        reward = np.sign(result.reward) if self.config.agent.clip_rewards else result.reward
        self.memory.add(actions, reward, result.terminated, result.obs, result.first)
        self.obs = result.obs
        self.step += self.num_envs
        self.episodes.record(result.finished, self.step)
        return figures

    def _learn(self) -> dict[str, torch.Tensor]:
        """The updates this step owes: num_envs / train_every of them, the fraction carried over."""
        train = self.config.train
        figures: dict[str, torch.Tensor] = {}
        self.update_credit += self.num_envs / train.train_every
        while self.update_credit >= 1.0:
            self.update_credit -= 1.0
            sample = self.memory.sample(train.batch_size)
            batch = Batch(sample.obs, sample.action, sample.reward, sample.next_obs, sample.discount, sample.weights)
            figures, td_error = self.agent.update(batch)
            if self.config.replay.prioritized:
                self.memory.update_priorities(sample.indices, td_error)
        return figures

