"""Variational autoencoder (Kingma & Welling 2014) with the importance-weighted bound of Burda et al. (2016).

Gaussian posterior q(z|x) with diagonal covariance, standard normal prior, and a Bernoulli decoder for
binary images or a Gaussian one (a learned scale per pixel) for grey levels. Everything a bound needs
comes from `log_weights`: log w = log p(x|z) + log p(z) - log q(z|x) for z ~ q(z|x); the ELBO is their
mean and the k-sample IWAE bound log mean exp of k of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from core.nets import MLP, ConvDecoder28, ConvEncoder28, make_activation

LIKELIHOODS = ("bernoulli", "gaussian")
NETWORKS = ("mlp", "conv")
HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


@dataclass
class VAEModelConfig:
    """Encoder, decoder and latent space; defaults are the IWAE paper's one-stochastic-layer MNIST model."""

    network: str = "mlp"  # mlp (fully connected) | conv (core.nets ConvEncoder28/ConvDecoder28, 28x28 only)
    hidden: List[int] = field(default_factory=lambda: [200, 200])  # mlp: encoder widths (decoder mirrors them)
    conv_features: int = 256  # conv: width of the encoder's last layer before the latent heads
    latent: int = 50  # dimensions of z
    activation: str = "tanh"  # hidden activation (the IWAE paper's tanh)
    likelihood: str = "bernoulli"  # bernoulli (binary pixels) | gaussian (grey levels, learned per-pixel scale)
    min_log_scale: float = -4.6  # gaussian: lower bound of log sigma (sigma >= 0.01), so densities stay finite


class NetworkConfig(Protocol):
    """The fields of a model section that say which encoder and decoder to build (the VAE's and the autoencoder's)."""

    network: str
    hidden: List[int]
    conv_features: int
    latent: int
    activation: str


def encoder_decoder(config: NetworkConfig, image_shape: tuple[int, ...],
                    encoder_outputs: int) -> tuple[nn.Module, nn.Module]:
    """An encoder from images to `encoder_outputs` numbers and a decoder from `config.latent` numbers to one raw
    output per pixel: MLPs whose decoder mirrors the encoder's widths, or core.nets' 28x28 conv nets. The VAE
    encodes a mean and a log variance per latent dimension, a plain autoencoder the code itself."""
    if config.network not in NETWORKS:
        raise UserError(f"model.network: unknown {config.network!r}; valid: {', '.join(NETWORKS)}")
    if config.latent < 1:
        raise UserError(f"model.latent must be at least 1, got {config.latent}")
    pixels = math.prod(image_shape)
    if config.network == "mlp":
        return (MLP(pixels, config.hidden, encoder_outputs, config.activation),
                MLP(config.latent, list(reversed(config.hidden)), pixels, config.activation))
    if tuple(image_shape[1:]) != (28, 28):
        raise UserError(f"model.network: conv expects 28x28 images, got {tuple(image_shape)}")
    channels = image_shape[0]
    encoder = nn.Sequential(
        ConvEncoder28(config.conv_features, channels, config.activation),
        make_activation(config.activation),
        nn.Linear(config.conv_features, encoder_outputs),
    )
    return encoder, nn.Sequential(ConvDecoder28(config.latent, channels, config.activation), nn.Flatten())


def flatten_for(network: str, images: torch.Tensor) -> torch.Tensor:
    """Images as an encoder of `network` takes them: flat rows for an MLP, (B, C, H, W) for the conv net."""
    return images.reshape(images.shape[0], -1) if network == "mlp" else images


class LogWeights(NamedTuple):
    """Per sample and image `[k, B]`: the reconstruction term log p(x|z) and log p(z) - log q(z|x)."""

    log_likelihood: torch.Tensor
    log_prior_ratio: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.log_likelihood + self.log_prior_ratio


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * z.pow(2).sum(-1) - z.shape[-1] * HALF_LOG_TWO_PI


def diagonal_normal_log_density(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(exp(log_var))) summed over the last dimension."""
    return (-0.5 * ((z - mean).pow(2) * torch.exp(-log_var) + log_var) - HALF_LOG_TWO_PI).sum(-1)


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) per row, in closed form."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)


class VAE(nn.Module):
    """q(z|x) = N(mean(x), diag(var(x))), p(z) = N(0, I), p(x|z) Bernoulli(logits) or N(mean, sigma^2)."""

    def __init__(self, config: VAEModelConfig, image_shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        if config.likelihood not in LIKELIHOODS:
            raise UserError(f"model.likelihood: unknown {config.likelihood!r}; valid: {', '.join(LIKELIHOODS)}")
        self.config = config
        self.image_shape = tuple(image_shape)
        self.pixels = math.prod(self.image_shape)
        self.encoder, self.decoder = encoder_decoder(config, self.image_shape, 2 * config.latent)
        if config.likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(self.pixels))

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) images -> the posterior's mean and log variance, each (B, latent), in float32 also under
        a bfloat16 autocast: the bounds are computed from them."""
        mean, log_var = self.encoder(flatten_for(self.config.network, images)).float().chunk(2, dim=-1)
        return mean, log_var

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(..., latent) codes -> (..., pixels) decoder outputs in float32: Bernoulli logits or Gaussian means."""
        leading = z.shape[:-1]
        return self.decoder(z.reshape(-1, z.shape[-1])).float().reshape(*leading, self.pixels)

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent) codes -> (N, C, H, W) expected images in [0, 1] (probabilities or clamped means)."""
        outputs = self.decode(z)
        means = torch.sigmoid(outputs) if self.config.likelihood == "bernoulli" else outputs.clamp(0.0, 1.0)
        return means.reshape(-1, *self.image_shape)

    def log_likelihood(self, flat_images: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels; `outputs` (..., B, pixels) broadcast against images (B, pixels)."""
        if self.config.likelihood == "bernoulli":
            targets = flat_images.expand_as(outputs)
            return -F.binary_cross_entropy_with_logits(outputs, targets, reduction="none").sum(-1)
        log_scale = self.log_scale.clamp(min=self.config.min_log_scale)
        residual = (flat_images - outputs) * torch.exp(-log_scale)
        return (-0.5 * residual.pow(2) - log_scale - HALF_LOG_TWO_PI).sum(-1)

    @staticmethod
    def sample_posterior(mean: torch.Tensor, log_var: torch.Tensor, samples: int,
                         noise: torch.Tensor | None = None) -> torch.Tensor:
        """`samples` reparameterised draws z = mean + sigma * eps per image, `[samples, B, latent]`; `noise`
        (eps, same shape) when the caller draws it."""
        if noise is None:
            noise = torch.randn(samples, *mean.shape, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * log_var) * noise

    def reconstruction_log_likelihood(self, images: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) of each image under each of its codes `[samples, B, latent]`, shaped `[samples, B]`."""
        return self.log_likelihood(images.reshape(images.shape[0], -1), self.decode(z))

    def log_weights(
        self, images: torch.Tensor, samples: int, posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
        noise: torch.Tensor | None = None,
    ) -> LogWeights:
        """Log importance weights of `samples` draws z ~ q(z|x) per image, each `[samples, B]`.

        `posterior` (mean, log variance) may be passed in so chunked evaluations encode each image once.
        """
        mean, log_var = posterior if posterior is not None else self.encode(images)
        z = self.sample_posterior(mean, log_var, samples, noise)
        log_prior_ratio = standard_normal_log_density(z) - diagonal_normal_log_density(z, mean, log_var)
        return LogWeights(self.reconstruction_log_likelihood(images, z), log_prior_ratio)


class TrainingObjective(nn.Module):
    """A VAE's training loss as one forward pass, so DistributedDataParallel can wrap it (DDP synchronises
    the gradients of what `forward` computes)."""

    def __init__(self, model: VAE, objective: str, samples: int) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.samples = samples

    def forward(self, images: torch.Tensor, noise: torch.Tensor, beta: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss to minimise, KL per image, -log p(x|z) per image) of a batch, with the posterior noise given.

        The ELBO uses the KL in closed form (Kingma & Welling's lower-variance estimator); `beta` weights
        the prior term (KL warm-up)."""
        model = self.model
        mean, log_var = model.encode(images)
        kl = gaussian_kl(mean, log_var)
        if self.objective == "elbo":
            z = model.sample_posterior(mean, log_var, self.samples, noise)
            reconstruction = -model.reconstruction_log_likelihood(images, z).mean(0)
            return (reconstruction + beta * kl).mean(), kl, reconstruction
        weights = model.log_weights(images, self.samples, (mean, log_var), noise)
        bound = iwae_bound(weights.log_likelihood + beta * weights.log_prior_ratio).mean()
        return -bound, kl, -weights.log_likelihood.mean(0)


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """The k-sample importance-weighted bound per image from `[k, B]` log weights: log (1/k) sum_k w_k."""
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])
