"""The replay memory fed by the real Breakout vector env: every stack it rebuilds is the one the env returned.

A random rollout long enough for several games per env (life losses, game overs, truncations by a short
time limit) into a memory small enough to wrap around several times; checked against the reference
of test_replay_nstep.py for plain and 3-step targets.
"""
from __future__ import annotations

import numpy as np
import pytest

from core.replay import ReplayMemory
from test_replay_nstep import Recorder, check_memory

ale_py = pytest.importorskip("ale_py")
from ale_py.vector_env import AtariVectorEnv  # noqa: E402

NUM_ENVS = 4
ROWS = 150


def test_breakout_rollout_stacks_and_targets_match_the_env() -> None:
    env = AtariVectorEnv(
        game="breakout", num_envs=NUM_ENVS, episodic_life=False, life_loss_info=True, reward_clipping=False,
        repeat_action_probability=0.25, max_num_frames_per_episode=640, num_threads=2,
    )
    memories = [
        ReplayMemory(NUM_ENVS * ROWS, NUM_ENVS, (4, 84, 84), np.uint8, "cpu", n_step=n_step, gamma=0.9)
        for n_step in (1, 3)
    ]
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=np.arange(NUM_ENVS))
    frames, game_frames = info["frame_number"], info["episode_frame_number"]
    recorder = Recorder(obs)
    for memory in memories:
        memory.add_reset(obs)
    life_losses = game_overs = truncations = checked = 0
    try:
        for step in range(700):
            action = rng.integers(0, 4, NUM_ENVS)
            obs, reward, terminated, truncated, info = env.step(action)
            # Both frame counters advance together except on an autoreset, which restarts the game's.
            first = info["episode_frame_number"] != game_frames + (info["frame_number"] - frames)
            frames, game_frames = info["frame_number"], info["episode_frame_number"]
            for memory in memories:
                memory.add(action, reward, terminated, obs, first)
            recorder.step(action, reward, terminated, obs, first)
            life_losses += int((terminated & (info["lives"] > 0)).sum())
            game_overs += int((terminated & (info["lives"] == 0)).sum())
            truncations += int(truncated.sum())
            if step % 97 == 96:
                checked += sum(check_memory(memory, recorder) for memory in memories)
    finally:
        env.close()
    assert life_losses >= 10 and game_overs >= 2 and truncations >= 2, (life_losses, game_overs, truncations)
    assert checked > 5000
