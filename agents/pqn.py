"""PQN (Gallici et al. 2024, "Simplifying Deep Temporal Difference Learning") as an rlgen task.

Q-learning without a replay memory or a target network: N environments play a short rollout with the
epsilon-greedy actions of a LayerNorm Q-network, Q(lambda) returns are computed backwards over it, and a few
epochs of minibatch regressions of Q(s, a) onto those returns follow. One task step is one rollout; `step`
counts environment steps summed over the environments, as the DQN loop does.

A step after a game over only restarts the game (`first`: reward 0, action ignored): it is no transition, so
it carries no loss and no return flows across it. A life loss is terminal for the return; a truncated
episode bootstraps from its last real observation, as in the DQN's replay memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agents.env_task import EnvTask
from agents.evaluation import EvalConfig
from agents.exploration import linear_epsilon
from agents.pqn_agent import PQNAgent, PQNAgentConfig
from core.config import ExperimentConfig, RunConfig
from core.errors import UserError
from core.optim import OptimConfig, ScheduleConfig
from core.run import Run
from core.task import TASKS
from envs import EnvConfig, StepResult, make_env


@dataclass
class PQNTrainConfig:
    """Length of training, the rollout, its updates and exploration; purejaxql's pqn_atari.yaml unless noted."""

    total_steps: int = 10_000_000  # environment steps over all envs (CleanRL's 10M; purejaxql now trains 50M)
    num_steps: int = 32  # steps of every env per rollout (purejaxql; CleanRL: 128)
    num_epochs: int = 2  # passes over each rollout (purejaxql; CleanRL: 4)
    num_minibatches: int = 32  # minibatches per pass: 128 transitions each at 128 envs (purejaxql; CleanRL: 4)
    epsilon_start: float = 1.0  # exploration at the start (both)
    epsilon_end: float = 0.001  # exploration after the decay (purejaxql; CleanRL: 0.01)
    epsilon_decay_fraction: float = 0.1  # fraction of total_steps the linear decay lasts (both)


@dataclass
class PQNConfig(ExperimentConfig):
    """A PQN experiment: environment, Q-network, optimizer, rollouts and evaluation."""

    task: str = "pqn"
    env: EnvConfig = field(default_factory=lambda: EnvConfig(num_envs=128))  # 128 envs (purejaxql; CleanRL: 8)
    agent: PQNAgentConfig = field(default_factory=PQNAgentConfig)
    # RAdam at 2.5e-4 with the global gradient norm clipped to 10 (both); the linear decay to 0 is CleanRL's
    # (purejaxql's Atari config keeps the rate constant).
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(name="radam", lr=2.5e-4, grad_clip_norm=10.0,
                                            schedule=ScheduleConfig(name="linear"))
    )
    train: PQNTrainConfig = field(default_factory=PQNTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(
        default_factory=lambda: RunConfig(log_every=20_480, eval_every=1_000_000, checkpoint_every=250_000)
    )


def q_lambda_targets(
    reward: torch.Tensor, terminated: torch.Tensor, first: torch.Tensor, max_q: torch.Tensor,
    gamma: float, q_lambda: float,
) -> torch.Tensor:
    """Q(lambda) returns of a rollout, (T, N), computed backwards as purejaxql does.

    `reward`, `terminated` and `first` (T, N) describe each step; `max_q` (T + 1, N) is max_a Q(obs, a) of the
    observation before each step and, last, of the one after the rollout. With c_{t+1} = 0 where step t + 1
    is an autoreset or lies past the rollout, and 1 otherwise:

        G_t = r_t + gamma * (1 - terminated_t) * [(1 - lambda) * max_q_{t+1} + lambda * G'_{t+1}],
        G'_{t+1} = G_{t+1} if c_{t+1} else max_q_{t+1},

    so a terminal cuts both terms, and a truncation or the rollout's end bootstraps from max_q_{t+1} alone.
    The returns of autoreset steps themselves mean nothing: the loss masks them out.
    """
    steps = reward.shape[0]
    returns = torch.empty_like(reward)
    ahead = max_q[steps]
    for t in reversed(range(steps)):
        next_value = max_q[t + 1]
        if t + 1 < steps:
            ahead = torch.where(first[t + 1], next_value, ahead)
        blended = next_value + q_lambda * (ahead - next_value)
        returns[t] = reward[t] + gamma * torch.where(terminated[t], 0.0, blended)
        ahead = returns[t]
    return returns


class Rollout:
    """One rollout: observations (and their max Q) before every step plus the one after the last, on the
    device; rewards and flags, which the env hands over on the host, are gathered there and copied once."""

    def __init__(self, num_steps: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype,
                 device: torch.device) -> None:
        dtype = torch.from_numpy(np.zeros(0, dtype=obs_dtype)).dtype
        self.obs = torch.empty((num_steps + 1, num_envs, *obs_shape), dtype=dtype, device=device)
        self.max_q = torch.empty((num_steps + 1, num_envs), dtype=torch.float32, device=device)
        self.actions = torch.empty((num_steps, num_envs), dtype=torch.int64, device=device)
        self.reward = np.zeros((num_steps, num_envs), dtype=np.float32)
        self.terminated = np.zeros((num_steps, num_envs), dtype=bool)
        self.first = np.zeros((num_steps, num_envs), dtype=bool)

    def record(self, t: int, reward: np.ndarray, result: StepResult) -> None:
        """Keep what step `t` returned (its reward after the agent's clipping and scaling)."""
        self.reward[t], self.terminated[t], self.first[t] = reward, result.terminated, result.first

    def on_device(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rewards, terminals and autoreset flags as device tensors."""
        return tuple(torch.from_numpy(array).to(device) for array in (self.reward, self.terminated, self.first))


def _check(config: PQNConfig) -> None:
    """UserErrors for settings that make no rollout or no update."""
    train, agent = config.train, config.agent
    if min(train.num_steps, train.num_epochs, train.num_minibatches) < 1:
        raise UserError(f"train.num_steps, train.num_epochs and train.num_minibatches must be at least 1, got "
                        f"{train.num_steps}, {train.num_epochs} and {train.num_minibatches}")
    batch = config.env.num_envs * train.num_steps
    if batch % train.num_minibatches:
        raise UserError(f"train.num_minibatches ({train.num_minibatches}) must divide the rollout's env.num_envs x "
                        f"train.num_steps = {config.env.num_envs} x {train.num_steps} = {batch} transitions")
    if not 0.0 <= agent.gamma <= 1.0 or not 0.0 <= agent.q_lambda <= 1.0:
        raise UserError(f"agent.gamma and agent.q_lambda must lie in [0, 1], got {agent.gamma} and {agent.q_lambda}")
    if not 0.0 <= train.epsilon_decay_fraction <= 1.0:
        raise UserError(f"train.epsilon_decay_fraction must lie in [0, 1], got {train.epsilon_decay_fraction}")


@TASKS.register("pqn")
class PQNTask(EnvTask):
    """Parallel Q-learning from Q(lambda) returns of short rollouts in a vector of environments."""

    Config = PQNConfig
    Agent = PQNAgent

    def __init__(self, config: PQNConfig, run: Run, device: torch.device) -> None:
        super().__init__(config, run, device)
        _check(config)
        train = config.train
        self.env = make_env(config.env, seed=config.seed)
        self.num_envs = self.env.num_envs
        rollouts = math.ceil(train.total_steps / (self.num_envs * train.num_steps))
        self.agent = self.Agent(
            config.agent, config.optim, tuple(self.env.obs_shape), self.env.num_actions,
            max(rollouts * train.num_epochs * train.num_minibatches, 1), device, seed=config.seed,
            precision=self.precision,
        )
        self.rollout = Rollout(train.num_steps, self.num_envs, tuple(self.env.obs_shape), self.env.obs_dtype, device)
        self.obs: np.ndarray | None = None  # games start on the first step, and again after a resume

    def epsilon(self) -> float:
        """Linear decay from epsilon_start to epsilon_end over the first epsilon_decay_fraction of training."""
        train = self.config.train
        decay_steps = round(train.epsilon_decay_fraction * train.total_steps)
        return linear_epsilon(self.step, train.epsilon_start, train.epsilon_end, decay_steps)

    def train_step(self) -> dict[str, Any]:
        if self.obs is None:
            self.obs = self.env.reset()
        epsilon = self._collect()
        rollout, agent = self.rollout, self.config.agent
        reward, terminated, first = rollout.on_device(self.device)
        targets = q_lambda_targets(reward, terminated, first, rollout.max_q, agent.gamma, agent.q_lambda)
        figures = self.agent.learn(
            rollout.obs[:-1].flatten(0, 1), rollout.actions.flatten(), targets.flatten(), (~first).flatten(),
            self.config.train.num_epochs, self.config.train.num_minibatches,
        )
        return {"charts/epsilon": epsilon, **figures}

    def _collect(self) -> float:
        """Play one rollout into `self.rollout`; returns the epsilon of its last step."""
        rollout, agent = self.rollout, self.config.agent
        for t in range(self.config.train.num_steps):
            epsilon = self.epsilon()
            rollout.obs[t].copy_(torch.from_numpy(self.obs))
            rollout.actions[t], rollout.max_q[t] = self.agent.explore(rollout.obs[t], epsilon)
            self.env.send(rollout.actions[t].cpu().numpy())
            result = self.env.receive()
            reward = np.sign(result.reward) if agent.clip_rewards else result.reward
            rollout.record(t, reward * agent.reward_scale, result)
            self.obs = result.obs
            self.step += self.num_envs
            self.episodes.record(result.finished, self.step)
        rollout.obs[-1].copy_(torch.from_numpy(self.obs))
        rollout.max_q[-1] = self.agent.max_q(rollout.obs[-1])
        return epsilon
