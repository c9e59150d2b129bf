"""`rlgen play`: whole games of a trained run's checkpoint, their scores, and a video that decodes to those games."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
SHORT_DQN = ["train.learning_starts=100", "run.log_every=100", "eval.episodes=1", "eval.num_envs=1"]


def _train(tmp_path: Path, experiment: str, *overrides: str) -> Path:
    """A run of `experiment` trained for a few steps through the CLI; its run folder."""
    root = tmp_path / "runs"
    assert main(["run", str(EXPERIMENTS / f"{experiment}.yaml"), *overrides, f"run.root={root}"]) == 0
    (run_dir,) = root.glob("*/*")
    return run_dir


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("cartpole"), "dqn_cartpole", "train.total_steps=300", "run.eval_every=300",
                  "run.checkpoint_every=300", *SHORT_DQN)


def _played(output: str) -> tuple[list[str], dict]:
    """The per-game lines and the JSON summary (the last line) that `rlgen play` printed."""
    lines = output.strip().splitlines()
    return [line for line in lines if line.startswith("game ")], json.loads(lines[-1])


def _decoded(path: Path) -> tuple[int, tuple[int, int], float]:
    """Frames, (width, height) and frame rate of a video file, read back by ffmpeg."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return sum(1 for _ in reader), tuple(meta["size"]), meta["fps"]


def _needs_video(*modules: str) -> None:
    for module in ("moviepy", "imageio_ffmpeg", *modules):
        pytest.importorskip(module, reason=f"the video extra ({module}) is not installed: pip install 'rlgen[video]'")


def test_video_holds_every_frame_of_both_games(cartpole_run: Path, tmp_path: Path, capsys) -> None:
    _needs_video("pygame")
    video = tmp_path / "videos" / "cartpole.mp4"  # the folder does not exist yet
    capsys.readouterr()
    assert main(["play", str(cartpole_run), "--episodes", "2", "--video", str(video)]) == 0
    games, summary = _played(capsys.readouterr().out)
    assert len(games) == 2 and summary["video"] == str(video)
    assert summary["scores"] == [float(length) for length in summary["lengths"]]  # CartPole: 1 a step
    assert summary["cut"] == [False, False] and summary["epsilon"] == 0.0  # the run's eval.epsilon
    frames, size, fps = _decoded(video)
    assert frames == sum(summary["lengths"]) + 2  # each game shows its first screen and one after each step
    assert size == (600, 400) and fps == 50.0  # CartPole's render_fps
    assert [path.name for path in video.parent.iterdir()] == ["cartpole.mp4"]  # no temporary file left


def _listing(folder: Path) -> list[tuple[Path, int]]:
    return sorted((path.relative_to(folder), path.stat().st_mtime_ns) for path in folder.rglob("*"))


def test_scores_replay_from_a_seed_and_the_run_folder_is_untouched(cartpole_run: Path, capsys) -> None:
    before = _listing(cartpole_run)
    summaries = []
    for _ in range(2):
        capsys.readouterr()
        assert main(["play", str(cartpole_run), "--episodes", "3", "--seed", "5", "eval.epsilon=0.5"]) == 0
        games, summary = _played(capsys.readouterr().out)
        assert len(games) == 3 and summary["video"] is None and summary["epsilon"] == 0.5
        summaries.append(summary)
    assert summaries[0]["scores"] == summaries[1]["scores"]
    assert summaries[0]["score_mean"] == pytest.approx(np.mean(summaries[0]["scores"]))
    assert _listing(cartpole_run) == before


def test_max_steps_cuts_each_game(cartpole_run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["play", str(cartpole_run), "--episodes", "2", "--max-steps", "4"]) == 0
    games, summary = _played(capsys.readouterr().out)
    assert summary["lengths"] == [4, 4] and summary["cut"] == [True, True]
    assert all("cut at --max-steps 4" in line for line in games)


def _one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("rlgen: error: ")
    return lines[0]


def test_a_run_without_games_is_refused(tmp_path: Path, capsys) -> None:
    run_dir = _train(tmp_path, "xor_mlp", "train.steps=10", "run.log_every=10", "run.eval_every=10",
                     "run.checkpoint_every=10")
    capsys.readouterr()
    assert main(["play", str(run_dir), "--video", str(tmp_path / "xor.mp4")]) == 2
    error = _one_line_error(capsys)
    assert "'classifier' run has no games to play" in error and "dqn" in error and "pqn" in error
    assert not (tmp_path / "xor.mp4").exists()


def test_a_run_without_checkpoint_is_refused(cartpole_run: Path, tmp_path: Path, capsys) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(cartpole_run / "config.yaml", fresh / "config.yaml")
    capsys.readouterr()
    assert main(["play", str(fresh)]) == 2
    assert "no checkpoint to play yet" in _one_line_error(capsys)
    assert main(["play", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in _one_line_error(capsys)


@pytest.mark.parametrize("arguments, fragment", [
    (["--video", "games.avi"], "a video ends in .mp4 or .webm"),
    (["--episodes", "0"], "--episodes must be at least 1"),
    (["--fps", "0"], "--fps must be positive"),
])
def test_bad_options_are_refused(cartpole_run: Path, arguments: list[str], fragment: str, capsys) -> None:
    capsys.readouterr()
    assert main(["play", str(cartpole_run), *arguments]) == 2
    assert fragment in _one_line_error(capsys)


def test_a_video_without_the_video_extra_is_refused(cartpole_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "moviepy"
                        else find_spec(name, *rest))
    capsys.readouterr()
    assert main(["play", str(cartpole_run), "--video", str(tmp_path / "out.mp4")]) == 2
    assert "needs the video extra" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_breakout_video_shows_the_colour_screen(tmp_path: Path, capsys) -> None:
    _needs_video()
    run_dir = _train(tmp_path, "dqn_breakout", "train.total_steps=4", "train.learning_starts=1000",
                     "replay.capacity=1000", "env.num_envs=1", "eval.episodes=1", "eval.num_envs=1",
                     "eval.gameplay_frames=0", "device=cpu", "threads=1")
    video = tmp_path / "breakout.mp4"
    capsys.readouterr()
    assert main(["play", str(run_dir), "--max-steps", "40", "--video", str(video)]) == 0
    _, summary = _played(capsys.readouterr().out)
    assert summary["lengths"] == [40] and summary["epsilon"] == 0.05  # the Nature evaluation epsilon
    assert _decoded(video) == (41, (160, 210), 15.0)  # the full screen at the game's speed (60 frames / skip 4)
