"""Supervised classification task: the XOR, AND and OR truth tables here, and any dataset or model other packages
register.

XOR is the pipeline's smallest end-to-end experiment: a single-layer perceptron cannot solve it,
a two-layer MLP can (Rumelhart, Hinton & Williams 1986), and it trains in a second on a CPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from core.classification import DATASETS, MODELS, ClassificationData, ClassifierDataConfig, ClassifierModelConfig
from core.config import ExperimentConfig, RunConfig
from core.errors import UserError
from core.nets import MLP, init_weights
from core.optim import OptimConfig, Optimizer
from core.run import Run
from core.sampling import ShuffledBatches
from core.task import TASKS, Task


@dataclass
class ClassifierTrainConfig:
    """How long and on what batches to train."""

    steps: int = 2000  # optimizer updates
    batch_size: int = 0  # examples per update; 0 = the whole training set
    eval_batch_size: int = 10000  # examples per forward pass when evaluating
    # Test accuracy whose first evaluation at or above it reports eval/steps_to_target and eval/seconds_to_target
    # (resolution: run.eval_every); null: none.
    target_accuracy: Optional[float] = None


@dataclass
class ClassifierConfig(ExperimentConfig):
    """A classifier experiment: data, network, optimizer and training length."""

    task: str = "classifier"
    data: ClassifierDataConfig = field(default_factory=ClassifierDataConfig)
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="sgd", lr=0.5, momentum=0.9))
    train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(log_every=50, eval_every=500, checkpoint_every=500))


def truth_table(outputs: list[int], device: torch.device) -> ClassificationData:
    """A two-input Boolean function as four labelled points (0, 0), (0, 1), (1, 0), (1, 1); the test set is the
    same four points (there are no others)."""
    inputs = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], device=device)
    labels = torch.tensor(outputs, device=device)
    return ClassificationData(inputs, labels, inputs, labels, num_classes=2)


@DATASETS.register("xor")
def xor_data(config: ClassifierDataConfig, device: torch.device) -> ClassificationData:
    """XOR: not linearly separable (Minsky & Papert 1969), so it needs a hidden layer."""
    return truth_table([0, 1, 1, 0], device)


@DATASETS.register("and")
def and_data(config: ClassifierDataConfig, device: torch.device) -> ClassificationData:
    """AND: linearly separable, so a single perceptron learns it."""
    return truth_table([0, 0, 0, 1], device)


@DATASETS.register("or")
def or_data(config: ClassifierDataConfig, device: torch.device) -> ClassificationData:
    """OR: linearly separable, so a single perceptron learns it."""
    return truth_table([0, 1, 1, 1], device)


@MODELS.register("mlp")
def mlp_classifier(config: ClassifierModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """An MLP over the flattened input, one logit per class."""
    features = 1
    for size in input_shape:
        features *= size
    net = MLP(features, config.hidden, num_classes, activation=config.activation, layer_norm=config.layer_norm)
    return nn.Sequential(nn.Flatten(), net)


@TASKS.register("classifier")
class ClassifierTask(Task):
    """Cross-entropy training of a classifier on minibatches drawn from a device-side permutation."""

    Config = ClassifierConfig
    summary_metrics = ("eval/accuracy", "eval/loss")
    length_keys = ("train.steps",)
    state_attributes = ("model", "optimizer", "batches", "training_seconds", "reached_target")

    def __init__(self, config: ClassifierConfig, run: Run, device: torch.device) -> None:
        super().__init__(config, run, device)
        if config.train.steps < 1 or config.train.batch_size < 0:
            raise UserError("train.steps must be >= 1 and train.batch_size >= 0 (0 = the whole training set)")
        if config.train.target_accuracy is not None and not 0 < config.train.target_accuracy <= 1:
            raise UserError(f"train.target_accuracy must lie in (0, 1] or be null, got {config.train.target_accuracy}")
        self.data = DATASETS.get(config.data.name)(config.data, device)
        input_shape = tuple(self.data.train_inputs.shape[1:])
        model = MODELS.get(config.model.name)(config.model, input_shape, self.data.num_classes)
        self.model = self.precision.prepare(init_weights(model, config.model.init).to(device))
        self.optimizer = Optimizer(config.optim, self.model.parameters(), total_steps=config.train.steps)
        size = len(self.data.train_labels)
        self.batches = ShuffledBatches(size, min(config.train.batch_size or size, size), device, seed=config.seed)
        # Seconds spent training (evaluations excluded) and the (step, seconds) of the first evaluation that
        # reached train.target_accuracy: how fast an optimizer gets there, comparable across runs and resumes.
        self.training_seconds = 0.0
        self.reached_target: Optional[list[float]] = None
        self._clock = time.perf_counter()

    @property
    def total_steps(self) -> int:
        return self.config.train.steps

    def train_step(self) -> dict[str, torch.Tensor]:
        indices = self.batches.next_indices()
        logits = self.model(self.precision.images(self.data.train_inputs[indices])).float()
        loss = F.cross_entropy(logits, self.data.train_labels[indices])
        figures = self.optimizer.step(loss)
        self.step += 1
        return {"losses/cross_entropy": loss.detach(), **figures}

    @torch.no_grad()
    def evaluate(self, final: bool = False) -> dict[str, float]:
        self.training_seconds += time.perf_counter() - self._clock
        self.model.eval()
        correct = torch.zeros((), device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        inputs, labels = self.data.test_inputs, self.data.test_labels
        for start in range(0, len(labels), self.config.train.eval_batch_size):
            end = start + self.config.train.eval_batch_size
            logits = self.model(inputs[start:end])
            loss_sum += F.cross_entropy(logits, labels[start:end], reduction="sum")
            correct += (logits.argmax(dim=1) == labels[start:end]).sum()
        self.model.train()
        metrics = {"eval/accuracy": float(correct) / len(labels), "eval/loss": float(loss_sum) / len(labels)}
        target = self.config.train.target_accuracy
        if target is not None and self.reached_target is None and metrics["eval/accuracy"] >= target:
            self.reached_target = [float(self.step), self.training_seconds]
        if self.reached_target is not None:
            metrics["eval/steps_to_target"], metrics["eval/seconds_to_target"] = self.reached_target
        self._clock = time.perf_counter()
        return metrics

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._clock = time.perf_counter()
