"""The evaluation protocol: human normalization, per-env game quotas on the real ALE, gameplay frames."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.evaluation import EvalConfig, evaluate_policy, human_normalized, log_gameplay, play_games
from core.tensorboard import TensorBoardLog
from envs import EnvConfig


class _RandomAgent:
    """Uniform random actions, through the same `act` interface as the DQN agent."""

    def __init__(self, num_actions: int) -> None:
        self.num_actions = num_actions
        self.generator = torch.Generator().manual_seed(0)

    def act(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        return torch.randint(self.num_actions, (obs.shape[0],), generator=self.generator)


def test_human_normalized_score() -> None:
    assert human_normalized("breakout", 30.5) == pytest.approx(100.0)
    assert human_normalized("breakout", 1.7) == pytest.approx(0.0)
    assert human_normalized("breakout", 16.1) == pytest.approx(50.0)
    assert human_normalized("no_such_game", 10.0) is None


def test_evaluation_plays_exactly_the_asked_games_and_keeps_first_game_frames(tmp_path: Path) -> None:
    env = EnvConfig(kind="atari", id="Breakout", num_envs=2, max_episode_frames=1200)
    config = EvalConfig(episodes=3, epsilon=0.05, num_envs=2, gameplay_frames=100)
    metrics, frames = evaluate_policy(_RandomAgent(4), env, config, seed=3, device=torch.device("cpu"))
    assert metrics["eval/episodes"] == 3.0
    assert 0.0 <= metrics["eval/score_mean"] < 30.0
    assert metrics["eval/human_normalized"] == pytest.approx(human_normalized("breakout", metrics["eval/score_mean"]))
    assert frames is not None and frames.shape == (100, 84, 84) and frames.dtype.name == "uint8"
    log = TensorBoardLog(tmp_path)
    log_gameplay(log, frames, step=7)
    log.close()
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    tags = accumulator.Tags()
    assert "samples/gameplay" in tags["images"] + tags.get("tensors", [])


def test_vector_observations_record_no_frames() -> None:
    env = EnvConfig(kind="gym", id="CartPole-v1", num_envs=2)
    metrics, frames = evaluate_policy(_RandomAgent(2), env, EvalConfig(episodes=2, num_envs=2), 0, torch.device("cpu"))
    assert frames is None and metrics["eval/episodes"] == 2.0 and "eval/human_normalized" not in metrics


def test_rlgen_eval_episodes_flag_plays_that_many_games(tmp_path: Path) -> None:
    from core.cli import main

    cartpole = Path(__file__).resolve().parents[2] / "experiments" / "dqn_cartpole.yaml"
    assert main(["run", str(cartpole), f"run.root={tmp_path}", "train.total_steps=600", "train.learning_starts=200",
                 "run.eval_every=600", "run.checkpoint_every=600"]) == 0
    [run_dir] = (tmp_path / "dqn_cartpole").iterdir()
    assert main(["eval", str(run_dir), "--episodes", "3", "threads=1"]) == 0  # an override after an option
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["eval/episodes"] == 3.0 and result["step"] == 600


def test_the_games_are_the_same_with_their_progress_lines(monkeypatch, caplog) -> None:
    monkeypatch.setattr("core.progress.DEFAULTS.every_s", 0.0)  # a line at every step
    caplog.set_level(logging.INFO, logger="rlgen")
    env, config = EnvConfig(kind="gym", id="CartPole-v1", num_envs=2), EvalConfig(episodes=4, num_envs=2)
    quiet = play_games(_RandomAgent(2), env, config, 5, torch.device("cpu"), progress=None)
    assert caplog.records == []
    shown = play_games(_RandomAgent(2), env, config, 5, torch.device("cpu"))
    assert shown[0] == quiet[0] and len(shown[0]) == 4
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("evaluation games: 0/4 games (0.0%)") and "eta=?" in lines[0]
    assert lines[-1].startswith("evaluation games: 4/4 games in ")
