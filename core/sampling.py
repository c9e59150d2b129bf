"""Minibatches of a dataset held whole on the training device, and persistent sampling chains.

MNIST as uint8 is 47 MB, so the whole training set lives on the device and an epoch is one device-side
permutation: each batch is a slice of it, gathered, converted to float and binarized on the device,
with no DataLoader workers and no per-item Python. Binarization follows the generative-model papers:

- `dynamic`: a fresh Bernoulli draw with the grey level as probability every time a batch is drawn
  (Burda et al. 2016), so the model never sees the same binary image twice;
- `fixed`: one Bernoulli draw of the whole dataset with a fixed seed, reused every epoch;
- `threshold`: grey level > threshold;
- `none`: grey levels in [0, 1].
"""
from __future__ import annotations

import math
from typing import Any

import torch

from core.errors import UserError

BINARIZATIONS = ("dynamic", "fixed", "threshold", "none")


def check_binarization(mode: str, threshold: float) -> None:
    """Refuse an unknown mode or a threshold outside (0, 1) with one clear message."""
    if mode not in BINARIZATIONS:
        raise UserError(f"data.binarize: unknown mode {mode!r}; valid: {', '.join(BINARIZATIONS)}")
    if not 0.0 < threshold < 1.0:
        raise UserError(f"data.threshold must lie in (0, 1), got {threshold}")


def unit_interval(images: torch.Tensor) -> torch.Tensor:
    """uint8 grey levels -> float32 in [0, 1]."""
    return images.to(torch.float32).div_(255.0)


class BernoulliDraws:
    """Bernoulli draws of uint8 images, each pixel on with probability grey / 255, as float32 0/1.

    A pixel is on when a 16-bit uniform integer u satisfies 255 u < 65536 grey: the probability is within
    2^-16 of grey / 255 and exactly 0 and 1 at the ends. Four such uniforms come from one 64-bit draw and
    the test takes three passes in float32, which makes a batch's draw about 5x faster than
    `torch.bernoulli` on a CPU. The work buffers are kept between draws of one shape: fresh 400 KB
    intermediates cost page faults on every batch on a CPU and made the draw 3x slower.
    """

    def __init__(self) -> None:
        self._words = self._work = torch.empty(0)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self._work.shape != images.shape or self._work.device != images.device:
            self._words = torch.empty((images.numel() + 3) // 4, dtype=torch.int64, device=images.device)
            self._work = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        self._words.random_(-(2**63), 2**63 - 1, generator=generator)
        signed = self._words.view(torch.int16)[:images.numel()].view(images.shape)  # u - 32768
        # 255 u < 65536 grey  <=>  255 (u - 32768) - 65536 grey < -255 * 32768. Every value above -2^24 is
        # exact in float32 and rounding below it cannot cross the threshold, so the test is exact.
        work = torch.mul(signed, 255.0, out=self._work).sub_(images, alpha=65536)
        return torch.lt(work, -255.0 * 32768, out=torch.empty_like(work))


def bernoulli_draw(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One binary image per uint8 image (float32 0/1), by `BernoulliDraws`' rule, without kept buffers."""
    return BernoulliDraws()(images, generator)


def fixed_binarization(images: torch.Tensor, seed: int) -> torch.Tensor:
    """The one Bernoulli draw of `images` that `seed` fixes, as uint8 0/1 (same device)."""
    generator = torch.Generator(device=images.device).manual_seed(seed)
    return bernoulli_draw(images, generator).to(torch.uint8)


def prepare(images: torch.Tensor, mode: str, threshold: float, generator: torch.Generator) -> torch.Tensor:
    """uint8 images (already drawn once for `fixed`) -> the float32 tensor a model trains on."""
    if mode == "dynamic":
        return bernoulli_draw(images, generator)
    if mode == "fixed":
        return images.to(torch.float32)
    if mode == "threshold":
        # grey / 255 > threshold, in integers: grey > floor(255 threshold) (0.5: on from grey 128, as PyDeep's x >= 0.5)
        return (images > math.floor(threshold * 255)).to(torch.float32)
    return unit_interval(images)


class ShuffledBatches:
    """The indices of shuffled minibatches of a dataset of `size` entries, epoch after epoch, resumable exactly.

    Every epoch is a permutation drawn on the device; a batch is `batch_size` consecutive entries of it
    (the last partial batch of an epoch is dropped, so every batch has the same size). With `shard=(r,
    n)` the batch is the r-th of n equal parts of a global batch of `batch_size * n` entries, so n data
    parallel processes that share the seed draw disjoint parts of the same permutation.
    """

    def __init__(self, size: int, batch_size: int, device: torch.device, seed: int = 0,
                 shard: tuple[int, int] = (0, 1)) -> None:
        rank, world = shard
        global_batch = batch_size * world
        if batch_size < 1 or global_batch > size:
            raise UserError(
                f"train.batch_size must lie in [1, {size // world}] for {size} examples"
                f"{f' over {world} processes' if world > 1 else ''}, got {batch_size}"
            )
        self.size = size
        self.batch_size = batch_size
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.batches_per_epoch = size // global_batch
        self.global_batch = global_batch
        self.shard_slice = slice(rank * batch_size, (rank + 1) * batch_size)
        self.epoch = 0
        self.position = 0
        self.order = self._permutation()

    def _permutation(self) -> torch.Tensor:
        return torch.randperm(self.size, device=self.device, generator=self.generator)

    def next_global_indices(self) -> torch.Tensor:
        """The dataset indices of the next global batch (all shards), starting a new epoch when due."""
        if self.position == self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self.order = self._permutation()
        start = self.position * self.global_batch
        self.position += 1
        return self.order[start:start + self.global_batch]

    def next_indices(self) -> torch.Tensor:
        """The dataset indices of this shard's part of the next batch."""
        return self.next_global_indices()[self.shard_slice]

    @property
    def epochs_done(self) -> float:
        """Epochs completed, fractional: the `charts/epoch` of the tasks that count in epochs."""
        return self.epoch + self.position / self.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        """Where in which epoch, the epoch's permutation and the generator: enough to continue exactly."""
        return {"epoch": self.epoch, "position": self.position, "order": self.order,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.position = state["position"]
        self.order = state["order"].to(self.device)
        self.generator.set_state(state["generator"].cpu())


class DeviceBatches(ShuffledBatches):
    """Shuffled minibatches of device-resident uint8 images as float32, binarized as `mode` says: the batching of
    `ShuffledBatches` and the per-batch transform of `prepare`, both drawing on the one generator."""

    def __init__(
        self, images: torch.Tensor, batch_size: int, mode: str = "dynamic", threshold: float = 0.5,
        seed: int = 0, fixed_seed: int = 0, shard: tuple[int, int] = (0, 1),
    ) -> None:
        check_binarization(mode, threshold)
        super().__init__(images.shape[0], batch_size, images.device, seed, shard)
        self.mode = mode
        self.threshold = threshold
        self.images = fixed_binarization(images, fixed_seed) if mode == "fixed" else images
        self._draws = BernoulliDraws()

    def next(self) -> torch.Tensor:
        """The next batch (this shard's part) as float32, binarized as the mode says.

        Dynamic binarization draws the random numbers of the whole global batch and keeps this shard's
        part, so n processes see exactly the images one process with the global batch would."""
        indices = self.next_global_indices()
        if self.mode == "dynamic":
            drawn = self._draws(self.images.index_select(0, indices), self.generator)
            return drawn if self.global_batch == self.batch_size else drawn[self.shard_slice]
        return prepare(self.images.index_select(0, indices[self.shard_slice]), self.mode, self.threshold,
                       self.generator)


class PersistentChains:
    """The states of persistent Markov chains (PCD's fantasy particles) kept on the device between updates
    and saved with the run, so a resumed run continues the same chains."""

    def __init__(self, states: torch.Tensor) -> None:
        self.states = states

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"states": self.states}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["states"].shape != self.states.shape:
            raise UserError(
                f"persistent chains: the checkpoint holds {tuple(state['states'].shape)}, this run expects "
                f"{tuple(self.states.shape)}"
            )
        self.states = state["states"].to(self.states.device, self.states.dtype)
