"""A plain (deterministic) autoencoder: an encoder squeezes each image into a few numbers, a decoder rebuilds it.

The networks are the VAE's (generative.vae.encoder_decoder) with one encoder output per code dimension instead
of a mean and a log variance; the decoder's outputs are logits, so reconstructions are sigmoid(logits) in [0, 1].
With a 2-d code the codes of the test digits can be drawn as a map (Hinton & Salakhutdinov 2006, figure 3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from generative.vae import encoder_decoder, flatten_for


@dataclass
class AutoencoderModelConfig:
    """Encoder and decoder; defaults are Hinton & Salakhutdinov's 784-1000-500-250-2 MNIST net, with ReLU units
    where theirs were logistic units pretrained as RBMs (ReLU trains the same shape from random weights)."""

    network: str = "mlp"  # mlp (fully connected) | conv (core.nets ConvEncoder28/ConvDecoder28, 28x28 only)
    hidden: List[int] = field(default_factory=lambda: [1000, 500, 250])  # mlp: encoder widths (decoder mirrors them)
    conv_features: int = 256  # conv: width of the encoder's last layer before the code
    latent: int = 2  # dimensions of the code; 2 draws the code map directly, more are projected by PCA
    activation: str = "relu"  # hidden activation (see core.nets.ACTIVATIONS)


class ReconstructionErrors(NamedTuple):
    """Per image `[B]`: Bernoulli cross-entropy in nats (summed over pixels) and mean squared error per pixel."""

    cross_entropy: torch.Tensor
    squared_error: torch.Tensor


def reconstruction_errors(logits: torch.Tensor, targets: torch.Tensor) -> ReconstructionErrors:
    """The errors of decoder logits `[B, pixels]` against flat target images in [0, 1] (binary or grey levels)."""
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)
    squared_error = (torch.sigmoid(logits) - targets).pow(2).mean(-1)
    return ReconstructionErrors(cross_entropy, squared_error)


class Autoencoder(nn.Module):
    """code = encoder(x), reconstruction = sigmoid(decoder(code))."""

    def __init__(self, config: AutoencoderModelConfig, image_shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        self.config = config
        self.image_shape = tuple(image_shape)
        self.pixels = math.prod(self.image_shape)
        self.encoder, self.decoder = encoder_decoder(config, self.image_shape, config.latent)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, latent) codes, in float32 also under a bfloat16 autocast."""
        return self.encoder(flatten_for(self.config.network, images)).float()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, latent) codes -> (B, pixels) logits in float32."""
        return self.decoder(codes).float()

    def errors(self, images: torch.Tensor) -> ReconstructionErrors:
        """Reconstruction errors of a batch of (B, C, H, W) images in [0, 1]."""
        return reconstruction_errors(self.decode(self.encode(images)), images.reshape(images.shape[0], -1))

    def images(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, latent) codes -> (N, C, H, W) reconstructions in [0, 1]."""
        return torch.sigmoid(self.decode(codes)).reshape(-1, *self.image_shape)
