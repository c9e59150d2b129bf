"""Declared task state: every registered task, killed after a checkpoint and resumed, ends where an uninterrupted
run of it ends. A field that a task's `state_attributes` leaves out changes the resumed run's end, so this test
sees what comparing a checkpoint with itself cannot."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from agents.env_task import EnvTask
from core.checkpoint import load_file
from core.cli import main
from core.experiments import load_components
from core.state import restore_state, save_state
from core.task import TASKS
from envs import make_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generative"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))
from mnist_data import MNIST_ROOT, quick_judge, skip_without_mnist  # noqa: E402  (MNIST where rlgen finds it)
from test_loop import _assert_same  # noqa: E402  (equal state trees, tensor by tensor)

ROOT = Path(__file__).resolve().parents[2]
IMAGE_EVAL = ("threads=1", "run.eval_every=100000", "run.log_every=5")
AIS = ("eval.ais_runs=10", "eval.ais_temperatures=100", "eval.grid_chains=2", "eval.grid_snapshots=2",
       "eval.grid_gibbs_steps=2", "eval.filters=4", "train.batch_size=10")
# task -> (experiment, overrides, the step of the checkpoint the resumed run starts from); each run is a few seconds.
CASES: dict[str, tuple[str, tuple[str, ...], int]] = {
    "classifier": ("xor_mlp", ("train.steps=40", "run.eval_every=10", "run.log_every=5"), 20),
    "perceptron": ("perceptron_xor", ("train.epochs=30",), 15),
    "autoencoder": ("autoencoder_mnist", (*IMAGE_EVAL, "model.hidden=[32]", "train.batch_size=50", "train.epochs=0.05",
                                          "eval.train_images=100", "eval.map_images=100", "eval.map_size=32"), 30),
    "vae": ("vae_mnist", (*IMAGE_EVAL, "train.epochs=0.1", "eval.k=3", "eval.images=40"), 30),
    "rbm": ("rbm_mnist", (*IMAGE_EVAL, *AIS, "model.hidden=12", "train.epochs=0.01"), 25),
    "dbn": ("dbn_mnist", (*IMAGE_EVAL, *AIS, "model.layers=[{hidden: 8, method: pcd}, {hidden: 6, method: pcd}]",
                          "train.epochs=0.005"), 25),
    "gan": ("gan_mnist", (*IMAGE_EVAL, "model.width=8", "train.batch_size=32", "train.epochs=0.02",
                          "eval.samples=100", "eval.quick_samples=100", "eval.grid_images=4"), 19),
    "dqn": ("dqn_cartpole", ("train.total_steps=600", "train.learning_starts=200", "eval.episodes=2",
                             "run.eval_every=100000", "run.log_every=50"), 300),
    "pqn": ("pqn_cartpole", ("env.num_envs=4", "train.num_steps=16", "train.num_minibatches=4", "train.num_epochs=2",
                             "train.total_steps=1280", "run.eval_every=100000", "run.log_every=128",
                             "eval.episodes=2", "eval.num_envs=2"), 640),
}
NEEDS_MNIST = {"autoencoder", "vae", "rbm", "dbn", "gan"}
WALL_CLOCK = ("training_seconds",)  # what a run measures of its own time, not of what it learned


def test_every_registered_task_has_a_case() -> None:
    load_components()
    assert sorted(CASES) == TASKS.names()


def _without_wall_clock(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if key not in WALL_CLOCK}


def _learned(summary_file: Path) -> dict[str, float]:
    summary = json.loads(summary_file.read_text())
    return {tag: value for tag, value in summary.items() if not tag.startswith("perf/") and "seconds" not in tag}


@pytest.mark.parametrize("task", sorted(CASES))
def test_a_resumed_run_ends_as_the_uninterrupted_one(task: str, tmp_path: Path, tmp_path_factory, monkeypatch) -> None:
    experiment, overrides, resume_at = CASES[task]
    arguments = ["run", str(ROOT / "experiments" / f"{experiment}.yaml"), f"run.root={tmp_path}",
                 f"run.checkpoint_every={resume_at}", "run.keep_checkpoints=5", *overrides]
    if task in NEEDS_MNIST:
        skip_without_mnist()
        arguments.append(f"data.root={MNIST_ROOT}")
    if task == "gan":
        arguments.append(f"eval.classifier={quick_judge(tmp_path_factory.getbasetemp())}")
    load_components()
    task_class = TASKS.get(task)
    if issubclass(task_class, EnvTask):
        # The vector env cannot restore its games, so a resumed run starts new ones in a fresh env: the
        # uninterrupted run restarts its games at the same step the same way. Everything else must match.
        original = task_class.train_step

        def restarting_games(self):
            if self.step == resume_at:
                self.env.close()
                self.env, self.obs = make_env(self.config.env, seed=self.config.seed), None
            return original(self)

        monkeypatch.setattr(task_class, "train_step", restarting_games)
    assert main(arguments) == 0
    monkeypatch.undo()
    [run_dir] = (tmp_path / experiment).iterdir()
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*.pt"))
    assert int(checkpoints[0].stem.removeprefix("step-")) == resume_at and len(checkpoints) >= 2
    uninterrupted, summary = load_file(checkpoints[-1])["task"], _learned(run_dir / "summary.json")
    for later in checkpoints[1:]:  # killed right after the checkpoint at resume_at
        later.unlink()
    (run_dir / "summary.json").unlink()
    assert main(["resume", str(run_dir)]) == 0
    _assert_same(_without_wall_clock(load_file(checkpoints[-1])["task"]), _without_wall_clock(uninterrupted), task)
    assert _learned(run_dir / "summary.json") == summary


class _Holder:
    """Stands in for a task: a module, a generator, a tensor and counters, one of them nested."""

    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.net = torch.nn.Linear(3, 2)
        self.generator = torch.Generator().manual_seed(seed)
        self.inner = SimpleNamespace(weights=torch.randn(4, dtype=torch.float64))
        self.count, self.flag = seed, None


def test_declared_state_round_trips_by_the_kind_of_each_value() -> None:
    paths = ("net", "generator", "inner.weights", "count", "flag")
    saved, fresh = _Holder(1), _Holder(2)
    state = save_state(saved, paths)
    assert sorted(state) == ["count", "flag", "generator", "net", "weights"]
    restore_state(fresh, paths, state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.net.parameters(), saved.net.parameters()))
    assert torch.equal(torch.rand(3, generator=fresh.generator), torch.rand(3, generator=saved.generator))
    assert torch.equal(fresh.inner.weights, saved.inner.weights) and fresh.inner.weights.dtype == torch.float64
    assert (fresh.count, fresh.flag) == (1, None)


def test_a_tensor_of_another_shape_or_a_missing_key_is_refused() -> None:
    holder = _Holder(1)
    with pytest.raises(ValueError, match=r"weights: the checkpoint holds shape \(5,\), this run needs \(4,\)"):
        restore_state(holder, ("inner.weights",), {"weights": torch.zeros(5)})
    with pytest.raises(KeyError, match="count"):
        restore_state(holder, ("count",), {})
    with pytest.raises(ValueError, match="share the checkpoint key 'weights'"):
        save_state(holder, ("inner.weights", "weights"))
