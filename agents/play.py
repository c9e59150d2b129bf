"""`rlgen play RUN`: whole games of a run's trained agent, their scores, and optionally a video of them (what
CleanRL's `capture_video` and the RL Zoo's `record_video` give).

The agent comes from the run's newest good checkpoint and is built alone, without the training envs or the replay
memory. It plays by the run's evaluation settings, as `rlgen eval` does: one env under the evaluation protocol
(Atari: a game lasts all its lives), actions epsilon-greedy with `eval.epsilon` (0.05 on Atari as in Mnih et al.
2015; `eval.epsilon=0` plays greedily). A video has one frame per agent step: on Atari the emulator's 210x160
colour screen (max-pooled over the step's last two frames, as the agent sees it) at 15 frames a second, the
game's own speed; on classic control Gymnasium's drawing at the env's render_fps (50 for CartPole). Nothing is
written into the run folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from agents.env_task import EnvTask
from core.checkpoint import CheckpointManager, restore_checked
from core.device import resolve_device, set_threads
from core.driver import CHECKPOINT_FORMAT
from core.errors import UserError
from core.precision import Precision
from core.run import CONFIG_FILE, load_saved_config
from core.task import TASKS, schema_for
from core.video import VideoWriter, check_video_path
from envs import VectorEnv, make_env


@dataclass
class PlayedGame:
    """One game as `play` reports it."""

    score: float  # the raw game score (unclipped)
    length: int  # agent steps
    cut: bool  # stopped by max_steps before the game ended


def playable_tasks() -> list[str]:
    return [name for name in TASKS.names() if issubclass(TASKS.get(name), EnvTask)]


def load_play_config(directory: Path, overrides: list[str]) -> Any:
    """The saved config of the run in `directory` with `overrides` (`eval.epsilon=0`, `device=cpu`); a UserError
    for a folder that is no run, or a run of a task without games."""
    if not (directory / CONFIG_FILE).is_file():
        raise UserError(f"{directory}: not a run directory (no {CONFIG_FILE})")
    config = load_saved_config(directory, overrides, schema_for)
    if not issubclass(TASKS.get(config.task), EnvTask):
        raise UserError(f"{directory}: a {config.task!r} run has no games to play; "
                        f"rlgen play plays runs of {', '.join(playable_tasks())}")
    return config


def restore_agent(directory: Path, config: Any, env: VectorEnv, device: torch.device) -> tuple[Any, Path, int]:
    """The run's agent for `env`'s observations and actions, from its newest good checkpoint: the agent, the
    checkpoint's path and the training step it was written at."""
    loaded = CheckpointManager(directory / "checkpoints").load_latest(map_location=device)
    if loaded is None:
        raise UserError(f"{directory}: no checkpoint to play yet")
    path, state = loaded
    task_state = state.get("task")
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(task_state, dict) or "agent" not in task_state:
        raise UserError(f"{path}: not an rlgen checkpoint of an agent (format {CHECKPOINT_FORMAT})")
    task_class = TASKS.get(config.task)
    # Compiling pays off over millions of updates, not over the forward passes of a few games.
    precision = dataclasses.replace(Precision.for_config(config, device, task_class.auto_bf16), compile_networks=False)
    agent = task_class.Agent(config.agent, config.optim, tuple(env.obs_shape), env.num_actions, 1, device,
                             seed=config.seed, precision=precision)
    restore_checked(path, config.task, lambda: agent.load_state_dict(task_state["agent"]))
    return agent, path, int(state["driver"]["step"])


def play(agent: Any, env: VectorEnv, episodes: int, epsilon: float, device: torch.device,
         max_steps: Optional[int] = None, on_frame: Optional[Callable[[np.ndarray], None]] = None,
         on_game: Optional[Callable[[PlayedGame], None]] = None) -> list[PlayedGame]:
    """Play `episodes` whole games one after another in the first env of `env` (made with `render=True` when
    `on_frame` is given) and return them. `on_frame` receives each game's first screen and the screen after each
    of its steps, so a game of L steps shows L + 1 frames; `on_game` hears of each game as it ends. A game still
    going after `max_steps` steps is cut there and a new one started."""
    games: list[PlayedGame] = []
    score, length = 0.0, 0

    def show() -> None:
        if on_frame is not None:
            on_frame(env.render()[0])

    def finish(cut: bool) -> None:
        nonlocal score, length
        games.append(PlayedGame(score, length, cut))
        if on_game is not None:
            on_game(games[-1])
        score, length = 0.0, 0

    obs = env.reset()
    show()
    while len(games) < episodes:
        actions = agent.act(torch.as_tensor(obs, device=device), epsilon)
        result = env.step(actions.cpu().numpy())
        obs = result.obs
        if result.first[0]:  # the game ended on the step before; this one only started the next
            finish(cut=False)
            if len(games) < episodes:
                show()
            continue
        score += float(result.reward[0])
        length += 1
        show()
        if max_steps is not None and length >= max_steps:
            finish(cut=True)
            if len(games) < episodes:
                obs = env.reset()
                show()
    return games


def command_play(args: argparse.Namespace) -> int:
    directory = Path(args.run_dir)
    for option, value in (("--episodes", args.episodes), ("--max-steps", args.max_steps)):
        if value is not None and value < 1:
            raise UserError(f"{option} must be at least 1, got {value}")
    if args.fps is not None and not args.fps > 0:
        raise UserError(f"--fps must be positive, got {args.fps}")
    video = Path(args.video) if args.video else None
    if video is not None:
        check_video_path(video, "rlgen play --video")
    config = load_play_config(directory, list(args.overrides))
    seed = config.seed if args.seed is None else args.seed
    epsilon = config.eval.epsilon
    device = resolve_device(config.device)
    set_threads(config.threads)
    played: list[PlayedGame] = []

    def report(game: PlayedGame) -> None:
        played.append(game)
        cut = f" (cut at --max-steps {args.max_steps})" if game.cut else ""
        print(f"game {len(played)}: score {game.score:g}, {game.length} steps{cut}", flush=True)

    with make_env(dataclasses.replace(config.env, num_envs=1), seed, evaluation=True, render=video is not None) as env:
        agent, checkpoint, step = restore_agent(directory, config, env, device)
        agent.generator.manual_seed(seed)  # the epsilon draws: a seed replays the same games
        print(f"playing {args.episodes} game(s) of {config.env.id} with {checkpoint.name} (step {step}), "
              f"epsilon {epsilon:g}, seed {seed}", flush=True)
        if video is None:
            play(agent, env, args.episodes, epsilon, device, args.max_steps, on_game=report)
        else:
            fps = args.fps or env.steps_per_second
            with VideoWriter(video, fps) as writer:
                play(agent, env, args.episodes, epsilon, device, args.max_steps, on_frame=writer.add, on_game=report)
            width, height = writer.size
            print(f"video: {video} ({writer.frames} frames, {width}x{height}, {fps:g} fps)", flush=True)
    scores = [game.score for game in played]
    print(json.dumps({
        "run": str(directory), "checkpoint": checkpoint.name, "step": step, "env": config.env.id, "epsilon": epsilon,
        "seed": seed, "scores": scores, "lengths": [game.length for game in played],
        "cut": [game.cut for game in played], "score_mean": float(np.mean(scores)),
        "video": str(video) if video else None,
    }))
    return 0


def add_play_parser(commands: Any) -> None:
    """Register `rlgen play` on the CLI's subcommands (kept here so cli.py needs one line)."""
    parser = commands.add_parser(
        "play", help="play whole games with a run's newest checkpoint; print the scores, optionally record a video",
        description="Play whole games with the newest good checkpoint of a dqn or pqn run, by the run's evaluation "
                    "settings (eval.epsilon, the evaluation protocol), print each game's score and a JSON summary, "
                    "and with --video record them one after another (Atari: the full colour screen at 15 fps, "
                    "the game's speed; classic control: Gymnasium's drawing). Writes nothing into the run folder.")
    parser.add_argument("run_dir", help="the run folder (runs/<experiment>/<timestamp>)")
    parser.add_argument("overrides", nargs="*",
                        help="dotted overrides of the saved config: eval.epsilon=0 (greedy), device=cpu")
    parser.add_argument("--episodes", type=int, default=1, help="whole games to play (default %(default)s)")
    parser.add_argument("--video", metavar="PATH", help="record the games into this .mp4 (or .webm) file; "
                                                        "needs the video extra: pip install 'rlgen[video]'")
    parser.add_argument("--fps", type=float, help="frames per second of the video (default: the game's real speed, "
                                                  "15 on Atari at frame skip 4, 50 for CartPole)")
    parser.add_argument("--seed", type=int, help="seed of the games and the epsilon draws (default: the run's seed)")
    parser.add_argument("--max-steps", type=int, help="cut a game after this many agent steps (default: the env's "
                                                      "own limit, 27,000 on Atari, 500 for CartPole)")
    parser.set_defaults(handler=command_play)
