"""`rlgen.load`: what a run folder's newest good checkpoint trained, built as `rlgen eval` builds the task but on
a Run that writes nothing (no TensorBoard events, no config.yaml rewrite), restoring only the trained weights:
optimizer states, replay memories and random generators stay behind, so a run trained on a GPU loads on a CPU.
Loading leaves the calling process's random generators and torch's determinism and TF32 switches as it found them.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

import torch

from core.checkpoint import restore_checked
from core.device import resolve_device, rng_state, set_rng_state
from core.driver import CHECKPOINT_FORMAT, build_task
from core.errors import UserError
from core.experiments import load_components
from core.run import Run, load_saved_config
from core.task import Task, schema_for
from generative.dbn import DBN
from generative.gan import Generator, check_model
from generative.metrics.ais import base_rate_biases
from generative.rbm import RBM
from rlgen.models import Agent, Classifier, GANModel, Loaded, RBMModel, Source, VAEModel

RunPath = Union[str, "os.PathLike[str]"]
# Transitions of the replay memory a loaded DQN task is built with beyond its n-step window: enough for any
# frame stack, and small, since the memory is never filled (the run's own may hold gigabytes).
LOAD_REPLAY_SLACK = 64


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """Undo what build_task sets for training in the calling process: the generators' states, torch's
    deterministic algorithms, cuDNN's benchmark and the TF32 switches. (Flushing denormals to zero stays on.)"""
    generators = rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    switches = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        yield
    finally:
        set_rng_state(generators)
        if torch.are_deterministic_algorithms_enabled() != deterministic:
            torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = \
            switches


@contextlib.contextmanager
def _built_task(source: Source, overrides: Sequence[str] = ()) -> Iterator[Task]:
    """The run's task as `rlgen eval` builds it, on `source.device`, eager, in float32 (loaded models compute
    outside the training autocast), on one process, with torch's thread count left alone and `overrides` that
    keep its construction cheap; on a Run that writes nothing into the folder. Closed on leaving."""
    device = f"device={source.device}"
    fixed = [device, "precision=fp32", "compile=false", "threads=0", "distributed.nproc=1", *overrides]
    config = load_saved_config(source.run_dir, fixed, schema_for)
    reader = Run.follower(source.run_dir, config)  # SilentLog, and save_config/write_summary do nothing
    with _process_state_kept():
        task = build_task(reader)
    try:
        yield task
    finally:
        task.close()


def _restore(source: Source, restore: Callable[[], Any]) -> None:
    restore_checked(source.checkpoint, source.config.task, restore)


def _load_agent(source: Source, state: dict[str, Any]) -> Agent:
    # One env instead of the run's many, and for a DQN a replay memory of a few transitions instead of the run's
    # (which can take gigabytes): the networks do not depend on either. PQN's rollout must still divide into
    # its minibatches: one env playing num_minibatches steps does, and never makes fewer updates in the schedule.
    config = source.config
    overrides = ["env.num_envs=1"]
    if config.task == "dqn":
        overrides.append(f"replay.capacity={config.agent.n_step + LOAD_REPLAY_SLACK}")
    else:
        overrides.append(f"train.num_steps={config.train.num_minibatches}")
    with _built_task(source, overrides) as task:
        agent = task.agent
        network = agent.online if config.task == "dqn" else agent.network
        saved = state["task"].get("agent", {})
        _restore(source, lambda: network.load_state_dict(saved["online" if config.task == "dqn" else "network"]))
        env = task.env
        return Agent(source, agent, network.eval(), tuple(env.obs_shape), env.obs_dtype, env.num_actions)


def _load_classifier(source: Source, state: dict[str, Any]) -> Classifier:
    with _built_task(source) as task:
        _restore(source, lambda: task.model.load_state_dict(state["task"]["model"]))
        data = task.data
        return Classifier(source, task.model.eval(), tuple(data.train_inputs.shape[1:]), data.num_classes)


def _load_vae(source: Source, state: dict[str, Any]) -> VAEModel:
    with _built_task(source) as task:  # loads the dataset: the image shape is the data's
        _restore(source, lambda: task.model.load_state_dict(state["task"]["model"]))
        return VAEModel(source, task.model.eval())


def _load_rbm(source: Source, state: dict[str, Any]) -> RBMModel:

    with _built_task(source) as task:  # loads the dataset: AIS starts from its (or the lower layers') means
        layers: list[RBM] = []
        _restore(source, lambda: layers.extend(RBM.from_state_dict(layer, source.device)
                                                for layer in state["task"]["layers"]))
        if not 1 <= len(layers) <= len(task.layer_configs):
            raise UserError(f"{source.checkpoint}: holds {len(layers)} layers; the run's config has "
                            f"{len(task.layer_configs)}")
        # The task's own base rate of its AIS: the mean of what the top layer sees of the training images.
        task.dbn, task.input_means = DBN(layers), {}
        depth = len(layers) - 1
        base = base_rate_biases(task._input_mean(depth), task.layer_configs[depth][0].mean_clip)
        return RBMModel(source, task.dbn, tuple(task.image_shape), base)


def _load_gan(source: Source, state: dict[str, Any]) -> GANModel:
    # Not through build_task: the GAN task needs its judge classifier (trained first where the file is absent)
    # and the dataset, and sampling needs neither. The generator is the task's own network class.

    config = source.config
    check_model(config.model)
    network = Generator(config.model).to(source.device)
    saved = state["task"]
    weights = "ema" if config.train.ema_decay > 0 else "generator"  # the network the task samples with
    _restore(source, lambda: network.load_state_dict(saved[weights]))
    return GANModel(source, network.eval().requires_grad_(False))


LOADERS: dict[str, Callable[[Source, dict[str, Any]], Loaded]] = {
    "dqn": _load_agent,
    "pqn": _load_agent,
    "classifier": _load_classifier,
    "vae": _load_vae,
    "rbm": _load_rbm,
    "dbn": _load_rbm,
    "gan": _load_gan,
}


def load(run_dir: RunPath, device: Union[str, torch.device] = "cpu") -> Loaded:
    """What the run folder's newest good checkpoint trained, on `device` (cpu, cuda, cuda:N or auto): an `Agent`
    (dqn, pqn: `act`, `q_values`), a `Classifier` (`predict`), a `VAEModel` (`sample`, `log_likelihood`,
    `encode`, `decode`), an `RBMModel` (rbm, dbn: `sample`, `log_likelihood`) or a `GANModel` (`sample`). Each
    has the run's `config`, its `step` and `checkpoint`, and the task's torch module(s).

    Writes nothing into the folder. A VAE, RBM or DBN needs its dataset where it trained (the task loads it: the
    image shape and the AIS base rate are the data's); an agent builds one env. A folder that is not a run, a
    run without a checkpoint yet, and a checkpoint that does not fit the run raise `core.errors.UserError`.
    """
    load_components()
    directory = Path(run_dir)
    opened = Run.open(directory, schema_for)
    config = opened.config
    if config.task not in LOADERS:
        raise UserError(f"{directory}: rlgen.load does not know task {config.task!r}; it loads runs of "
                        f"{', '.join(LOADERS)}")
    resolved = resolve_device(str(device))
    found = opened.checkpoints.load_latest(map_location=resolved)
    if found is None:
        raise UserError(f"{directory}: no checkpoint yet (a run saves one every run.checkpoint_every="
                        f"{config.run.checkpoint_every} steps and at its end)")
    path, state = found
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(state.get("task"), dict):
        raise UserError(f"{path}: not an rlgen checkpoint of format {CHECKPOINT_FORMAT}")
    step = int(state.get("driver", {}).get("step", 0))
    return LOADERS[config.task](Source(directory, path, config, step, resolved), state)
