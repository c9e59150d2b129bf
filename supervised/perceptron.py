"""Rosenblatt's perceptron (1958) with its own learning rule, as the `perceptron` task.

A linear threshold unit: class 1 where w . [x, 1] > 0 (the appended 1 makes the last weight the bias). Learning
is not gradient descent: each sample on the wrong side of the line, or on it, adds y [x, 1] to w (y = +1 for
class 1, -1 for class 0), times `train.lr`. An epoch presents every training sample once; the run ends after
an epoch without a mistake (the weights are then a fixed point) or after `train.epochs`. On linearly separable
data starting from w = 0 it makes at most (R / margin)^2 mistakes (Novikoff 1962); on XOR it never converges,
since every line misclassifies at least one of the four points (Minsky & Papert 1969).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from core.classification import DATASETS, ClassifierDataConfig
from core.config import ExperimentConfig, RunConfig
from core.errors import UserError
from core.run import Run
from core.scatter import scatter_image
from core.task import TASKS, Task

log = logging.getLogger("rlgen")

# The rule's arithmetic is float64 whatever `precision` says: its tensors hold a handful of numbers, and exact
# dot products keep the side of the line a sample falls on (and so every update) free of rounding.
DTYPE = torch.float64


@dataclass
class PerceptronTrainConfig:
    """How the perceptron learns and for how long."""

    epochs: int = 100  # at most this many passes over the training samples; an epoch without a mistake ends the run
    lr: float = 1.0  # multiple of the input added or subtracted on a mistake (Rosenblatt's rule: 1)
    init_std: float = 1.0  # weights and bias start as seeded N(0, init_std^2) draws; 0 starts at w = 0 (Novikoff)
    shuffle: bool = True  # present the samples in a fresh seeded order each epoch (else in the dataset's order)


@dataclass
class PerceptronConfig(ExperimentConfig):
    """A perceptron experiment: a two-class dataset of the classifier task, and the rule's settings."""

    task: str = "perceptron"
    data: ClassifierDataConfig = field(default_factory=lambda: ClassifierDataConfig(name="and"))
    train: PerceptronTrainConfig = field(default_factory=PerceptronTrainConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(log_every=1, eval_every=1, checkpoint_every=10))


def augment(inputs: torch.Tensor) -> torch.Tensor:
    """(N, d) inputs -> (N, d + 1) with a constant 1 appended, the input of the bias weight."""
    return torch.cat([inputs, torch.ones(inputs.shape[0], 1, dtype=inputs.dtype, device=inputs.device)], dim=1)


class Perceptron:
    """The weights of one linear threshold unit and Rosenblatt's rule; inputs come augmented (see `augment`)
    and targets as +1 or -1."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = weights

    def correct(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Which samples lie strictly on their own side of the line (one on the line counts as a mistake)."""
        return targets * (inputs @ self.weights) > 0

    def epoch(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> torch.Tensor:
        """Present the samples once in the given order, updating after each mistake; the number of mistakes as a
        device tensor. The update is multiplied by 0 or 1 instead of branched on, so no sample leaves the device."""
        mistakes = torch.zeros((), dtype=torch.int64, device=inputs.device)
        for sample, target in zip(inputs, targets):
            wrong = target * (sample @ self.weights) <= 0
            self.weights += (lr * target * wrong) * sample
            mistakes += wrong
        return mistakes


@TASKS.register("perceptron")
class PerceptronTask(Task):
    """Trains one perceptron by Rosenblatt's rule on a two-class dataset; one step is one epoch."""

    Config = PerceptronConfig
    summary_metrics = ("eval/accuracy", "eval/converged", "eval/epochs", "eval/mistakes")
    length_keys = ("train.epochs",)
    precisions = ("auto", "fp32", "tf32")  # the float64 rule computes alike under each; bf16 is refused, not ignored
    state_attributes = ("perceptron.weights", "generator", "epochs_run", "mistakes", "best_accuracy", "converged")

    def __init__(self, config: PerceptronConfig, run: Run, device: torch.device) -> None:
        super().__init__(config, run, device)
        settings = config.train
        if settings.epochs < 1 or not settings.lr > 0 or settings.init_std < 0:
            raise UserError(f"train.epochs must be >= 1, train.lr > 0 and train.init_std >= 0, got "
                            f"{settings.epochs}, {settings.lr} and {settings.init_std}")
        data = DATASETS.get(config.data.name)(config.data, device)
        if data.num_classes != 2:
            raise UserError(f"data.name: a perceptron separates two classes; {config.data.name!r} has "
                            f"{data.num_classes} (two-class datasets: and, or, xor)")
        self.inputs = augment(data.train_inputs.reshape(len(data.train_labels), -1).to(DTYPE))
        self.targets = data.train_labels.to(DTYPE) * 2 - 1
        self.test_inputs = augment(data.test_inputs.reshape(len(data.test_labels), -1).to(DTYPE))
        self.test_targets = data.test_labels.to(DTYPE) * 2 - 1
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        weights = torch.randn(self.inputs.shape[1], generator=self.generator, dtype=DTYPE, device=device)
        self.perceptron = Perceptron(weights * settings.init_std)
        self.epochs_run = 0
        self.mistakes = torch.zeros((), dtype=torch.int64, device=device)
        self.best_accuracy = torch.zeros((), dtype=DTYPE, device=device)
        self.converged = False

    @property
    def total_steps(self) -> int:
        return self.config.train.epochs

    def train_step(self) -> dict[str, torch.Tensor]:
        if self.converged:
            # The last epoch made no mistake, so every further one would change nothing: end the run.
            self.step = self.total_steps
            return {}
        count = len(self.targets)
        order = (torch.randperm(count, generator=self.generator, device=self.device) if self.config.train.shuffle
                 else torch.arange(count, device=self.device))
        mistakes = self.perceptron.epoch(self.inputs[order], self.targets[order], self.config.train.lr)
        self.mistakes += mistakes
        accuracy = self.perceptron.correct(self.inputs, self.targets).to(DTYPE).mean()
        self.best_accuracy = torch.maximum(self.best_accuracy, accuracy)
        self.converged = bool(mistakes == 0)  # the one read off the device per epoch: it decides whether to go on
        self.epochs_run += 1
        self.step += 1
        return {"losses/errors": mistakes.to(DTYPE), "charts/accuracy": accuracy}

    @torch.no_grad()
    def evaluate(self, final: bool = False) -> dict[str, float]:
        correct = self.perceptron.correct(self.test_inputs, self.test_targets)
        metrics = {"eval/accuracy": float(correct.to(DTYPE).mean()), "eval/errors": float((~correct).sum()),
                   "eval/mistakes": float(self.mistakes), "eval/epochs": float(self.epochs_run),
                   "eval/converged": float(self.converged), "eval/best_train_accuracy": float(self.best_accuracy)}
        if self.inputs.shape[1] == 3:
            self.run.tb.image("samples/decision_line", self._decision_line(), self.step)
        if final:
            self._conclude()
        return metrics

    def _decision_line(self) -> torch.Tensor:
        """The training points coloured by class over the half-planes the weights assign to each class."""
        weights = self.perceptron.weights.cpu().numpy()
        points = self.inputs[:, :2].cpu().numpy()
        labels = (self.targets > 0).long().cpu().numpy()
        return scatter_image(points, labels, size=128, radius=5, margin=0.25, outline=True,
                             regions=lambda xy: (xy @ weights[:2] + weights[2] > 0).astype("int64"))

    def _conclude(self) -> None:
        """Say plainly in the log whether the line separates the training set, and what to do when it does not."""
        count, name = len(self.targets), self.config.data.name
        if self.converged:
            log.info("the perceptron learned %s exactly: all %d training points correct after %d epochs and %d "
                     "updates", name, count, self.epochs_run, int(self.mistakes))
            return
        best = round(float(self.best_accuracy) * count)
        found = (f"no line separating {name} in {self.epochs_run} epochs: at best {best} of {count} training points "
                 f"correct after an epoch")
        if name == "xor":
            log.info("the perceptron found %s. No line gets all four right, since XOR is not linearly separable "
                     "(Minsky & Papert 1969); a hidden layer solves it: rlgen run experiments/xor_mlp.yaml", found)
        else:
            log.info("the perceptron found %s: the classes are not linearly separable, or need more epochs "
                     "(train.epochs)", found)
