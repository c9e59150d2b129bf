"""What the image models' tasks (VAE, autoencoder, RBM/DBN, GAN) share around their updates: the images on the
device, their shuffled and binarized minibatches, the length in epochs turned into steps, the test images as
evaluated, and fixed latents for the image grids.
"""
from __future__ import annotations

from typing import Any

import torch

from core import distributed
from core.run import Run
from core.sampling import DeviceBatches
from core.task import Task
from generative.data import evaluation_images, load_images


class ImageTask(Task):
    """A task trained on minibatches of `config.data`'s images for `config.train.epochs` passes over them.

    With `data_parallel` each rank draws its shard of every global batch of `train.batch_size` images.
    Subclasses build their networks and optimizers, and give the steps one epoch takes (`batches_per_step`).
    """

    length_keys = ("train.epochs",)
    # Training batches one step consumes (the GAN's critic steps); the run's steps are epochs * batches / this.
    batches_per_step: int = 1

    def __init__(self, config: Any, run: Run, device: torch.device) -> None:
        super().__init__(config, run, device)
        self.data = load_images(config.data, device)
        self.image_shape = tuple(self.data.train.shape[1:])
        if self.data_parallel:
            self.local_batch, self.shard = distributed.shard_batch_size(config.train.batch_size)
        else:
            self.local_batch, self.shard = config.train.batch_size, (0, 1)
        self.batches = DeviceBatches(self.data.train, self.local_batch, config.data.binarize, config.data.threshold,
                                     seed=config.seed, fixed_seed=config.data.fixed_seed, shard=self.shard)
        self.test_images = evaluation_images(self.data.test, config.data)

    def steps_for(self, epochs: float) -> int:
        """The steps `epochs` passes over the training images take (at least one)."""
        return max(1, round(epochs * (self.batches.batches_per_epoch / self.batches_per_step)))

    @property
    def total_steps(self) -> int:
        return self.steps_for(self.config.train.epochs)

    def draw_fixed_latents(self, count: int, size: int) -> torch.Tensor:
        """`count` standard normal latents drawn from the run's seed: the same grid images at every evaluation."""
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        return torch.randn(count, size, device=self.device, generator=generator)
