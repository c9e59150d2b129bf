"""The evaluation protocol: a separate environment, a small epsilon, whole games, raw scores.

Each evaluation environment plays a fixed quota of games, so long games are not under-counted
the way "the first N games to finish" would under-count them.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from core.images import make_grid
from core.progress import progress_of
from core.tensorboard import TensorBoardLog
from envs import EnvConfig, game_name, make_env

# (random, human) game scores from Mnih et al. 2015, Extended Data Table 2.
RANDOM_AND_HUMAN_SCORES = {
    "breakout": (1.7, 30.5),
    "pong": (-20.7, 9.3),
    "space_invaders": (148.0, 1652.0),
    "seaquest": (68.4, 20182.0),
    "beam_rider": (363.9, 5775.0),
    "enduro": (0.0, 309.6),
    "qbert": (163.9, 13455.0),
    "asterix": (210.0, 8503.0),
}


@dataclass
class EvalConfig:
    """How an agent is evaluated (Mnih et al. 2015: epsilon 0.05, whole games)."""

    episodes: int = 10  # whole games per evaluation
    epsilon: float = 0.05  # exploration while evaluating
    num_envs: int = 8  # evaluation environments stepped together
    gameplay_frames: int = 256  # frames of the first game kept for TensorBoard (pixel envs); 0 = none


def human_normalized(game: str, score: float) -> Optional[float]:
    """100 * (score - random) / (human - random), or None for a game without reference scores."""
    if game not in RANDOM_AND_HUMAN_SCORES:
        return None
    random_score, human_score = RANDOM_AND_HUMAN_SCORES[game]
    return 100.0 * (score - random_score) / (human_score - random_score)


@torch.no_grad()
def play_games(
    agent, env_config: EnvConfig, config: EvalConfig, seed: int, device: torch.device,
    progress: Optional[str] = "evaluation games",
) -> tuple[list[float], Optional[np.ndarray]]:
    """Raw whole-game scores of `config.episodes` games played with epsilon-greedy actions, and the
    newest frames of the first environment's first game, (T, H, W) uint8, for pixel environments.
    `progress` labels the display of a long evaluation (core/progress.py); None shows none."""
    num_envs = max(1, min(config.num_envs, config.episodes))
    env = make_env(dataclasses.replace(env_config, num_envs=num_envs), seed=seed, evaluation=True)
    quota = np.full(num_envs, config.episodes // num_envs)
    quota[: config.episodes % num_envs] += 1
    scores: list[float] = []
    pixels = len(env.obs_shape) == 3
    frames: list[np.ndarray] = []
    recording = pixels and config.gameplay_frames > 0
    try:
        with progress_of(config.episodes, progress, "games") as shown:
            obs = env.reset()
            while quota.sum() > 0:
                if recording:
                    frames.append(obs[0, -1].copy())
                actions = agent.act(torch.as_tensor(obs, device=device), config.epsilon)
                result = env.step(actions.cpu().numpy())
                obs = result.obs
                recording = recording and not result.first[0] and len(frames) < config.gameplay_frames
                counted = len(scores)
                for env_index, score, _ in result.finished:
                    if quota[env_index] > 0:
                        quota[env_index] -= 1
                        scores.append(float(score))
                shown.advance(len(scores) - counted)  # every step, so a line comes even while no game ends
    finally:
        env.close()
    return scores, (np.stack(frames) if frames else None)


def evaluate_policy(
    agent, env_config: EnvConfig, config: EvalConfig, seed: int, device: torch.device
) -> tuple[dict[str, float], Optional[np.ndarray]]:
    """Mean, median and std of the raw score, the human-normalized mean where the game has references,
    and the first game's frames (see `play_games`)."""
    played, frames = play_games(agent, env_config, config, seed + 10_000, device)
    scores = np.asarray(played)
    metrics = {
        "eval/score_mean": float(scores.mean()),
        "eval/score_median": float(np.median(scores)),
        "eval/score_std": float(scores.std()),
        "eval/episodes": float(len(scores)),
    }
    normalized = human_normalized(game_name(env_config), metrics["eval/score_mean"])
    if normalized is not None:
        metrics["eval/human_normalized"] = normalized
    return metrics, frames


def log_gameplay(tb: TensorBoardLog, frames: np.ndarray, step: int) -> None:
    """The frames as a TensorBoard video with the `video` extra (moviepy), else as a grid of 64 of them."""
    if importlib.util.find_spec("moviepy") is not None:
        tb.video("samples/gameplay", torch.from_numpy(frames)[None, :, None], step, fps=15)
        return
    picks = np.linspace(0, len(frames) - 1, num=min(64, len(frames))).astype(int)
    images = torch.from_numpy(frames[picks]).float().div(255).unsqueeze(1)
    tb.image("samples/gameplay", make_grid(images, columns=8), step)
