"""The `gan` task: DCGAN or WGAN-GP on device-resident images, judged by an MNIST classifier.

One step is one generator update, after `train.critic_steps` discriminator updates on fresh real batches. The
grid under `samples/fixed_grid` always decodes the same latent vectors (saved in every checkpoint, so a
resumed run keeps them). Evaluations score `eval.quick_samples` samples during training (`eval/fid_quick`) and
`eval.samples` (10,000) at the end and with `rlgen eval` (`eval/fid`, with the real-vs-real floor), plus mode
coverage and the inception-style score. A diverged run (a NaN, inf or exploding loss) stops with a UserError
before the bad state reaches a checkpoint, so the newest checkpoint on disk is the last good one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from core.config import ExperimentConfig, RunConfig
from core.errors import UserError
from core.figures import FigureWindow
from core.images import make_grid
from core.optim import OptimConfig, Optimizer
from core.progress import progress_of
from core.run import Run
from core.sampling import unit_interval
from core.task import TASKS
from generative.data import DataConfig
from generative.gan import (Discriminator, GANModelConfig, Generator, WeightAverage, check_model, critic_loss,
                            discriminator_loss, generator_loss, gradient_penalty, wasserstein_generator_loss)
from generative.metrics.fid import FeatureStatistics, feature_statistics, frechet_distance, judge_outputs, \
    sample_quality
from generative.image_task import ImageTask
from generative.mnist_classifier import ensure_judge

# Offset of the seed of the evaluation latents from the run's seed: every evaluation scores the same z.
EVAL_SEED_OFFSET = 7919


@dataclass
class GANTrainConfig:
    """Length of training, the update schedule and the divergence guard."""

    epochs: float = 25.0  # passes of the discriminator over the training images (the PyTorch DCGAN example's 25)
    batch_size: int = 128  # images per update (DCGAN: 128; WGAN-GP: 64)
    critic_steps: int = 1  # discriminator updates per generator update (WGAN-GP: 5)
    gradient_penalty: float = 10.0  # wgan_gp: weight of the gradient penalty (Gulrajani et al.: 10)
    ema_decay: float = 0.0  # > 0: sample and evaluate with an exponential moving average of G's weights (0.999)
    # true: the generator's update scores the last discriminator batch's fakes again (their latents, and the one
    # generator forward pass that made them), as Radford et al.'s code and PyTorch's DCGAN example do; false:
    # fresh latents and a second forward pass
    reuse_latents: bool = False
    max_loss: float = 1.0e4  # a loss above this in magnitude, or NaN or inf, stops the run as diverged
    check_every: int = 50  # generator updates between reads of the divergence flag off the device


@dataclass
class GANEvalConfig:
    """The judge, the sample counts of the scores, and the grid."""

    classifier: str = "runs/judges/mnist_cnn.pt"  # judge file; trained once by mnist_classifier.yaml when absent
    samples: int = 10000  # generated images scored at the end and by `rlgen eval` (eval/fid)
    quick_samples: int = 2000  # generated images scored during training (eval/fid_quick)
    batch_size: int = 500  # images per forward pass when evaluating
    grid_images: int = 64  # fixed latent vectors shown in samples/fixed_grid


@dataclass
class GANConfig(ExperimentConfig):
    """A GAN experiment: data, networks, the two optimizers, training and evaluation (defaults: DCGAN)."""

    task: str = "gan"
    data: DataConfig = field(default_factory=lambda: DataConfig(binarize="none"))
    model: GANModelConfig = field(default_factory=GANModelConfig)
    # DCGAN's Adam for both networks: lr 2e-4, beta1 0.5. WGAN-GP: lr 1e-4, betas [0, 0.9].
    generator_optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=2e-4, betas=[0.5, 0.999]))
    discriminator_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(name="adam", lr=2e-4, betas=[0.5, 0.999]))
    train: GANTrainConfig = field(default_factory=GANTrainConfig)
    eval: GANEvalConfig = field(default_factory=GANEvalConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(log_every=100, eval_every=2000, checkpoint_every=2000))


def _check(config: GANConfig) -> None:
    check_model(config.model)
    train, evaluation = config.train, config.eval
    if train.epochs <= 0 or train.critic_steps < 1 or train.check_every < 1:
        raise UserError("train: epochs must be > 0, critic_steps and check_every >= 1")
    if train.gradient_penalty < 0 or train.max_loss <= 0 or not 0 <= train.ema_decay < 1:
        raise UserError("train: gradient_penalty must be >= 0, max_loss > 0 and ema_decay in [0, 1)")
    if min(evaluation.samples, evaluation.quick_samples) < 2 or min(evaluation.batch_size,
                                                                    evaluation.grid_images) < 1:
        raise UserError("eval: samples and quick_samples must be >= 2, batch_size and grid_images >= 1")


def _renamed(figures: dict[str, torch.Tensor], network: str) -> dict[str, torch.Tensor]:
    """`charts/grad_norm` -> `charts/<network>_grad_norm`: two optimizers report into one run."""
    return {tag.replace("charts/", f"charts/{network}_"): value for tag, value in figures.items()}


@TASKS.register("gan")
class GANTask(ImageTask):
    """Adversarial training of a generator against a discriminator or critic, scored by an MNIST classifier."""

    Config = GANConfig
    summary_metrics = ("eval/fid", "eval/mode_kl", "eval/inception_score")
    state_attributes = ("generator", "discriminator", "generator_optimizer", "discriminator_optimizer", "batches",
                        "noise", "fixed_latents", "ema")

    def __init__(self, config: GANConfig, run: Run, device: torch.device) -> None:
        _check(config)
        super().__init__(config, run, device)
        self.wasserstein = config.model.loss == "wgan_gp"
        self._discriminator_tag = "losses/critic" if self.wasserstein else "losses/discriminator"
        self.judge = ensure_judge(Path(config.eval.classifier).expanduser(), config.data.root, device,
                                  config.threads)
        self.generator = self.precision.prepare(Generator(config.model).to(device))
        self.discriminator = self.precision.prepare(Discriminator(config.model).to(device))
        self.ema: Optional[WeightAverage] = (WeightAverage(self.generator, config.train.ema_decay)
                                             if config.train.ema_decay > 0 else None)
        self.generator_optimizer = Optimizer(config.generator_optim, self.generator.parameters(),
                                             total_steps=self.total_steps, key="generator_optim")
        self.discriminator_optimizer = Optimizer(
            config.discriminator_optim, self.discriminator.parameters(),
            total_steps=self.total_steps * config.train.critic_steps, key="discriminator_optim")
        self.noise = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.fixed_latents = self.draw_fixed_latents(config.eval.grid_images, config.model.latent)
        # The first update whose losses were not finite or exceeded max_loss (-1: none yet), and those losses.
        self.diverged_at = torch.full((), -1, dtype=torch.long, device=device)
        self.diverged_losses = torch.zeros(2, device=device)
        self._reference: Optional[FeatureStatistics] = None
        self._fakes: Optional[torch.Tensor] = None  # the last discriminator batch's, with their graph (reuse_latents)
        self._floors: dict[int, float] = {}

    @property
    def batches_per_step(self) -> int:
        return self.config.train.critic_steps

    def _latents(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.config.model.latent, device=self.device, generator=self.noise)

    def _discriminator_step(self, keep_fakes: bool) -> dict[str, torch.Tensor]:
        """One discriminator (critic) update; `keep_fakes` keeps its fakes differentiable for the generator's."""
        real = self.batches.next().mul_(2).sub_(1)
        latents = self._latents(real.shape[0])
        with torch.set_grad_enabled(keep_fakes):
            fakes = self.generator(latents)
        self._fakes = fakes if keep_fakes else None
        fake = fakes.detach()
        real_out, fake_out = self.discriminator(real), self.discriminator(fake)
        if self.wasserstein:
            mixing = torch.rand(real.shape[0], 1, 1, 1, device=self.device, generator=self.noise)
            penalty = gradient_penalty(self.discriminator, real, fake, mixing)
            loss = critic_loss(real_out, fake_out) + self.config.train.gradient_penalty * penalty
            figures = {"losses/critic": loss, "losses/gradient_penalty": penalty,
                       "losses/wasserstein_estimate": real_out.mean() - fake_out.mean()}
        else:
            loss = discriminator_loss(real_out, fake_out)
            figures = {"losses/discriminator": loss, "charts/d_real": torch.sigmoid(real_out).mean(),
                       "charts/d_fake": torch.sigmoid(fake_out).mean()}
        figures.update(_renamed(self.discriminator_optimizer.step(loss), "discriminator"))
        return {tag: value.detach() for tag, value in figures.items()}

    def _generator_step(self) -> dict[str, torch.Tensor]:
        self.discriminator.requires_grad_(False)
        fakes = self._fakes if self._fakes is not None else self.generator(self._latents(self.config.train.batch_size))
        self._fakes = None
        fake_out = self.discriminator(fakes)
        loss = wasserstein_generator_loss(fake_out) if self.wasserstein else generator_loss(fake_out)
        figures = _renamed(self.generator_optimizer.step(loss), "generator")
        self.discriminator.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(self.generator)
        return {"losses/generator": loss.detach(), **figures}

    def train_step(self) -> dict[str, torch.Tensor | float]:
        critic = FigureWindow()
        steps = self.config.train.critic_steps
        for index in range(steps):
            critic.add(self._discriminator_step(keep_fakes=self.config.train.reuse_latents and index == steps - 1))
        figures = critic.means()
        figures.update(self._generator_step())
        self.step += 1
        self._watch(figures["losses/generator"], figures[self._discriminator_tag])
        if self.step % self.config.train.check_every == 0:
            self._check_divergence()
        return {**figures, "charts/epoch": self.batches.epochs_done}

    def _watch(self, generator: torch.Tensor, discriminator: torch.Tensor) -> None:
        """Remember, on the device, the first update whose losses are not finite or exceed max_loss."""
        losses = torch.stack([generator, discriminator])
        bad = (~torch.isfinite(losses) | (losses.abs() > self.config.train.max_loss)).any()
        first = bad & (self.diverged_at < 0)
        self.diverged_at = torch.where(first, self.step, self.diverged_at)
        self.diverged_losses = torch.where(first, losses, self.diverged_losses)

    def _check_divergence(self) -> None:
        """Raise when the run has diverged. Also called before every evaluation and checkpoint, so a bad state is
        neither scored nor saved, whatever the check cadence."""
        step = int(self.diverged_at)
        if step < 0:
            return
        generator, discriminator = self.diverged_losses.tolist()
        saved = self.run.checkpoints.paths()
        kept = f"the last good checkpoint, {saved[-1].name}, is kept" if saved else "no checkpoint was written"
        raise UserError(
            f"training diverged at generator update {step}: generator loss {generator:.4g}, "
            f"{'critic' if self.wasserstein else 'discriminator'} loss {discriminator:.4g} (NaN, inf or beyond "
            f"train.max_loss={self.config.train.max_loss:g}); stopped without checkpointing it and {kept}. "
            f"Lower the learning rates and start again")

    def _sampler(self) -> torch.nn.Module:
        return self.ema.network if self.ema is not None else self.generator

    def _generate(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` images in [0, 1] from the sampling network in eval mode, in chunks."""
        sampler, size = self._sampler(), self.config.eval.batch_size
        chunks = []
        with progress_of(count, "FID: generating samples", "images") as shown:
            for start in range(0, count, size):
                chunks.append(sampler(torch.randn(min(size, count - start), self.config.model.latent,
                                                  device=self.device, generator=generator)))
                shown.advance(chunks[-1].shape[0])
        return torch.cat(chunks).add_(1).div_(2)

    def _reference_statistics(self) -> FeatureStatistics:
        if self._reference is None:
            outputs = judge_outputs(self.judge, unit_interval(self.data.test), self.config.eval.batch_size,
                                    "FID: judging the test digits")
            self._reference = feature_statistics(outputs.features)
        return self._reference

    def _real_floor(self, count: int) -> float:
        """FID of `count` real training digits against the test digits: the best a generator can expect."""
        if count not in self._floors:
            images = unit_interval(self.data.train[:count])
            features = judge_outputs(self.judge, images, self.config.eval.batch_size,
                                     "FID: judging training digits").features
            self._floors[count] = frechet_distance(feature_statistics(features), self._reference_statistics())
        return self._floors[count]

    @torch.no_grad()
    def evaluate(self, final: bool = False) -> dict[str, float]:
        self._check_divergence()
        settings = self.config.eval
        count = settings.samples if final else settings.quick_samples
        sampler = self._sampler()
        sampler.eval()
        noise = torch.Generator(device=self.device).manual_seed(self.config.seed + EVAL_SEED_OFFSET)
        outputs = judge_outputs(self.judge, self._generate(count, noise), settings.batch_size, "FID: judging samples")
        quality = sample_quality(outputs, self._reference_statistics())
        metrics = {("eval/fid" if final else "eval/fid_quick"): quality.pop("fid")}
        # Each digit's fraction goes to the summary; during training the histogram shows them.
        metrics.update({f"eval/{name}": value for name, value in quality.items()
                        if final or not name.startswith("class_fraction_")})
        if final:
            metrics["eval/fid_samples"] = float(count)
            metrics["eval/fid_real_floor"] = self._real_floor(count)
        tb = self.run.tb
        tb.image("samples/fixed_grid", make_grid(sampler(self.fixed_latents).add_(1).div_(2)), self.step)
        tb.histogram("eval/class_histogram", outputs.probabilities.argmax(dim=1), self.step,
                     bins=[label - 0.5 for label in range(outputs.probabilities.shape[1] + 1)])
        sampler.train()
        return metrics

    def state_dict(self) -> dict[str, Any]:
        self._check_divergence()
        return super().state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (self.ema is not None) != (state.get("ema") is not None):
            raise UserError("this checkpoint was written with a different train.ema_decay (on/off); it cannot "
                            "be resumed with this config")
        super().load_state_dict(state)
