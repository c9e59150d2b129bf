"""The DQN loop end to end: CartPole learns; a Breakout run killed with SIGKILL resumes exactly."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from core.checkpoint import load_file
from core.cli import main
from core.device import rng_state
from core.driver import Driver, build_task
from core.experiments import load_components
from core.run import Run
from core.task import schema_for
from core.tensorboard import event_files

ROOT = Path(__file__).resolve().parents[2]


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for path in event_files(run_dir):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("tensor") and value.tensor.float_val and not value.tag.startswith("_hparams_"):
                    found.setdefault(value.tag, []).append((event.step, value.tensor.float_val[0]))
    return found


def _only_run(root: Path, name: str) -> Path:
    [run_dir] = (root / name).iterdir()
    return run_dir


@pytest.mark.slow
def test_cartpole_reaches_475_within_50k_steps(tmp_path: Path) -> None:
    assert main(["run", str(ROOT / "experiments" / "dqn_cartpole.yaml"), f"run.root={tmp_path}"]) == 0
    evaluations = _scalars(_only_run(tmp_path, "dqn_cartpole"))["eval/score_mean"]
    assert max(steps for steps, _ in evaluations) == 50_000
    assert max(score for _, score in evaluations) >= 475, evaluations


def _assert_same(restored: Any, saved: Any, where: str = "") -> None:
    if isinstance(saved, torch.Tensor):
        assert torch.equal(restored.cpu(), saved.cpu()), where
    elif isinstance(saved, dict):
        assert restored.keys() == saved.keys(), where
        for key in saved:
            _assert_same(restored[key], saved[key], f"{where}.{key}")
    elif isinstance(saved, (list, tuple)):
        assert len(restored) == len(saved), where
        for index, (a, b) in enumerate(zip(restored, saved)):
            _assert_same(a, b, f"{where}[{index}]")
    else:
        assert restored == saved, where


BREAKOUT_SMOKE = [
    "train.total_steps=3200", "train.learning_starts=800", "replay.capacity=8000", "env.num_envs=4",
    "run.checkpoint_every=1200", "run.eval_every=100000", "run.log_every=200", "eval.episodes=1",
    "eval.num_envs=1", "env.max_episode_frames=2000", "threads=1",
]


def test_breakout_sigkill_then_resume_restores_everything(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "run", "experiments/dqn_breakout.yaml", f"run.root={tmp_path}",
         *BREAKOUT_SMOKE],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    checkpoint = None
    while checkpoint is None and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        found = sorted(tmp_path.glob("dqn_breakout/*/checkpoints/step-*.pt"))
        checkpoint = found[-1] if found else None
        time.sleep(0.05)
    time.sleep(1.0)
    process.kill()
    process.wait()
    run_dir = checkpoint.parents[1]
    assert not (run_dir / "summary.json").exists()
    saved = load_file(sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1])
    assert saved["driver"]["step"] >= 1200

    load_components()
    # What `rlgen resume` restores is exactly the checkpoint: weights, optimizer, replay, RNG, counters.
    run = Run.open(run_dir, schema_for)
    task = build_task(run)
    driver = Driver(run, task)
    try:
        assert driver.restore()
        restored = task.state_dict()
        memory_state = restored.pop("memory")
        saved_memory = saved["task"].pop("memory")
        _assert_same(restored, saved["task"], "task")
        _assert_same(memory_state, saved_memory, "memory")
        _assert_same(rng_state(), saved["rng"], "rng")
        assert task.step == saved["driver"]["step"]
    finally:
        task.close()
        run.close()

    result = subprocess.run([sys.executable, "-m", "core.cli", "resume", str(run_dir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    curves = _scalars(run_dir)
    for tag in ("charts/episodic_return", "charts/epsilon", "losses/td_loss", "perf/sps", "eval/score_mean"):
        steps = [step for step, _ in curves[tag]]
        assert len(steps) == len(set(steps)), tag
    assert [step for step, _ in curves["losses/td_loss"]] == list(range(800, 3201, 200))
