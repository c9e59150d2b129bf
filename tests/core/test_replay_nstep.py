"""Replay memory contents against an independent reference: n-step targets, frame stacks, ring wrap-around.

`Recorder` keeps everything the environments showed, step by step, and computes with plain Python loops
over each environment's stored episodes what the memory must return for every transition it still holds.
The Atari test (test_replay_atari.py) uses it too.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.replay import ReplayMemory

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")),
]


class Recorder:
    """Observations held at each step (obs[s] is what the action of step s was taken in) and what followed."""

    def __init__(self, first_obs: np.ndarray) -> None:
        self.obs = [np.array(first_obs)]
        self.action: list[np.ndarray] = []
        self.reward: list[np.ndarray] = []
        self.terminated: list[np.ndarray] = []
        self.first: list[np.ndarray] = []  # first[s][e]: step s was env e's autoreset, obs[s][e] ended an episode

    def step(self, action, reward, terminated, next_obs, first) -> None:
        self.action.append(np.array(action))
        self.reward.append(np.array(reward, dtype=np.float32))
        self.terminated.append(np.array(terminated, dtype=bool))
        self.first.append(np.array(first, dtype=bool))
        self.obs.append(np.array(next_obs))

    def reset(self, obs: np.ndarray) -> None:
        """A reset in the middle of the record: every env's held observation ends its episode."""
        num_envs = obs.shape[0]
        nothing = np.zeros(num_envs)
        self.step(nothing.astype(np.int64), nothing, nothing.astype(bool), obs, np.ones(num_envs, bool))

    def expected(self, rows: int, frame_stack: int, n_step: int, gamma: float) -> dict[int, dict]:
        """Flat index -> the transition the memory must hold there, for every transition it must hold."""
        newest = len(self.obs) - 1
        num_envs = self.obs[0].shape[0]
        expected = {}
        for s in range(max(0, newest - rows + frame_stack), newest - n_step + 1):
            for env in range(num_envs):
                if self.first[s][env]:
                    continue  # an episode's last observation: no action was taken from it
                ret, discount, k = 0.0, None, 0
                for j in range(n_step):
                    ret += gamma**j * float(self.reward[s + j][env])
                    k = j + 1
                    if self.terminated[s + j][env]:
                        discount = 0.0
                        break
                    if j + 1 < n_step and self.first[s + j + 1][env]:
                        break  # obs[s + j + 1] is the episode's last: bootstrap from it
                expected[(s % rows) * num_envs + env] = dict(
                    obs=self.obs[s][env], action=int(self.action[s][env]), reward=ret,
                    discount=gamma**k if discount is None else discount, next_obs=self.obs[s + k][env],
                )
        return expected


def check_memory(memory: ReplayMemory, recorder: Recorder) -> int:
    """Assert the memory holds exactly the recorder's expected transitions; returns how many."""
    expected = recorder.expected(memory.rows, memory.frame_stack, memory.n_step, memory.gamma)
    sampleable = set(torch.nonzero(memory.tree.leaves > 0).flatten().tolist())
    assert sampleable == set(expected)
    indices = sorted(expected)
    batch = memory.transitions(torch.tensor(indices, device=memory.device))
    want = [expected[i] for i in indices]
    np.testing.assert_array_equal(batch.obs.cpu().numpy(), np.stack([w["obs"] for w in want]))
    np.testing.assert_array_equal(batch.next_obs.cpu().numpy(), np.stack([w["next_obs"] for w in want]))
    np.testing.assert_array_equal(batch.action.cpu().numpy(), [w["action"] for w in want])
    np.testing.assert_allclose(batch.reward.cpu().numpy(), [w["reward"] for w in want], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch.discount.cpu().numpy(), [w["discount"] for w in want], rtol=1e-6)
    return len(indices)


class ToyVectorEnv:
    """Tiny episodic envs with ale-py's conventions: next-step autoreset, life losses that terminate but keep
    the frame stack, truncation (also on a life-loss step, reported as terminated yet resetting)."""

    def __init__(self, num_envs: int, pixels: bool, padding: str = "zeros", seed: int = 0) -> None:
        self.num_envs, self.pixels, self.padding = num_envs, pixels, padding
        self.rng = np.random.default_rng(seed)
        self.counter = 0
        self.episode = np.zeros(num_envs, np.int64)
        self.stacks = np.zeros((num_envs, 4, 5, 6), np.uint8)
        self.t = np.zeros(num_envs, np.int64)
        self.lives = np.zeros(num_envs, np.int64)
        self.ended = np.zeros(num_envs, bool)

    def _frame(self, env: int) -> np.ndarray:
        self.counter += 1
        frame = self.rng.integers(1, 256, size=(5, 6), dtype=np.uint8)  # never all zero: unlike padding
        frame[0, :3] = (self.counter % 251 + 1, self.counter // 251 % 251 + 1, env + 1)
        return frame

    def _start(self, env: int) -> None:
        self.episode[env] += 1
        self.t[env], self.lives[env], self.ended[env] = 0, 3, False
        frame = self._frame(env)
        self.stacks[env] = frame if self.padding == "first" else 0
        self.stacks[env, -1] = frame

    def _obs(self) -> np.ndarray:
        if self.pixels:
            return self.stacks.copy()
        features = [np.arange(self.num_envs), self.episode, self.t, np.full(self.num_envs, self.counter)]
        return np.stack(features, axis=1).astype(np.float32)

    def reset(self) -> np.ndarray:
        for env in range(self.num_envs):
            self._start(env)
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        reward = np.zeros(self.num_envs, np.float32)
        terminated = np.zeros(self.num_envs, bool)
        first = self.ended.copy()
        for env in range(self.num_envs):
            if first[env]:
                self._start(env)
                continue
            self.t[env] += 1
            self.stacks[env] = np.roll(self.stacks[env], -1, axis=0)
            self.stacks[env, -1] = self._frame(env)
            reward[env] = self.rng.normal()
            if self.rng.random() < 0.12:  # a life lost: terminated; the game goes on unless it was the last
                self.lives[env] -= 1
                terminated[env] = True
                self.ended[env] = self.lives[env] == 0
            if self.rng.random() < 0.04:  # the time limit
                self.ended[env] = True
        return self._obs(), reward, terminated, first


def run(memory: ReplayMemory, env: ToyVectorEnv, steps: int, check_every: int, reset_at: int = -1) -> int:
    """Feed `steps` random steps to the memory, checking it against the reference every `check_every`."""
    obs = env.reset()
    memory.add_reset(obs)
    recorder = Recorder(obs)
    checked = 0
    for step in range(steps):
        if step == reset_at:
            obs = env.reset()
            memory.add_reset(obs)
            recorder.reset(obs)
            continue
        action = env.rng.integers(0, 6, env.num_envs)
        next_obs, reward, terminated, first = env.step(action)
        memory.add(action, reward, terminated, next_obs, first)
        recorder.step(action, reward, terminated, next_obs, first)
        if step % check_every == check_every - 1 and step >= memory.n_step + 2:
            checked += check_memory(memory, recorder)
    return checked


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_step", [1, 3, 5])
@pytest.mark.parametrize("pixels", [False, True], ids=["vector", "pixels"])
def test_contents_match_the_reference_through_wraps_and_episode_ends(device: str, n_step: int, pixels: bool) -> None:
    env = ToyVectorEnv(num_envs=3, pixels=pixels, seed=n_step)
    obs_shape, dtype = ((4, 5, 6), np.uint8) if pixels else ((4,), np.float32)
    memory = ReplayMemory(3 * 24, 3, obs_shape, dtype, device, n_step=n_step, gamma=0.9, seed=0)
    # 24 rows, 200 steps: eight laps of the ring, checked at every phase of it; a reset in the middle.
    checked = run(memory, env, steps=200, check_every=3, reset_at=101)
    assert checked > 2000


@pytest.mark.parametrize("padding", ["zeros", "first"])
def test_stacks_pad_the_way_the_env_does(padding: str) -> None:
    env = ToyVectorEnv(num_envs=2, pixels=True, padding=padding, seed=7)
    memory = ReplayMemory(2 * 30, 2, (4, 5, 6), torch.uint8, "cpu", n_step=2, stack_padding=padding)
    assert run(memory, env, steps=120, check_every=5) > 500


def test_windows_stop_at_terminations_and_at_truncations() -> None:
    """A hand-written stream for one env: the targets written out, not recomputed."""
    memory = ReplayMemory(40, 1, (1,), torch.float32, "cpu", n_step=3, gamma=0.5)
    memory.add_reset(np.array([[0.0]]))
    # steps: obs value -> (reward, terminated, first); obs 3 is a life loss, obs 6 ends by truncation
    # (obs 7 is its last observation), obs 8 starts the next episode.
    script = [(1, False, False), (2, False, False), (4, True, False), (8, False, False), (16, False, False),
              (32, False, False), (64, False, False), (0, False, True), (1, False, False), (1, False, False),
              (1, False, False), (1, False, False)]
    for value, (reward, terminated, first) in enumerate(script, start=1):
        next_obs = np.array([[float(value)]])
        memory.add(np.array([0]), np.array([reward]), np.array([terminated]), next_obs, np.array([first]))
    batch = memory.transitions(torch.arange(0, 8))
    next_obs = batch.next_obs.flatten().tolist()
    # obs 0: 1 + 2/2 + 4/4 with a termination -> no bootstrap; obs 2: 4 then terminated.
    assert batch.reward.tolist()[:3] == [3.0, 2 + 4 / 2, 4.0]
    assert batch.discount.tolist()[:3] == [0.0, 0.0, 0.0]
    # obs 3 (after the life loss, same episode): 8 + 16/2 + 32/4, bootstrap from obs 6 with 0.5^3.
    assert (batch.reward[3].item(), batch.discount[3].item(), next_obs[3]) == (24.0, 0.125, 6.0)
    # obs 5: 32 + 64/2, then the episode ended: bootstrap from its last observation 7, not from obs 8.
    assert (batch.reward[5].item(), batch.discount[5].item(), next_obs[5]) == (64.0, 0.25, 7.0)
    assert (batch.reward[6].item(), batch.discount[6].item(), next_obs[6]) == (64.0, 0.5, 7.0)
    assert memory.tree.leaves[7].item() == 0.0  # obs 7 is no transition
    assert memory.tree.leaves[8].item() == 1.0
