"""What a trainable experiment must provide so the driver can train, checkpoint, resume and evaluate it.

A task (the classifier, the DQN, the VAE, ...) owns its models, data and optimizers and knows how
to take one step; everything around the steps (run folder, logging cadence, checkpoints, signals,
progress, summary) is the driver's, written once in `core/driver.py`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from core.config import ExperimentConfig
from core.errors import UserError
from core.precision import PRECISIONS, Precision
from core.registry import Registry
from core.run import Run
from core.state import restore_state, save_state


class Task(ABC):
    """Base class of everything `task: <name>` can pick in an experiment file."""

    Config: ClassVar[type[ExperimentConfig]]
    # Tags shown beside the hyperparameters in TensorBoard's HPARAMS tab.
    summary_metrics: ClassVar[tuple[str, ...]] = ()
    # A tag logged as training goes (a finished game's score, say) that `rlgen report`'s figure averages into a
    # curve over steps: the one curve a run with a single evaluation at its end has.
    training_curve: ClassVar[str | None] = None
    # True when the task splits each batch over torch.distributed ranks (core/distributed.py).
    data_parallel: ClassVar[bool] = False
    # Config keys that only say how long training runs, which `rlgen resume RUN key=value` may change.
    length_keys: ClassVar[tuple[str, ...]] = ()
    # The `precision` values the task accepts: tasks without autograd keep their statistics in float32.
    precisions: ClassVar[tuple[str, ...]] = PRECISIONS
    # Whether `precision: auto` may pick bf16 (where the hardware has it): only once an A/B of the task's
    # experiments in docs/results.md showed bf16 learning as well as fp32.
    auto_bf16: ClassVar[bool] = False
    # Whether the task hands its networks to torch.compile under `compile: true` (where it measured faster).
    compiles: ClassVar[bool] = False
    # The attributes (paths such as `model` or `episodes.recent_returns`) whose values make up a checkpoint:
    # networks, optimizers, batches, generators, tensors and counters, saved and restored by core.state.
    state_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, run: Run, device: torch.device) -> None:
        if config.precision not in self.precisions:
            raise UserError(f"precision: task {config.task!r} takes {', '.join(self.precisions)}, "
                            f"not {config.precision!r}")
        if config.compile and not self.compiles:
            compiling = ", ".join(name for name in TASKS.names() if TASKS.get(name).compiles)
            raise UserError(f"compile: task {config.task!r} does not compile its networks (tasks that do: {compiling})")
        self.config = config
        self.run = run
        self.device = device
        self.step = 0
        self.precision = Precision.for_config(config, device, self.auto_bf16)
        # The resolved values go into the run's config.yaml (see build_task), so the run replays with them.
        config.precision, config.channels_last = self.precision.name, self.precision.channels_last

    @property
    @abstractmethod
    def total_steps(self) -> int:
        """Steps the run trains for, in the task's own unit (updates, env steps, ...)."""

    @abstractmethod
    def train_step(self) -> dict[str, torch.Tensor]:
        """Advance `self.step` by one step's worth and return its figures as device tensors. The driver runs
        it inside `self.precision.autocast()`; network outputs that losses and targets use are cast to float32.

        The driver averages them between log points and writes them under their tags, so no
        figure is read off the device every step.
        """

    @abstractmethod
    def evaluate(self, final: bool = False) -> dict[str, float]:
        """Evaluation metrics keyed by tag (`eval/...`) at the current step.

        `final` is True for the evaluation at the end of training and for `rlgen eval`: tasks whose full
        evaluation is costly (a 5,000-sample likelihood bound, FID on 10,000 samples) run it then and a
        cheaper one during training.
        """

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the declared `state_attributes`."""
        return save_state(self, self.state_attributes)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        restore_state(self, self.state_attributes, state)

    def progress_figures(self) -> dict[str, float]:
        """Extra numbers for the progress line (e.g. the last episode's score)."""
        return {}

    def progress_phases(self) -> dict[str, int]:
        """Stretches of training whose steps cost differently, in order, each with the step it ends at (the last
        at `total_steps`), e.g. a random warm-up then learning; the progress ETA measures each one's pace afresh.
        Empty: one pace throughout."""
        return {}

    def close(self) -> None:
        """Release environments, threads and the like."""


TASKS: Registry[type[Task]] = Registry("task")


def schema_for(task_name: str) -> type[ExperimentConfig]:
    """The config dataclass of a registered task."""
    return TASKS.get(task_name).Config
