"""PQN: Q(lambda) targets against a forward-view reference, CartPole learns, a resumed run ends where an
uninterrupted one does, Breakout runs end to end, and bad settings are refused with one clear line."""
from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.pqn import PQNTask, q_lambda_targets
from core.cli import main
from core.invocation import rlgen_command
from envs import make_env
from test_loop import _assert_same, _only_run, _scalars

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = ROOT / "experiments" / "pqn_cartpole.yaml"
BREAKOUT = ROOT / "experiments" / "pqn_breakout.yaml"
GAMMA, LAMBDA = 0.9, 0.65


def _rollout() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seven steps of four envs: (0) a life loss at t=1 and a game over at t=3, whose autoreset is t=4; (1) a
    truncation at t=2 (autoreset at t=3, bootstrapping from its last real observation); (2) nothing ends, so
    every return bootstraps at the rollout's end; (3) a game over on the last step."""
    steps, envs = 7, 4
    generator = torch.Generator().manual_seed(0)
    reward = torch.randint(-1, 2, (steps, envs), generator=generator).float()
    max_q = torch.randn(steps + 1, envs, generator=generator)
    terminated = torch.zeros(steps, envs, dtype=torch.bool)
    first = torch.zeros(steps, envs, dtype=torch.bool)
    terminated[1, 0] = terminated[3, 0] = terminated[6, 3] = True
    first[4, 0] = first[3, 1] = True
    reward[first] = 0.0  # the env pays nothing on an autoreset step
    return reward, terminated, first, max_q


def _forward_view(reward, terminated, first, max_q, t: int, env: int, gamma: float, lam: float) -> float:
    """The lambda-return by its definition: n-step returns G(n) = r_t + ... + gamma^(n-1) r_(t+n-1) +
    gamma^n max Q(s_(t+n)), weighted (1 - lam) lam^(n-1), the longest one taking the remaining lam^(H-1).
    The chain stops at a terminal (no bootstrap), before an autoreset step, or at the end of the rollout."""
    steps = reward.shape[0]
    n_step_returns = []
    rewards, discount, k = 0.0, 1.0, t
    while True:
        rewards += discount * float(reward[k, env])
        discount *= gamma
        if terminated[k, env]:
            n_step_returns.append(rewards)
            break
        n_step_returns.append(rewards + discount * float(max_q[k + 1, env]))
        if k + 1 == steps or first[k + 1, env]:
            break
        k += 1
    longest = len(n_step_returns)
    weights = [(1 - lam) * lam ** n for n in range(longest - 1)] + [lam ** (longest - 1)]
    return sum(w * g for w, g in zip(weights, n_step_returns))


@pytest.mark.parametrize("lam", [LAMBDA, 0.0, 1.0])
def test_q_lambda_targets_match_the_forward_view(lam: float) -> None:
    reward, terminated, first, max_q = _rollout()
    targets = q_lambda_targets(reward, terminated, first, max_q, GAMMA, lam)
    for t in range(reward.shape[0]):
        for env in range(reward.shape[1]):
            if not first[t, env]:  # autoreset steps are no transitions: their targets are masked out
                expected = _forward_view(reward, terminated, first, max_q, t, env, GAMMA, lam)
                assert targets[t, env].item() == pytest.approx(expected, abs=1e-5), (t, env)


def test_the_cases_are_the_ones_described() -> None:
    reward, terminated, first, max_q = _rollout()
    targets = q_lambda_targets(reward, terminated, first, max_q, GAMMA, LAMBDA)
    # The life loss cuts the return although the game goes on: nothing after t=1 reaches t=0 or t=1.
    assert targets[1, 0].item() == pytest.approx(reward[1, 0].item())
    expected = reward[0, 0] + GAMMA * ((1 - LAMBDA) * max_q[1, 0] + LAMBDA * reward[1, 0])
    assert targets[0, 0].item() == pytest.approx(expected.item())
    # The truncated step bootstraps fully from the episode's last real observation, not from the autoreset.
    assert targets[2, 1].item() == pytest.approx((reward[2, 1] + GAMMA * max_q[3, 1]).item())
    # The rollout's last step bootstraps from the observation after it, unless it ended the game.
    assert targets[6, 2].item() == pytest.approx((reward[6, 2] + GAMMA * max_q[7, 2]).item())
    assert targets[6, 3].item() == pytest.approx(reward[6, 3].item())


def test_lambda_zero_gives_one_step_q_learning_targets() -> None:
    reward, terminated, first, max_q = _rollout()
    targets = q_lambda_targets(reward, terminated, first, max_q, GAMMA, 0.0)
    one_step = reward + GAMMA * (~terminated).float() * max_q[1:]
    torch.testing.assert_close(targets[~first], one_step[~first])


@pytest.mark.slow
def test_cartpole_reaches_475(tmp_path: Path) -> None:
    assert main(["run", str(CARTPOLE), f"run.root={tmp_path}"]) == 0
    evaluations = _scalars(_only_run(tmp_path, "pqn_cartpole"))["eval/score_mean"]
    assert max(steps for steps, _ in evaluations) == 102_400
    assert max(score for _, score in evaluations) >= 475, evaluations


SMALL_CARTPOLE = ["env.num_envs=4", "train.num_steps=16", "train.num_minibatches=4", "train.num_epochs=2",
                  "train.total_steps=1280", "run.checkpoint_every=640", "run.eval_every=640", "run.log_every=128",
                  "eval.episodes=2", "eval.num_envs=2"]
STOP_AT = 640


def _final_state(run_dir: Path) -> dict:
    newest = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    return torch.load(newest, weights_only=True)["task"]["agent"]


def test_resumed_run_ends_with_the_uninterrupted_runs_parameters(tmp_path: Path, monkeypatch, capsys) -> None:
    original = PQNTask.train_step

    # The vector env cannot restore its games, so a resumed run starts new ones: the reference run restarts its
    # games at the same step, in a fresh env as `rlgen resume` builds one. Everything else must match exactly.
    def restarting_games(self):
        if self.step == STOP_AT:
            self.env.close()
            self.env, self.obs = make_env(self.config.env, seed=self.config.seed), None
        return original(self)

    monkeypatch.setattr(PQNTask, "train_step", restarting_games)
    assert main(["run", str(CARTPOLE), f"run.root={tmp_path / 'straight'}", *SMALL_CARTPOLE]) == 0
    straight = _only_run(tmp_path, "straight/pqn_cartpole")

    def interrupted(self):
        figures = original(self)
        if self.step == STOP_AT:
            os.kill(os.getpid(), signal.SIGINT)
        return figures

    monkeypatch.setattr(PQNTask, "train_step", interrupted)
    assert main(["run", str(CARTPOLE), f"run.root={tmp_path / 'stopped'}", *SMALL_CARTPOLE]) == 0
    stopped = _only_run(tmp_path, "stopped/pqn_cartpole")
    assert f"Resume with: {rlgen_command()} resume {stopped}" in capsys.readouterr().err
    assert not (stopped / "summary.json").exists()
    monkeypatch.undo()

    assert main(["resume", str(stopped)]) == 0
    assert "resumed from step-000000000640.pt" in (stopped / "log.txt").read_text()
    # Network, optimizer moments, learning-rate schedule and the generator of actions and shuffles.
    _assert_same(_final_state(stopped), _final_state(straight), "agent")
    curves, reference = _scalars(stopped), _scalars(straight)
    for tag in ("losses/td_loss", "charts/episodic_return", "charts/episodic_return_last100", "eval/score_mean"):
        assert curves[tag] == reference[tag], tag


def test_breakout_runs_end_to_end(tmp_path: Path) -> None:
    overrides = ["env.num_envs=4", "train.num_steps=8", "train.num_minibatches=2", "train.total_steps=640",
                 "run.eval_every=640", "run.log_every=64", "eval.episodes=1", "eval.num_envs=1",
                 "env.max_episode_frames=2000", "threads=1"]
    assert main(["run", str(BREAKOUT), f"run.root={tmp_path}", *overrides]) == 0
    run_dir = _only_run(tmp_path, "pqn_breakout")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"eval/score_mean", "eval/human_normalized", "losses/td_loss", "charts/epsilon"} <= set(summary)
    assert np.isfinite(summary["losses/td_loss"])
    assert [step for step, _ in _scalars(run_dir)["losses/td_loss"]] == list(range(64, 641, 64))


@pytest.mark.parametrize("override, message", [
    ("train.num_minibatches=7", r"train.num_minibatches \(7\) must divide the rollout's env.num_envs x "
                                r"train.num_steps = 32 x 64 = 2048 transitions"),
    ("agent.q_lambda=1.5", r"agent.gamma and agent.q_lambda must lie in \[0, 1\], got 0.99 and 1.5"),
    ("train.num_epochs=0", r"train.num_steps, train.num_epochs and train.num_minibatches must be at least 1"),
    ("agent.init=xavier", r"agent.init"),
])
def test_bad_settings_are_refused_in_one_line(tmp_path: Path, capsys, override: str, message: str) -> None:
    assert main(["run", str(CARTPOLE), f"run.root={tmp_path}", override]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert re.search(message, error[0]), error[0]
    assert not (tmp_path / "pqn_cartpole").exists() or not any((tmp_path / "pqn_cartpole").iterdir())
