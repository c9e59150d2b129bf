"""What every environment kind shares: the config, the step result, the vector-env interface, `make_env`.

Both kinds autoreset on the next step (Gymnasium's and ale-py's default): the step after an episode
ends returns the new episode's first observation with reward 0 and ignores the action. `StepResult.first`
marks that step, so the agent can keep it out of its replay memory, and the finished whole game is
reported on it, once, with its raw (unclipped) score and its length in agent steps.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from core.errors import UserError
from core.registry import Registry


@dataclass
class EnvConfig:
    """Which environment to play and under which protocol; the defaults reproduce Mnih et al. (2015)."""

    kind: str = "atari"  # atari | gym
    id: str = "breakout"  # atari: ROM name (breakout, ms_pacman, MsPacman); gym: Gymnasium id (CartPole-v1)
    num_envs: int = 8  # environments stepped together as one batch
    protocol: str = "nature"  # atari: nature (Mnih et al. 2015) | machado (Machado et al. 2018)
    full_action_space: bool = False  # atari: all 18 joystick actions instead of the game's minimal set
    noop_max: int = 30  # atari: a new game starts after 0..noop_max-1 random frames of no-op (FIRE counts)
    max_episode_frames: int = 108000  # atari: truncate a game after this many frames of play (4 a step)
    repeat_action_probability: Optional[float] = None  # atari: sticky actions; None: the protocol's value
    num_threads: int = 0  # atari: emulator threads; 0 lets ale-py choose
    fire_reset: bool = True  # atari: ale-py presses FIRE when a game starts; false leaves it to the agent (Dopamine)


class FinishedGame(NamedTuple):
    """A whole game that is over: all its lives, its raw score and its length in agent steps."""

    env_index: int
    score: float
    length: int


@dataclass
class StepResult:
    """One batched step; every array has one entry per environment."""

    obs: np.ndarray  # (num_envs, *obs_shape): the observation after the step
    reward: np.ndarray  # float32, the raw game reward (never clipped: clipping is the agent's choice)
    terminated: np.ndarray  # bool: no bootstrapping (game over; in nature training also a life loss)
    truncated: np.ndarray  # bool: the game hit the time limit; bootstrapping would be correct
    first: np.ndarray  # bool: autoreset step; obs starts a new game, reward is 0, the action was ignored
    finished: list[FinishedGame]  # whole games that ended on the previous step: exactly the envs with `first`


class VectorEnv(ABC):
    """A batch of environments behind one small interface, whatever the kind."""

    num_envs: int
    num_actions: int
    obs_shape: tuple[int, ...]  # one environment's observation, without the batch axis
    obs_dtype: np.dtype  # numpy dtype of the observations
    steps_per_second: float  # agent steps per second of game time: a video of one frame a step plays in real time

    @classmethod
    def game_name(cls, cfg: EnvConfig) -> str:
        """The game `cfg` plays, as published score tables name it (human-normalized scores look it up);
        without building the env."""
        return cfg.id

    @abstractmethod
    def reset(self) -> np.ndarray:
        """Start new games in every environment; the observations, (num_envs, *obs_shape)."""

    @abstractmethod
    def step(self, actions: np.ndarray) -> StepResult:
        """Play one action (an integer below num_actions) in each environment."""

    @abstractmethod
    def close(self) -> None:
        """Release the emulators; the env cannot be used afterwards."""

    @abstractmethod
    def render(self) -> np.ndarray:
        """The colour screens of the current step, (num_envs, H, W, 3) uint8; only for an env made with
        `render=True`, which keeps them."""

    def send(self, actions: np.ndarray) -> None:
        """Start a step whose result `receive` returns. Kinds whose emulators run in their own threads
        step them meanwhile, so the learner can overlap its update with the environments' step."""
        self._pending_actions = np.asarray(actions)

    def receive(self) -> StepResult:
        """The result of the step `send` started."""
        return self.step(self._pending_actions)

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class GameTracker:
    """Raw score and agent steps of each environment's current game, turned into `FinishedGame`s."""

    def __init__(self, num_envs: int) -> None:
        self.scores = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def update(self, reward: np.ndarray, first: np.ndarray) -> list[FinishedGame]:
        """Add one step; a `first` step closes the environment's previous game and is itself not counted."""
        finished = [
            FinishedGame(int(i), float(self.scores[i]), int(self.lengths[i])) for i in np.flatnonzero(first)
        ]
        self.scores = np.where(first, 0.0, self.scores + reward)
        self.lengths = np.where(first, 0, self.lengths + 1)
        return finished


def env_seeds(seed: int, num_envs: int, evaluation: bool) -> list[int]:
    """One seed per environment, from separate streams for training and evaluation: they never share games."""
    stream = np.random.SeedSequence([seed, int(evaluation)])
    # Both ale-py and Gymnasium take non-negative 31-bit seeds.
    return [int(s) for s in stream.generate_state(num_envs) & 0x7FFFFFFF]


# A kind is its VectorEnv class: called with (cfg, seed, evaluation, render) it builds the env.
ENV_KINDS: Registry[type[VectorEnv]] = Registry("env kind")


def make_env(cfg: EnvConfig, seed: int, evaluation: bool = False, render: bool = False) -> VectorEnv:
    """Build the vector env `cfg` describes; `evaluation` selects the evaluation protocol and seed stream,
    `render` keeps colour screens for `VectorEnv.render` (videos), which costs time every step."""
    kind = ENV_KINDS.get(cfg.kind)
    if cfg.num_envs < 1:
        raise UserError(f"env.num_envs must be at least 1, got {cfg.num_envs}")
    return kind(cfg, seed, evaluation, render)


def game_name(cfg: EnvConfig) -> str:
    """The game `cfg` plays under its kind's naming (`VectorEnv.game_name`), so callers need not know the kind."""
    return ENV_KINDS.get(cfg.kind).game_name(cfg)
