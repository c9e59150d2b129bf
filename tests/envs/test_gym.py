"""Gymnasium classic-control vector env: autoreset marks, episode bookkeeping, time limit, names, seeds."""
from __future__ import annotations

import numpy as np
import pytest

from core.errors import UserError
from envs import EnvConfig, game_name, make_env


def cartpole(num_envs: int) -> EnvConfig:
    return EnvConfig(kind="gym", id="CartPole-v1", num_envs=num_envs)


def balance(obs: np.ndarray) -> np.ndarray:
    """Push the cart towards where the pole leans and falls: keeps CartPole up past its 500-step limit."""
    angle, angular_velocity = obs[:, 2], obs[:, 3]
    return (angle + 0.5 * angular_velocity > 0).astype(np.int64)


def test_cartpole_episodes_are_counted_once_from_the_autoreset_step():
    rng = np.random.default_rng(0)
    with make_env(cartpole(4), seed=0) as env:
        assert (env.num_actions, env.obs_shape, env.obs_dtype) == (2, (4,), np.float32)
        assert env.reset().shape == (4, 4)
        ended = np.zeros(4, dtype=bool)
        steps = np.zeros(4, dtype=int)
        games = 0
        for _ in range(300):
            result = env.step(rng.integers(0, 2, 4))
            assert np.array_equal(result.first, ended)
            assert np.array_equal(result.reward, np.where(ended, 0.0, 1.0))
            assert sorted(result.finished) == [(i, steps[i], steps[i]) for i in np.flatnonzero(ended)]
            games += len(result.finished)
            steps = np.where(ended, 0, steps + 1)
            ended = result.terminated | result.truncated
    assert games >= 4 * 300 // 50, "random CartPole episodes last a few dozen steps"


def test_cartpole_truncates_at_its_500_step_limit():
    with make_env(cartpole(2), seed=1) as env:
        obs = env.reset()
        results = []
        for _ in range(502):
            results.append(env.step(balance(obs)))
            obs = results[-1].obs
    assert not np.any([r.terminated for r in results])
    assert [r.truncated.all() for r in results] == [False] * 499 + [True, False, False]
    assert results[500].first.all() and sorted(results[500].finished) == [(0, 500.0, 500), (1, 500.0, 500)]


def test_same_seed_same_episodes_and_evaluation_uses_other_seeds():
    def observations(seed: int, evaluation: bool = False) -> np.ndarray:
        rng = np.random.default_rng(0)
        with make_env(cartpole(3), seed, evaluation) as env:
            return np.stack([env.reset()] + [env.step(rng.integers(0, 2, 3)).obs for _ in range(100)])

    first_run = observations(4)
    assert np.array_equal(first_run, observations(4))
    assert not np.array_equal(first_run, observations(5))
    assert not np.array_equal(first_run, observations(4, evaluation=True))


def test_unknown_env_id_names_the_closest():
    with pytest.raises(UserError, match=r"'CartPol-v1' \(did you mean 'CartPole-v1'"):
        make_env(EnvConfig(kind="gym", id="CartPol-v1"), seed=0)


def test_continuous_actions_are_refused():
    with pytest.raises(UserError, match="Pendulum-v1.*discrete"):
        make_env(EnvConfig(kind="gym", id="Pendulum-v1"), seed=0)


def test_the_game_name_of_a_gym_config_is_its_id():
    assert game_name(cartpole(2)) == "CartPole-v1"
