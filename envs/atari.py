"""Atari games through ale-py's `AtariVectorEnv`, under the Nature or the Machado evaluation protocol.

ale-py's C++ threads do all the preprocessing (frame skip 4, max-pool of the last two frames, 84x84
grey resize, stack of 4, random no-op starts, FIRE on reset unless `env.fire_reset` is false); this module only picks its settings and
keeps the whole-game bookkeeping. Rewards are never clipped here, so the reported score is the real one.

ale-py hands out only the preprocessed stacks. For videos (`render=True`) a second vector env with the same
settings and seeds plays the same actions and returns the full 210x160 colour screen instead: the emulator is
deterministic given its seed and actions (sticky actions and no-op starts included), so both play the same game,
and `receive` checks that their frame counters, lives and rewards agree.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from ale_py import roms
from ale_py.vector_env import AtariVectorEnv
from gymnasium.vector import AutoresetMode

from core.errors import UserError
from core.registry import closest_names, unknown_name_message
from envs.base import ENV_KINDS, EnvConfig, GameTracker, StepResult, VectorEnv, env_seeds

FRAME_SKIP = 4  # agent steps last 4 frames under both protocols
EMULATOR_FPS = 60  # the Atari 2600 draws 60 frames a second
SCREEN_SHAPE = (210, 160)  # height and width of the emulator's screen, every game


@dataclass(frozen=True)
class Protocol:
    """The settings that differ between the published Atari protocols."""

    repeat_action_probability: float  # chance that the emulator repeats the previous action each frame
    life_loss_terminal: bool  # a life loss ends a training episode for the TD target


PROTOCOLS = {
    "nature": Protocol(repeat_action_probability=0.0, life_loss_terminal=True),  # Mnih et al. 2015
    "machado": Protocol(repeat_action_probability=0.25, life_loss_terminal=False),  # Machado et al. 2018
}


def rom_id(game: str) -> str:
    """ale-py's ROM id for a game named in snake_case or CamelCase (`ms_pacman`, `MsPacman`, `Breakout`).

    Gymnasium ids such as `ALE/Breakout-v5` are refused: they stand for settings (frame skip, sticky
    actions) that the protocol decides here, so accepting them would suggest they had an effect.
    """
    rom = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", game).lower()
    valid = roms.get_all_rom_ids()
    if rom in valid:
        return rom
    # Look for the game inside a Gymnasium id, so `BreakoutNoFrameskip-v4` still suggests `breakout`.
    bare = re.sub(r"^ale/|(_no_frameskip|_deterministic)?-v\d+$", "", rom)
    close = closest_names(bare, valid)
    hint = f" (did you mean {', '.join(repr(name) for name in close)}?)" if close else ""
    raise UserError(
        f"unknown Atari game {game!r}{hint}; env.id is a ROM name such as 'breakout' or 'ms_pacman'; "
        f"valid: {', '.join(sorted(valid))}"
    )


def vector_env_settings(cfg: EnvConfig, evaluation: bool) -> dict[str, Any]:
    """The keyword arguments for ale-py's `AtariVectorEnv` that `cfg` and the protocol ask for."""
    if cfg.protocol not in PROTOCOLS:
        raise UserError(unknown_name_message("Atari protocol", cfg.protocol, list(PROTOCOLS)))
    protocol = PROTOCOLS[cfg.protocol]
    repeat = cfg.repeat_action_probability
    if repeat is None:
        repeat = protocol.repeat_action_probability
    if not 0.0 <= repeat <= 1.0:
        raise UserError(f"env.repeat_action_probability must lie in [0, 1], got {repeat}")
    if cfg.noop_max < 0 or cfg.max_episode_frames < 1:
        raise UserError(
            f"env.noop_max must be >= 0 and env.max_episode_frames >= 1, "
            f"got {cfg.noop_max} and {cfg.max_episode_frames}"
        )
    return dict(
        frameskip=FRAME_SKIP,
        repeat_action_probability=repeat,
        full_action_space=cfg.full_action_space,
        noop_max=cfg.noop_max,
        max_num_frames_per_episode=cfg.max_episode_frames,
        # episodic_life=True would restart the whole game at every life loss; life_loss_info only
        # reports it as `terminated` and plays on, which is the Nature protocol.
        episodic_life=False,
        life_loss_info=protocol.life_loss_terminal and not evaluation,
        reward_clipping=False,
        use_fire_reset=cfg.fire_reset,
        num_threads=cfg.num_threads,
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )


@ENV_KINDS.register("atari")
class AtariVector(VectorEnv):
    """`num_envs` Atari games; observations are uint8 stacks of 4 grey 84x84 frames, oldest first.

    `terminated` alone cannot say which steps autoreset: a life loss is terminated without one, and a life
    lost on the time limit's step reports terminated (not truncated) yet resets. The frame counters can:
    see `step`.
    """

    def __init__(self, cfg: EnvConfig, seed: int, evaluation: bool = False, render: bool = False) -> None:
        self.settings = vector_env_settings(cfg, evaluation)
        self._env = AtariVectorEnv(rom_id(cfg.id), cfg.num_envs, **self.settings)
        # The colour twin of `_env` (see the module's doc): one max-pooled screen a step, as the agent sees it.
        height, width = SCREEN_SHAPE
        self._screens = AtariVectorEnv(rom_id(cfg.id), cfg.num_envs, **{
            **self.settings, "grayscale": False, "img_height": height, "img_width": width, "stack_num": 1,
        }) if render else None
        self._screen: np.ndarray | None = None
        self.num_envs = cfg.num_envs
        self.num_actions = int(self._env.single_action_space.n)
        self.obs_shape = tuple(self._env.single_observation_space.shape)
        self.obs_dtype = np.dtype(np.uint8)
        self.steps_per_second = EMULATOR_FPS / FRAME_SKIP
        self._seeds: list[int] | None = env_seeds(seed, cfg.num_envs, evaluation)
        self._games = GameTracker(cfg.num_envs)
        self._frames = np.zeros(cfg.num_envs, dtype=np.int32)
        self._game_frames = np.zeros(cfg.num_envs, dtype=np.int32)

    def reset(self) -> np.ndarray:
        """New games everywhere; only the first reset seeds, later ones continue the same random streams."""
        seeds = None if self._seeds is None else np.array(self._seeds)
        self._seeds = None
        obs, info = self._env.reset(seed=seeds)
        if self._screens is not None:
            screens, screen_info = self._screens.reset(seed=seeds)
            self._keep_screen(screens, info, screen_info, same_rewards=True)
        self._frames, self._game_frames = info["frame_number"], info["episode_frame_number"]
        self._games = GameTracker(self.num_envs)
        return obs

    def step(self, actions: np.ndarray) -> StepResult:
        """One agent step (4 frames) in every game."""
        self.send(actions)
        return self.receive()

    def send(self, actions: np.ndarray) -> None:
        """Hand the actions to ale-py's C++ threads, which play the step while this thread goes on."""
        actions = np.asarray(actions, dtype=np.int64)
        self._env.send(actions)
        if self._screens is not None:
            self._screens.send(actions)

    def receive(self) -> StepResult:
        """Wait for the step `send` started."""
        obs, reward, terminated, truncated, info = self._env.recv()
        if self._screens is not None:
            screens, screen_reward, _, _, screen_info = self._screens.recv()
            self._keep_screen(screens, info, screen_info, same_rewards=np.array_equal(reward, screen_reward))
        frames, game_frames = info["frame_number"], info["episode_frame_number"]
        # A step advances the emulator's frame counter and the game's frame counter together; only an
        # autoreset restarts the game's counter, and the game it ended had counted at least one frame.
        first = game_frames != self._game_frames + (frames - self._frames)
        self._frames, self._game_frames = frames, game_frames
        reward = reward.astype(np.float32)
        return StepResult(obs, reward, terminated, truncated, first, self._games.update(reward, first))

    def render(self) -> np.ndarray:
        """The colour screens, (num_envs, 210, 160, 3) uint8, max-pooled over the step's last two frames."""
        if self._screen is None:
            raise RuntimeError("render() needs an env made with render=True, after reset()")
        return self._screen

    def _keep_screen(self, screens: np.ndarray, info: dict, screen_info: dict, same_rewards: bool) -> None:
        """Keep the twin's screens once it is known to play the same games as the agent's env."""
        counters = ("frame_number", "episode_frame_number", "lives")
        if not same_rewards or not all(np.array_equal(info[key], screen_info[key]) for key in counters):
            raise RuntimeError("the colour twin of the Atari env diverged from the agent's env")
        self._screen = screens[:, -1]

    def close(self) -> None:
        self._env.close()
        if self._screens is not None:
            self._screens.close()

    @classmethod
    def game_name(cls, cfg: EnvConfig) -> str:
        """The ROM id: `Breakout` and `breakout` are one game."""
        return rom_id(cfg.id)
