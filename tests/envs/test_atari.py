"""Atari vector env: whole-game scores against a plain ALE emulator, autoreset marks, protocols, names."""
from __future__ import annotations

import ale_py
import numpy as np
import pytest
from ale_py import roms

from core.errors import UserError
from envs import EnvConfig, StepResult, game_name, make_env
from envs.atari import FRAME_SKIP, rom_id
from envs.base import env_seeds

NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3  # Breakout's minimal action set


class ReferenceGame:
    """One game on a bare `ALEInterface`, stepped the way ale-py's vector env does, with no preprocessing.

    It knows game over from the emulator itself, so it is an independent witness of what the vector env
    should report. It needs noop_max=0 (no random no-op starts), which leaves FIRE as the only start action.
    """

    def __init__(self, game: str, seed: int, repeat_action_probability: float) -> None:
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale = ale_py.ALEInterface()
        self.ale.setInt("random_seed", seed)
        self.ale.setFloat("repeat_action_probability", repeat_action_probability)
        self.ale.loadROM(roms.get_rom_path(game))
        self.actions = self.ale.getMinimalActionSet()
        self.new_game()

    def new_game(self) -> None:
        self.ale.reset_game()
        self.ale.act(ale_py.Action.FIRE)
        self.lives = self.ale.lives()

    def step(self, action: int) -> tuple[int, bool, bool]:
        """Raw reward, life lost (with lives left), game over."""
        reward = 0
        for _ in range(FRAME_SKIP):
            reward += self.ale.act(self.actions[action])
            if self.ale.game_over():
                break
        life_lost = 0 < self.ale.lives() < self.lives
        self.lives = self.ale.lives()
        return reward, life_lost, self.ale.game_over()


def play(env, actions_for_step, steps: int) -> list[StepResult]:
    env.reset()
    return [env.step(actions_for_step(t)) for t in range(steps)]


def random_actions(num_envs: int, num_actions: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return lambda t: rng.integers(0, num_actions, num_envs)


@pytest.mark.parametrize(
    "game, protocol, evaluation, steps",
    [
        ("breakout", "nature", False, 700),
        ("breakout", "nature", True, 500),
        ("breakout", "machado", False, 500),
        ("space_invaders", "nature", False, 900),  # rewards of 5 to 30 points show they are not clipped
    ],
)
def test_every_step_and_whole_game_matches_a_plain_emulator(game, protocol, evaluation, steps):
    cfg = EnvConfig(id=game, num_envs=2, protocol=protocol, noop_max=0, num_threads=1)
    seed = 5
    with make_env(cfg, seed, evaluation) as env:
        policy = random_actions(2, env.num_actions)
        actions = [policy(t) for t in range(steps)]
        results = play(env, lambda t: actions[t], steps)
        life_loss_terminal = env.settings["life_loss_info"]
        repeat = env.settings["repeat_action_probability"]
    assert life_loss_terminal == (protocol == "nature" and not evaluation)

    for i, env_seed in enumerate(env_seeds(seed, 2, evaluation)):
        reference = ReferenceGame(game, env_seed, repeat)
        score, length, terminals, game_over, games = 0, 0, 0, False, []
        for t, result in enumerate(results):
            assert result.first[i] == game_over, t
            reported = [(g.score, g.length) for g in result.finished if g.env_index == i]
            if game_over:
                assert result.reward[i] == 0 and not result.terminated[i]
                assert (result.obs[i, :3] == 0).all() and result.obs[i, 3].any()
                assert reported == [(score, length)]
                if game == "breakout":  # 5 lives, and a game over only when the last one is lost
                    assert terminals == (5 if life_loss_terminal else 1)
                games.append(score)
                reference.new_game()
                score, length, terminals, game_over = 0, 0, 0, False
                continue
            assert reported == []
            reward, life_lost, game_over = reference.step(actions[t][i])
            assert result.reward[i] == reward, t
            assert result.terminated[i] == (game_over or (life_loss_terminal and life_lost)), t
            assert not result.truncated[i]
            if life_lost:
                assert result.obs[i, :3].any(), "a life loss does not restart the frame stack"
            score, length, terminals = score + reward, length + 1, terminals + result.terminated[i]
        assert games, "the test should see at least one whole game per env"
    if game == "space_invaders":
        assert max(r.reward.max() for r in results) > 1


def test_life_lost_on_the_time_limit_step_still_starts_a_new_game():
    # Without FIRE the ball served at the start is never served again, so the first life is lost at a
    # step fixed by the emulator alone; a time limit on exactly that step reports terminated, not truncated.
    cfg = EnvConfig(num_envs=1, noop_max=0, num_threads=1)
    with make_env(cfg, seed=0) as env:
        results = play(env, lambda t: np.array([NOOP]), 200)
    life_lost_at = next(t for t, r in enumerate(results) if r.terminated[0])

    cfg.max_episode_frames = FRAME_SKIP * (life_lost_at + 1)
    with make_env(cfg, seed=0) as env:
        results = play(env, lambda t: np.array([NOOP]), life_lost_at + 3)
    assert results[life_lost_at].terminated[0] and not results[life_lost_at].truncated[0]
    assert [r.first[0] for r in results] == [False] * (life_lost_at + 1) + [True, False]
    assert results[life_lost_at + 1].finished[0].length == life_lost_at + 1


def test_eval_env_ignores_life_losses_and_truncates_at_the_frame_limit():
    cfg = EnvConfig(num_envs=3, max_episode_frames=400, num_threads=1)
    steps = 400 // FRAME_SKIP
    with make_env(cfg, seed=1) as training:
        trained = play(training, lambda t: np.full(3, NOOP), steps)
    assert np.any([r.terminated for r in trained], axis=0).all(), "every env loses its served ball"

    with make_env(cfg, seed=1, evaluation=True) as evaluation:
        evaluated = play(evaluation, lambda t: np.full(3, NOOP), steps + 2)
    assert not np.any([r.terminated for r in evaluated])
    assert [r.truncated.all() for r in evaluated] == [False] * (steps - 1) + [True, False, False]
    assert evaluated[steps].first.all()
    scores = np.sum([r.reward for r in evaluated[:steps]], axis=0)
    assert sorted(evaluated[steps].finished) == [(i, scores[i], steps) for i in range(3)]


def test_protocols_choose_sticky_actions_and_action_sets():
    machado = EnvConfig(protocol="machado", num_envs=1)
    with make_env(machado, seed=0) as env:
        assert env.settings["repeat_action_probability"] == 0.25
        assert env.num_actions == 4
        assert env.obs_shape == (4, 84, 84) and env.obs_dtype == np.uint8
    machado.full_action_space = True
    with make_env(machado, seed=0) as env:
        assert env.num_actions == 18
    with make_env(EnvConfig(num_envs=1), seed=0) as env:
        assert env.settings["repeat_action_probability"] == 0.0


def test_without_fire_reset_the_agent_serves_the_ball():
    """ale-py serves Breakout's first ball itself unless fire_reset is off (Dopamine's agents press FIRE)."""
    def first_life_lost(fire_reset: bool, actions) -> int | None:
        cfg = EnvConfig(num_envs=1, noop_max=0, num_threads=1, fire_reset=fire_reset)
        with make_env(cfg, seed=0) as env:
            assert env.settings["use_fire_reset"] is fire_reset
            results = play(env, actions, 300)
        return next((t for t, r in enumerate(results) if r.terminated[0]), None)

    assert first_life_lost(True, lambda t: np.array([NOOP])) is not None
    assert first_life_lost(False, lambda t: np.array([NOOP])) is None
    assert first_life_lost(False, lambda t: np.array([FIRE if t == 0 else NOOP])) is not None


def test_sticky_actions_reach_the_emulator():
    # With the previous action always repeated the game never sees the agent's: LEFT and RIGHT look alike.
    for repeat, alike in ((1.0, True), (0.0, False)):
        cfg = EnvConfig(num_envs=1, noop_max=0, repeat_action_probability=repeat, num_threads=1)
        observed = []
        for action in (LEFT, RIGHT):
            with make_env(cfg, seed=0) as env:
                observed.append(np.stack([r.obs for r in play(env, lambda t: np.array([action]), 30)]))
        assert np.array_equal(*observed) == alike


def test_same_seed_same_games_and_evaluation_uses_other_seeds():
    cfg = EnvConfig(protocol="machado", num_envs=2, num_threads=1)

    def observations(seed: int, evaluation: bool = False) -> np.ndarray:
        with make_env(cfg, seed, evaluation) as env:
            return np.stack([r.obs for r in play(env, random_actions(2, env.num_actions), 50)])

    first_run = observations(7)
    assert np.array_equal(first_run, observations(7))
    assert not np.array_equal(first_run, observations(8))
    assert not np.array_equal(first_run, observations(7, evaluation=True))


def test_game_names_are_rom_ids_in_snake_or_camel_case():
    assert rom_id("breakout") == rom_id("Breakout") == "breakout"
    assert rom_id("MsPacman") == rom_id("ms_pacman") == "ms_pacman"
    assert rom_id("pong") == "pong"


def test_the_game_name_of_an_atari_config_is_its_rom_id():
    assert game_name(EnvConfig(kind="atari", id="MsPacman")) == "ms_pacman"
    with pytest.raises(UserError, match="unknown Atari game"):
        game_name(EnvConfig(kind="atari", id="ALE/Breakout-v5"))


@pytest.mark.parametrize("name", ["breakot", "BreakoutNoFrameskip-v4", "ALE/Breakout-v5"])
def test_unknown_game_names_the_closest_rom(name):
    with pytest.raises(UserError, match=r"unknown Atari game .*did you mean 'breakout'"):
        make_env(EnvConfig(id=name), seed=0)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"protocol": "natrue"}, "did you mean 'nature'"),
        ({"kind": "atarii"}, "did you mean 'atari'"),
        ({"repeat_action_probability": 1.5}, "repeat_action_probability"),
        ({"num_envs": 0}, "num_envs"),
    ],
)
def test_bad_settings_are_user_errors(override, message):
    with pytest.raises(UserError, match=message):
        make_env(EnvConfig(**override), seed=0)
