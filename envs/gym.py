"""Gymnasium classic-control environments (CartPole-v1, Acrobot-v1, MountainCar-v0) as vector envs.

They run the same agent code as Atari in seconds, which is what tests and quick experiments need.
The Atari-only fields of `EnvConfig` (protocol, no-ops, sticky actions, frame limit) do not apply;
each env keeps its registered time limit (500 steps for CartPole-v1).
"""
from __future__ import annotations

import importlib.util
import os

import gymnasium
import numpy as np
from gymnasium.spaces import Box, Discrete
from gymnasium.vector import AutoresetMode

from core.errors import UserError
from core.registry import unknown_name_message
from envs.base import ENV_KINDS, EnvConfig, GameTracker, StepResult, VectorEnv, env_seeds

CLASSIC_CONTROL = "gymnasium.envs.classic_control"


def classic_control_ids() -> list[str]:
    """The registered Gymnasium ids of the classic-control environments."""
    return sorted(
        env_id
        for env_id, spec in gymnasium.registry.items()
        if isinstance(spec.entry_point, str) and spec.entry_point.startswith(CLASSIC_CONTROL)
    )


@ENV_KINDS.register("gym")
class GymVector(VectorEnv):
    """`num_envs` copies of one classic-control env, stepped in this process (they are cheap)."""

    def __init__(self, cfg: EnvConfig, seed: int, evaluation: bool = False, render: bool = False) -> None:
        valid = classic_control_ids()
        if cfg.id not in valid:
            raise UserError(unknown_name_message("Gymnasium classic-control env", cfg.id, valid))
        if render:
            if importlib.util.find_spec("pygame") is None:
                raise UserError("frames of Gymnasium's classic-control envs need pygame, in the video extra: "
                                "pip install 'rlgen[video]'")
            # Gymnasium draws classic control with pygame. Frames for a file need no display: SDL would print an
            # error on stderr while looking for one, and pygame its greeting on import.
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
            os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        self._env = gymnasium.make_vec(
            cfg.id,
            cfg.num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP},
            render_mode="rgb_array" if render else None,
        )
        action_space, obs_space = self._env.single_action_space, self._env.single_observation_space
        if not isinstance(action_space, Discrete) or not isinstance(obs_space, Box):
            self._env.close()
            raise UserError(f"env.id {cfg.id!r} has continuous actions; env.kind gym needs discrete ones")
        self.num_envs = cfg.num_envs
        self.num_actions = int(action_space.n)
        self.obs_shape = tuple(obs_space.shape)
        self.obs_dtype = np.dtype(obs_space.dtype)
        self.steps_per_second = float(self._env.metadata["render_fps"])
        self._seeds: list[int] | None = env_seeds(seed, cfg.num_envs, evaluation)
        self._games = GameTracker(cfg.num_envs)
        self._ended = np.zeros(cfg.num_envs, dtype=bool)

    def reset(self) -> np.ndarray:
        """New episodes everywhere; only the first reset seeds, later ones continue the random streams."""
        obs, _ = self._env.reset(seed=self._seeds)
        self._seeds = None
        self._games = GameTracker(self.num_envs)
        self._ended = np.zeros(self.num_envs, dtype=bool)
        return obs

    def step(self, actions: np.ndarray) -> StepResult:
        """One step in every env; the step after an episode ends is its autoreset (`first`)."""
        obs, reward, terminated, truncated, _ = self._env.step(np.asarray(actions, dtype=np.int64))
        first = self._ended
        self._ended = terminated | truncated
        reward = reward.astype(np.float32)
        return StepResult(obs, reward, terminated, truncated, first, self._games.update(reward, first))

    def render(self) -> np.ndarray:
        """The envs' current frames as Gymnasium draws them (600x400 for CartPole), (num_envs, H, W, 3) uint8."""
        if self._env.render_mode != "rgb_array":
            raise RuntimeError("render() needs an env made with render=True")
        return np.stack(self._env.render())

    def close(self) -> None:
        self._env.close()
