"""The `autoencoder` task: reconstruction training on device-resident images, its errors on the training and test
images, and what the codes look like.

One step is one update on one minibatch, minimising the Bernoulli cross-entropy (or the squared error) between
images and their reconstructions. Every evaluation reports both errors on the test images and on the first
`eval.train_images` training images (the gap is what overfitting looks like), and logs three images under
`samples/`: test digits beside their reconstructions, the code map (the test digits' codes coloured by class;
codes of more than two dimensions projected onto their first two principal axes), and with a 2-d code the
manifold, the decoder's images of a grid of codes spanning the map.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.config import ExperimentConfig, RunConfig
from core.errors import UserError
from core.images import make_grid
from core.optim import OptimConfig, Optimizer
from core.run import Run
from core.scatter import scatter_image
from core.task import TASKS
from generative.autoencoder import Autoencoder, AutoencoderModelConfig
from generative.data import DataConfig, evaluation_images
from generative.image_task import ImageTask

LOSSES = ("bce", "mse")
MAP_CLIP = 0.005  # share of codes on each side left out of the map's view, so a few outliers do not shrink it
MANIFOLD_SIDE = 16  # codes per side of the manifold's grid


@dataclass
class AutoencoderTrainConfig:
    """Length and loss of training."""

    epochs: float = 20.0  # passes over the training images (the run's steps = epochs * batches per epoch)
    batch_size: int = 100  # images per update
    loss: str = "bce"  # bce (Bernoulli cross-entropy per image) | mse (squared error summed over an image's pixels)


@dataclass
class AutoencoderEvalConfig:
    """The reconstruction errors and images of each evaluation."""

    train_images: int = 10000  # training images whose errors are reported beside the test set's
    batch_size: int = 1000  # images per forward pass
    grid_images: int = 32  # test digits shown beside their reconstructions
    map_images: int = 10000  # test digits whose codes the code map shows
    map_size: int = 256  # side of the code map, in pixels


@dataclass
class AutoencoderConfig(ExperimentConfig):
    """An autoencoder experiment: data, model, optimizer, training and evaluation."""

    task: str = "autoencoder"
    data: DataConfig = field(default_factory=lambda: DataConfig(binarize="none"))  # grey levels, as H&S 2006
    model: AutoencoderModelConfig = field(default_factory=AutoencoderModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-3))
    train: AutoencoderTrainConfig = field(default_factory=AutoencoderTrainConfig)
    eval: AutoencoderEvalConfig = field(default_factory=AutoencoderEvalConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(log_every=100, eval_every=3000, checkpoint_every=3000))


def _check(config: AutoencoderConfig) -> None:
    if config.train.loss not in LOSSES:
        raise UserError(f"train.loss: unknown {config.train.loss!r}; valid: {', '.join(LOSSES)}")
    if config.train.epochs <= 0:
        raise UserError(f"train.epochs must be > 0, got {config.train.epochs}")
    settings = config.eval
    if min(settings.train_images, settings.batch_size, settings.grid_images, settings.map_images) < 1 or \
            settings.map_size < 16:
        raise UserError("eval: train_images, batch_size, grid_images and map_images must be >= 1, map_size >= 16")


def principal_plane(codes: torch.Tensor) -> torch.Tensor:
    """(N, d) codes -> (N, 2): their coordinates along their first two principal axes (PCA)."""
    centred = codes - codes.mean(dim=0)
    _, _, axes = torch.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:2].T


@TASKS.register("autoencoder")
class AutoencoderTask(ImageTask):
    """Trains an autoencoder by reconstruction and shows its reconstructions and codes."""

    Config = AutoencoderConfig
    summary_metrics = ("eval/test_bce", "eval/test_mse", "eval/train_bce", "eval/train_mse")
    state_attributes = ("model", "optimizer", "batches")

    def __init__(self, config: AutoencoderConfig, run: Run, device: torch.device) -> None:
        _check(config)
        super().__init__(config, run, device)
        self.model = self.precision.prepare(Autoencoder(config.model, self.image_shape).to(device))
        self.optimizer = Optimizer(config.optim, self.model.parameters(), total_steps=self.total_steps)
        self.train_images = evaluation_images(self.data.train[:config.eval.train_images], config.data)

    def train_step(self) -> dict[str, torch.Tensor]:
        errors = self.model.errors(self.batches.next())
        if self.config.train.loss == "bce":
            loss = errors.cross_entropy.mean()
        else:
            loss = errors.squared_error.mean() * self.model.pixels
        optimizer_figures = self.optimizer.step(loss)
        self.step += 1
        return {"losses/bce": errors.cross_entropy.detach().mean(), "losses/mse": errors.squared_error.detach().mean(),
                "charts/epoch": float(self.batches.epoch), **optimizer_figures}

    @torch.no_grad()
    def evaluate(self, final: bool = False) -> dict[str, float]:
        self.model.eval()
        metrics = {}
        for split, images in (("test", self.test_images), ("train", self.train_images)):
            metrics[f"eval/{split}_bce"], metrics[f"eval/{split}_mse"] = self._mean_errors(images)
        self._log_images()
        self.model.train()
        return metrics

    def _mean_errors(self, images: torch.Tensor) -> tuple[float, float]:
        """Cross-entropy (nats per image) and squared error (per pixel) averaged over `images`, in chunks."""
        cross_entropy = torch.zeros((), device=self.device)
        squared_error = torch.zeros((), device=self.device)
        for chunk in images.split(self.config.eval.batch_size):
            errors = self.model.errors(chunk)
            cross_entropy += errors.cross_entropy.sum()
            squared_error += errors.squared_error.sum()
        return float(cross_entropy) / len(images), float(squared_error) / len(images)

    def _log_images(self) -> None:
        """Test digits beside their reconstructions, the code map and, for 2-d codes, the manifold."""
        tb, model, settings = self.run.tb, self.model, self.config.eval
        inputs = self.test_images[:settings.grid_images]
        pairs = torch.stack([inputs, model.images(model.encode(inputs))], dim=1).flatten(0, 1)
        tb.image("samples/reconstructions", make_grid(pairs), self.step)
        shown = self.test_images[:settings.map_images]
        codes = torch.cat([model.encode(chunk) for chunk in shown.split(settings.batch_size)])
        points = codes if codes.shape[1] == 2 else principal_plane(codes)
        labels = self.data.test_labels[:len(shown)]
        tb.image("samples/code_map", scatter_image(points.cpu().numpy(), labels.cpu().numpy(), size=settings.map_size,
                                                   clip=MAP_CLIP), self.step)
        if codes.shape[1] == 2:
            low, high = torch.quantile(codes, torch.tensor([MAP_CLIP, 1 - MAP_CLIP], device=self.device), dim=0)
            xs = torch.linspace(float(low[0]), float(high[0]), MANIFOLD_SIDE, device=self.device)
            ys = torch.linspace(float(high[1]), float(low[1]), MANIFOLD_SIDE, device=self.device)  # top row: largest
            grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
            tb.image("samples/code_manifold", make_grid(model.images(grid), columns=MANIFOLD_SIDE, padding=0),
                     self.step)
