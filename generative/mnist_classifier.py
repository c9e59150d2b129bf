"""The MNIST judge: an `mnist` dataset and a small `cnn` model for the `classifier` task, and the trained
classifier's export, loading and one-off training for the GAN's Fréchet distance.

The judge file is a plain dict of tensors and values (`model`, `model_config`, `test_accuracy`, `trained_in`),
loadable with `weights_only=True`. When a GAN run names one that does not exist, it is trained once, through
the framework, with `experiments/mnist_classifier.yaml` in a run folder beside the file.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import atomic_save, load_file
from core.classification import DATASETS, MODELS, ClassificationData, ClassifierDataConfig, ClassifierModelConfig
from core.config import load_config
from core.device import rng_state, set_rng_state
from core.driver import Driver, build_task
from core.errors import UserError
from core.experiments import experiments_folder, load_components
from core.nets import make_activation
from core.run import Run
from core.sampling import unit_interval
from core.task import schema_for
from generative.data import DataConfig, load_images

log = logging.getLogger("rlgen")

JUDGE_EXPERIMENT = "mnist_classifier.yaml"


@DATASETS.register("mnist")
def mnist_data(config: ClassifierDataConfig, device: torch.device) -> ClassificationData:
    """MNIST's 60,000 training and 10,000 test digits as float32 grey levels in [0, 1] on the device."""
    data = load_images(DataConfig(name="mnist", root=config.root), device)
    return ClassificationData(unit_interval(data.train), data.train_labels, unit_interval(data.test),
                              data.test_labels, num_classes=10)


class RandomShift(nn.Module):
    """Moves each training image by up to `pixels` pixels in x and in y (zeros fill in); the identity in eval
    mode. Small shifts are the classic MNIST augmentation: without them the CNN overfits below 99.3%."""

    def __init__(self, pixels: int) -> None:
        super().__init__()
        self.pixels = pixels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training or self.pixels == 0:
            return images
        count = images.shape[0]
        theta = torch.eye(2, 3, device=images.device).repeat(count, 1, 1)
        shifts = torch.randint(-self.pixels, self.pixels + 1, (count, 2), device=images.device)
        theta[:, :, 2] = shifts * (2.0 / images.shape[-1])  # affine_grid's coordinates span [-1, 1]
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


class DigitCNN(nn.Module):
    """Conv blocks (3x3 conv, batch norm, activation, 2x2 max pool), then a linear feature layer and the class
    logits. `features` (up to the feature layer's activation) is what the Fréchet distance compares; training
    also shifts the images by up to `shift` pixels and drops features with probability `dropout`."""

    def __init__(self, channels: Sequence[int], feature_width: int, num_classes: int, activation: str = "relu",
                 in_channels: int = 1, size: int = 28, shift: int = 2, dropout: float = 0.25) -> None:
        super().__init__()
        self.shift = RandomShift(shift)
        self.dropout = nn.Dropout(dropout)
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       make_activation(activation), nn.MaxPool2d(2)]
            in_channels, size = width, size // 2
        layers += [nn.Flatten(), nn.Linear(in_channels * size * size, feature_width), make_activation(activation)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(feature_width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, classes) logits."""
        return self.head(self.dropout(self.features(self.shift(images))))


@MODELS.register("cnn")
def cnn_classifier(config: ClassifierModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """`model.hidden` = conv channels of each block, then the feature width: [32, 64, 128] is two blocks and 128
    features."""
    if len(config.hidden) < 2 or len(input_shape) != 3:
        raise UserError(f"model.hidden: cnn needs image inputs and conv channels followed by the feature width "
                        f"(e.g. [32, 64, 128]), got {list(config.hidden)} for inputs of shape {list(input_shape)}")
    if input_shape[1] >> (len(config.hidden) - 1) < 1:
        raise UserError(f"model.hidden: {len(config.hidden) - 1} pooling blocks shrink {input_shape[1]}x"
                        f"{input_shape[2]} images to nothing")
    return DigitCNN(config.hidden[:-1], config.hidden[-1], num_classes, config.activation, input_shape[0],
                    input_shape[1])


def export_judge(model: nn.Module, model_config: ClassifierModelConfig, accuracy: float, run_dir: Path,
                 path: Path) -> None:
    """Write a trained classifier as a judge file, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": model.state_dict(), "model_config": dataclasses.asdict(model_config),
                 "test_accuracy": accuracy, "trained_in": str(run_dir)}, path)


def load_judge(path: Path, device: torch.device) -> DigitCNN:
    """The judge network of a file `export_judge` wrote, in eval mode on `device`."""
    state = load_file(path, map_location=device)
    if not {"model", "model_config"} <= set(state):
        raise UserError(f"{path}: not an MNIST judge file (no model or model_config); delete it to train one")
    config = ClassifierModelConfig(**state["model_config"])
    network = MODELS.get(config.name)(config, (1, 28, 28), 10)
    network.load_state_dict(state["model"])
    return network.to(device).eval()


def train_judge(path: Path, data_root: Optional[str], device: str, threads: int,
                overrides: Sequence[str] = ()) -> float:
    """Train the classifier of `experiments/mnist_classifier.yaml` through the framework in a run folder beside
    `path`, export it to `path` and return its test accuracy. The caller's RNG states are left as they were,
    so a run that builds its judge draws the same numbers as one that finds it."""
    experiment = experiments_folder() / JUDGE_EXPERIMENT
    settings = [f"run.root={path.parent}", f"device={device}", f"threads={threads}",
                f"deterministic={str(torch.are_deterministic_algorithms_enabled()).lower()}"]
    if data_root:
        settings.append(f"data.root={data_root}")
    load_components()  # the classifier task lives in another package, found by name as the CLI finds it
    config = load_config(experiment, [*settings, *overrides], schema_for)
    saved = rng_state()
    run = Run.create(config)
    log.info("MNIST judge %s not found: training it once with %s into %s (a few minutes on a CPU)",
             path, experiment, run.directory)
    try:
        task = build_task(run)
        try:
            complete = Driver(run, task).train(fresh=True)
            accuracy = task.evaluate(final=True)["eval/accuracy"]
        finally:
            task.close()
            run.close()
    finally:
        set_rng_state(saved)
    if not complete:
        raise UserError(f"training the MNIST judge was interrupted; its run is in {run.directory}. "
                        f"Start again to retrain it, or put a judge file at {path}")
    export_judge(task.model, config.model, accuracy, run.directory, path)
    log.info("MNIST judge written to %s (test accuracy %.4f)", path, accuracy)
    return accuracy


def ensure_judge(path: Path, data_root: Optional[str], device: torch.device, threads: int,
                 overrides: Sequence[str] = ()) -> DigitCNN:
    """The judge at `path`, trained first when the file is absent."""
    if not path.is_file():
        train_judge(path, data_root, str(device), threads, overrides)
    return load_judge(path, device)
