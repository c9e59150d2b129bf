"""What a classification dataset and a classifier network are, and their registries: the `classifier` task
(supervised/classifier.py) trains what they name, and other packages (the MNIST judge) register and load their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, NamedTuple, Optional

import torch
from torch import nn

from core.registry import Registry


@dataclass
class ClassifierDataConfig:
    """Which dataset to classify."""

    name: str = "xor"  # registered dataset (`rlgen list` shows them)
    root: Optional[str] = None  # folder with the dataset's files, for datasets read from disk


@dataclass
class ClassifierModelConfig:
    """The classifier network; defaults are Rumelhart et al.'s 2-2-1 sigmoid XOR net (two logits here)."""

    name: str = "mlp"  # registered classifier network
    hidden: List[int] = field(default_factory=lambda: [2])  # hidden layer widths
    activation: str = "sigmoid"  # hidden activation (see core.nets.ACTIVATIONS)
    layer_norm: bool = False  # layer norm after each hidden linear layer
    init: str = "default"  # weight initialisation scheme (see core.nets.init_weights)


class ClassificationData(NamedTuple):
    """A labelled dataset held on the training device."""

    train_inputs: torch.Tensor
    train_labels: torch.Tensor
    test_inputs: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int


DATASETS: Registry[Callable[[ClassifierDataConfig, torch.device], ClassificationData]] = Registry("dataset")
MODELS: Registry[Callable[[ClassifierModelConfig, tuple[int, ...], int], nn.Module]] = Registry("classifier model")
