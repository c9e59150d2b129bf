"""DCGAN (Radford et al. 2016) sized for 28x28 images, and WGAN-GP (Gulrajani et al. 2017) as a switch.

The generator projects z to 7x7 with a transposed convolution and doubles the size twice (7 -> 14 -> 28) with
batch norm and ReLU, ending in tanh; the discriminator mirrors it with strided convolutions and LeakyReLU 0.2.
`loss: dcgan` trains it with the non-saturating loss (the generator maximises log D(G(z))) and batch norm in
the discriminator; `loss: wgan_gp` drops the discriminator's batch norm (the gradient penalty is per sample,
which batch norm would couple) and trains a critic with the gradient penalty on real-fake interpolates.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.averaging import average_into
from core.errors import UserError
from core.nets import init_weights, make_activation

LOSSES = ("dcgan", "wgan_gp")


@dataclass
class GANModelConfig:
    """The two networks and the loss; defaults are DCGAN's, sized for 28x28."""

    loss: str = "dcgan"  # dcgan (non-saturating, batch-norm discriminator) | wgan_gp (critic without batch norm)
    latent: int = 100  # dimensions of z ~ N(0, I) (DCGAN: 100)
    width: int = 64  # channels of the discriminator's first conv; the generator's layers have 4x and 2x this
    init_std: float = 0.02  # std of the N(0, std) initial conv weights (DCGAN)


def check_model(config: GANModelConfig) -> None:
    """One clear line for a loss or size that cannot work."""
    if config.loss not in LOSSES:
        raise UserError(f"model.loss: unknown {config.loss!r}; valid: {', '.join(LOSSES)}")
    if config.latent < 1 or config.width < 1 or config.init_std <= 0:
        raise UserError(f"model: latent and width must be >= 1 and init_std > 0, got latent={config.latent}, "
                        f"width={config.width}, init_std={config.init_std}")


def _initialise(network: nn.Module, std: float) -> nn.Module:
    """Conv weights N(0, std), biases 0; batch-norm scales N(1, std) so the layers start near identity."""
    init_weights(network, "normal", std=std)
    for layer in network.modules():
        if isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, std)
            nn.init.zeros_(layer.bias)
    return network


class Generator(nn.Module):
    """z `[B, latent]` -> images `[B, 1, 28, 28]` in [-1, 1]."""

    def __init__(self, config: GANModelConfig) -> None:
        super().__init__()
        wide, narrow = 4 * config.width, 2 * config.width
        self.layers = nn.Sequential(
            nn.Unflatten(1, (config.latent, 1, 1)),
            nn.ConvTranspose2d(config.latent, wide, 7, bias=False),
            nn.BatchNorm2d(wide),
            nn.ReLU(),
            nn.ConvTranspose2d(wide, narrow, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(narrow),
            nn.ReLU(),
            nn.ConvTranspose2d(narrow, 1, 4, stride=2, padding=1),
            nn.Tanh(),
        )
        _initialise(self, config.init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class Discriminator(nn.Module):
    """Images `[B, 1, 28, 28]` in [-1, 1] -> one logit (dcgan) or critic score (wgan_gp) each, `[B]`."""

    def __init__(self, config: GANModelConfig) -> None:
        super().__init__()
        batch_norm = config.loss == "dcgan"
        narrow, wide = config.width, 2 * config.width
        self.layers = nn.Sequential(
            nn.Conv2d(1, narrow, 4, stride=2, padding=1),
            make_activation("leaky_relu"),
            nn.Conv2d(narrow, wide, 4, stride=2, padding=1, bias=not batch_norm),
            nn.BatchNorm2d(wide) if batch_norm else nn.Identity(),
            make_activation("leaky_relu"),
            nn.Conv2d(wide, 1, 7),
            nn.Flatten(0),
        )
        _initialise(self, config.init_std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits or scores in float32 also under a bfloat16 autocast: the losses are computed from them."""
        return self.layers(images).float()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), each averaged over its batch, with D = sigmoid(logit)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating loss -log D(G(z)): strong gradients while D still rejects the samples."""
    return F.softplus(-fake_logits).mean()


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """E[C(G(z))] - E[C(x)]: minus the critic's estimate of the Wasserstein-1 distance (penalty apart)."""
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-E[C(G(z))]."""
    return -fake_scores.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, mixing: torch.Tensor) -> torch.Tensor:
    """E[(||grad C(x_hat)||_2 - 1)^2] at x_hat = mixing * real + (1 - mixing) * fake, one mixing weight in [0, 1]
    per image (`[B, 1, 1, 1]`); differentiable with respect to the critic's parameters."""
    interpolates = (mixing * real + (1 - mixing) * fake).detach().requires_grad_(True)
    (gradients,) = torch.autograd.grad(critic(interpolates).sum(), interpolates, create_graph=True)
    return (gradients.flatten(1).norm(dim=1) - 1).pow(2).mean()


class WeightAverage:
    """An exponential moving average of a network's parameters, for sampling (buffers such as batch-norm
    statistics are copied, not averaged)."""

    def __init__(self, network: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise UserError(f"train.ema_decay must lie in (0, 1) to average, got {decay}")
        self.decay = decay
        self.network = copy.deepcopy(network).requires_grad_(False)

    def update(self, network: nn.Module) -> None:
        """average <- decay * average + (1 - decay) * current, for every parameter."""
        average_into(self.network, network, 1 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged network's weights: what a checkpoint keeps of the average."""
        return self.network.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.network.load_state_dict(state)
