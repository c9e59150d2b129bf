"""DCGAN and WGAN-GP pieces: network shapes and initialisation, the losses on hand-checked logits, the gradient
penalty against autograd on known critics, and the weight average."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.errors import UserError
from generative.gan import (Discriminator, GANModelConfig, Generator, WeightAverage, check_model, critic_loss,
                            discriminator_loss, generator_loss, gradient_penalty, wasserstein_generator_loss)


def test_generator_makes_28x28_images_in_minus_one_one() -> None:
    generator = Generator(GANModelConfig(width=8, latent=10))
    images = generator(torch.randn(5, 10))
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1


@pytest.mark.parametrize("loss, batch_norm", [("dcgan", True), ("wgan_gp", False)])
def test_discriminator_scores_each_image_and_has_batch_norm_only_for_dcgan(loss: str, batch_norm: bool) -> None:
    discriminator = Discriminator(GANModelConfig(loss=loss, width=8))
    assert discriminator(torch.rand(3, 1, 28, 28)).shape == (3,)
    has_batch_norm = any(isinstance(layer, nn.BatchNorm2d) for layer in discriminator.modules())
    assert has_batch_norm == batch_norm
    slopes = [layer.negative_slope for layer in discriminator.modules() if isinstance(layer, nn.LeakyReLU)]
    assert slopes == [0.2, 0.2]


def test_weights_start_from_dcgan_normal_0_02() -> None:
    generator = Generator(GANModelConfig(width=32))
    weights = torch.cat([layer.weight.detach().flatten() for layer in generator.modules()
                         if isinstance(layer, nn.ConvTranspose2d)])
    assert abs(float(weights.mean())) < 1e-3 and float(weights.std()) == pytest.approx(0.02, rel=0.05)


def test_dcgan_losses_on_hand_checked_logits() -> None:
    zero = torch.zeros(4)
    assert float(discriminator_loss(zero, zero)) == pytest.approx(2 * math.log(2))
    assert float(generator_loss(zero)) == pytest.approx(math.log(2))
    # Real logit 1, fake logit -1: D = sigmoid(1) on both sides of its loss; G's -log sigmoid(-1) = log(1 + e).
    real, fake = torch.ones(2), -torch.ones(2)
    assert float(discriminator_loss(real, fake)) == pytest.approx(2 * math.log(1 + math.exp(-1)))
    assert float(generator_loss(fake)) == pytest.approx(math.log(1 + math.e))
    assert float(discriminator_loss(torch.full((3,), 50.0), torch.full((3,), -50.0))) < 1e-20


def test_wasserstein_losses_on_hand_checked_scores() -> None:
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0])
    assert float(critic_loss(real, fake)) == pytest.approx(-1.0 - 2.0)
    assert float(wasserstein_generator_loss(fake)) == pytest.approx(1.0)


def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm_minus_one_squared() -> None:
    weight = torch.tensor([[[[3.0, 4.0]]]], requires_grad=True)  # ||w|| = 5 for every interpolate

    def critic(images: torch.Tensor) -> torch.Tensor:
        return (images * weight).flatten(1).sum(1)

    real, fake = torch.randn(6, 1, 1, 2), torch.randn(6, 1, 1, 2)
    penalty = gradient_penalty(critic, real, fake, torch.rand(6, 1, 1, 1))
    assert float(penalty.detach()) == pytest.approx(16.0)
    (gradient,) = torch.autograd.grad(penalty, weight)
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    assert torch.allclose(gradient, 2 * 4 * weight.detach() / 5)


def test_gradient_penalty_matches_autograd_on_a_quadratic_critic() -> None:
    def critic(images: torch.Tensor) -> torch.Tensor:
        return 0.5 * images.pow(2).flatten(1).sum(1)  # gradient at x is x itself

    real, fake, mixing = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4), torch.rand(5, 1, 1, 1)
    interpolates = mixing * real + (1 - mixing) * fake
    expected = (interpolates.flatten(1).norm(dim=1) - 1).pow(2).mean()
    assert float(gradient_penalty(critic, real, fake, mixing).detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(gradient_penalty(critic, real, fake, torch.ones(5, 1, 1, 1)).detach()) == pytest.approx(
        float((real.flatten(1).norm(dim=1) - 1).pow(2).mean()), rel=1e-6)


def test_gradient_penalty_reaches_the_critic_parameters() -> None:
    critic = Discriminator(GANModelConfig(loss="wgan_gp", width=4))
    penalty = gradient_penalty(critic, torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28), torch.rand(3, 1, 1, 1))
    penalty.backward()
    weights = [layer.weight for layer in critic.modules() if isinstance(layer, nn.Conv2d)]
    assert all(weight.grad is not None and weight.grad.abs().sum() > 0 for weight in weights)


def test_weight_average_moves_by_one_minus_decay_and_copies_buffers() -> None:
    network = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(network, decay=0.9)
    before = [parameter.clone() for parameter in average.network.parameters()]
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(1.0)
    network(torch.randn(4, 2))  # moves the batch-norm statistics
    average.update(network)
    for old, new in zip(before, average.network.parameters()):
        assert torch.allclose(new, old + 0.1)
    assert torch.equal(average.network[1].running_mean, network[1].running_mean)
    assert not any(parameter.requires_grad for parameter in average.network.parameters())


def test_bad_model_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="model.loss: unknown 'wgan'"):
        check_model(GANModelConfig(loss="wgan"))
    with pytest.raises(UserError, match="width"):
        check_model(GANModelConfig(width=0))
    with pytest.raises(UserError, match="ema_decay"):
        WeightAverage(nn.Linear(1, 1), decay=1.0)
