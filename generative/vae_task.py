"""The `vae` task: ELBO or IWAE training on device-resident images, test log-likelihood, image grids.

One step is one update on one minibatch. During training an evaluation reports the test ELBO and a
quick IWAE bound (`eval.quick_k` samples on `eval.quick_images` images); the final evaluation (and
`rlgen eval`) reports the test NLL by the `eval.k`-sample bound (5,000, as Burda et al.) on
`eval.images` images, the ELBO and the active units. Both log the image grids under `samples/`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel

from core.config import ExperimentConfig, RunConfig
from core.errors import UserError
from core.images import make_grid
from core.optim import OptimConfig, Optimizer
from core.run import Run
from core.task import TASKS
from generative.data import DataConfig
from generative.image_task import ImageTask
from generative.metrics.iwae import active_units, elbo_terms, iwae_log_likelihood
from generative.vae import VAE, TrainingObjective, VAEModelConfig

OBJECTIVES = ("elbo", "iwae")


@dataclass
class VAETrainConfig:
    """Length and objective of training."""

    epochs: float = 100.0  # passes over the training images (the run's steps = epochs * batches per epoch)
    batch_size: int = 100  # images per update (the IWAE paper's 20; 100 is the usual VAE setting)
    objective: str = "elbo"  # elbo (Kingma & Welling) | iwae (Burda et al.'s k-sample bound)
    samples: int = 1  # k: posterior samples per image in the objective
    kl_warmup_steps: int = 0  # updates over which log p(z) - log q(z|x) is weighted from 0 up to 1


@dataclass
class VAEEvalConfig:
    """The test-set figures and image grids."""

    k: int = 5000  # samples of the final importance-weighted bound (Burda et al.: 5,000)
    images: int = 0  # test images of the final bound; 0 = all
    quick_k: int = 100  # samples of the bound during training
    quick_images: int = 1000  # test images of the bound and ELBO during training
    batch_size: int = 100  # images per forward pass in evaluations
    active_threshold: float = 0.01  # a latent unit is active when Cov_x(E_q[z|x]) exceeds this
    grid_images: int = 64  # images in each grid under samples/


@dataclass
class VAEConfig(ExperimentConfig):
    """A VAE experiment: data, model, optimizer, training and evaluation."""

    task: str = "vae"
    data: DataConfig = field(default_factory=DataConfig)
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    # The IWAE paper's Adam: beta1 0.9, beta2 0.999, eps 1e-4.
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-3, betas=[0.9, 0.999], eps=1e-4))
    train: VAETrainConfig = field(default_factory=VAETrainConfig)
    eval: VAEEvalConfig = field(default_factory=VAEEvalConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(log_every=100, eval_every=6000, checkpoint_every=6000))


def _check(config: VAEConfig) -> None:
    train, evaluation = config.train, config.eval
    if train.objective not in OBJECTIVES:
        raise UserError(f"train.objective: unknown {train.objective!r}; valid: {', '.join(OBJECTIVES)}")
    if train.samples < 1 or train.epochs <= 0 or train.kl_warmup_steps < 0:
        raise UserError("train.samples must be >= 1, train.epochs > 0 and train.kl_warmup_steps >= 0")
    if min(evaluation.k, evaluation.quick_k, evaluation.batch_size, evaluation.grid_images) < 1 or \
            evaluation.images < 0 or evaluation.quick_images < 1:
        raise UserError("eval: k, quick_k, quick_images, batch_size and grid_images must be >= 1, images >= 0")


@TASKS.register("vae")
class VAETask(ImageTask):
    """Trains a VAE by the ELBO or the IWAE bound and measures it the way the papers report it."""

    Config = VAEConfig
    summary_metrics = ("eval/test_nll", "eval/test_elbo", "eval/active_units")
    data_parallel = True
    state_attributes = ("model", "optimizer", "batches")
    # vae_mnist.yaml for 100 epochs: bf16 90.87 nats against fp32 91.15 and 90.97 (seeds 1, 2; docs/results.md).
    auto_bf16 = True

    def __init__(self, config: VAEConfig, run: Run, device: torch.device) -> None:
        _check(config)
        super().__init__(config, run, device)
        self.model = self.precision.prepare(VAE(config.model, self.image_shape).to(device))
        objective = TrainingObjective(self.model, config.train.objective, config.train.samples)
        self.objective = DistributedDataParallel(objective) if self.shard[1] > 1 else objective
        self.optimizer = Optimizer(config.optim, self.model.parameters(), total_steps=self.total_steps)
        # The same prior draws at every evaluation, so the grid shows the same samples improving.
        self.fixed_latents = self.draw_fixed_latents(config.eval.grid_images, config.model.latent)

    def _prior_weight(self) -> float:
        warmup = self.config.train.kl_warmup_steps
        return 1.0 if warmup == 0 else min(1.0, (self.step + 1) / warmup)

    def _posterior_noise(self, local_batch: int) -> torch.Tensor:
        """This rank's slice of the noise of the whole global batch: every rank draws the same global
        tensor, so N processes train on exactly the numbers one process with the global batch would."""
        rank, world = self.shard
        noise = torch.randn(self.config.train.samples, local_batch * world, self.config.model.latent,
                            device=self.device)
        return noise[:, rank * local_batch:(rank + 1) * local_batch]

    def train_step(self) -> dict[str, torch.Tensor]:
        images = self.batches.next()
        loss, kl, reconstruction = self.objective(images, self._posterior_noise(images.shape[0]),
                                                  self._prior_weight())
        optimizer_figures = self.optimizer.step(loss)
        self.step += 1
        kl, reconstruction = kl.detach().mean(), reconstruction.detach().mean()
        figures = {
            "losses/elbo": -(reconstruction + kl),
            "losses/kl": kl,
            "losses/reconstruction": reconstruction,
            "charts/epoch": float(self.batches.epoch),
            **optimizer_figures,
        }
        if self.config.train.objective == "iwae":
            figures["losses/iwae_bound"] = -loss.detach()
        return figures

    @torch.no_grad()
    def evaluate(self, final: bool = False) -> dict[str, float]:
        settings = self.config.eval
        self.model.eval()
        count = (settings.images or len(self.test_images)) if final else settings.quick_images
        images = self.test_images[:count]
        terms = elbo_terms(self.model, images, settings.batch_size)
        k = settings.k if final else settings.quick_k
        log_likelihood = iwae_log_likelihood(self.model, images, k, settings.batch_size)
        metrics = {"eval/test_elbo": terms["elbo"], "eval/test_reconstruction": terms["reconstruction"],
                   "eval/test_kl": terms["kl"]}
        if final:
            metrics["eval/test_nll"] = float(-log_likelihood.mean())
            metrics["eval/nll_samples"] = float(k)
            metrics["eval/nll_images"] = float(count)
            metrics["eval/active_units"] = float(active_units(self.model, images, settings.active_threshold))
        else:
            metrics["eval/test_nll_quick"] = float(-log_likelihood.mean())
        self._log_grids()
        self.model.train()
        return metrics

    def _log_grids(self) -> None:
        """Prior samples, test digits beside their reconstructions, and a walk between two test digits."""
        tb, model, count = self.run.tb, self.model, self.config.eval.grid_images
        tb.image("samples/prior", make_grid(model.mean_image(self.fixed_latents)), self.step)
        inputs = self.test_images[:count // 2]
        reconstructions = model.mean_image(model.encode(inputs)[0])
        pairs = torch.stack([inputs, reconstructions], dim=1).flatten(0, 1)
        tb.image("samples/reconstructions", make_grid(pairs), self.step)
        start, end = model.encode(self.test_images[:2])[0]
        fractions = torch.linspace(0, 1, 10, device=self.device).unsqueeze(1)
        walk = model.mean_image(start + fractions * (end - start))
        tb.image("samples/latent_walk", make_grid(torch.cat([self.test_images[:1], walk, self.test_images[1:2]]),
                                                  columns=12), self.step)
