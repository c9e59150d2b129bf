"""The VAE's densities and bounds against closed forms: a linear-Gaussian model whose log-likelihood is
exact, the Bernoulli likelihood by hand, the KL against torch.distributions, and the bound ordering."""
from __future__ import annotations

import logging
import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from generative.metrics.iwae import active_units, elbo_terms, iwae_log_likelihood
from generative.vae import VAE, VAEModelConfig, gaussian_kl, iwae_bound


def _linear_gaussian(sigma: float = 0.5, inflate: float = 1.0) -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """x = W z + b + sigma * noise with z ~ N(0, I_2), x in R^4; the encoder is the exact posterior's mean
    and the diagonal of its covariance times `inflate` (a diagonal q, so the bounds are strict)."""
    torch.manual_seed(0)
    model = VAE(VAEModelConfig(hidden=[], latent=2, likelihood="gaussian", min_log_scale=-10.0), (1, 2, 2))
    weight = torch.tensor([[1.0, 0.8], [0.5, 1.2], [-0.7, 0.9], [1.1, 1.0]])
    bias = torch.tensor([0.2, -0.1, 0.3, 0.0])
    covariance = torch.linalg.inv(torch.eye(2) + weight.T @ weight / sigma**2)
    gain = covariance @ weight.T / sigma**2
    with torch.no_grad():
        decoder, encoder = model.decoder[0], model.encoder[0]
        decoder.weight.copy_(weight)
        decoder.bias.copy_(bias)
        model.log_scale.fill_(math.log(sigma))
        encoder.weight.zero_()
        encoder.weight[:2] = gain
        encoder.bias[:2] = -gain @ bias
        encoder.bias[2:] = (inflate * covariance.diagonal()).log()
    marginal = MultivariateNormal(bias, weight @ weight.T + sigma**2 * torch.eye(4))
    images = marginal.sample((200,))
    return model, images.view(200, 1, 2, 2), marginal.log_prob(images)


def test_k5000_bound_is_within_half_a_nat_of_the_exact_log_likelihood() -> None:
    model, images, exact = _linear_gaussian()
    torch.manual_seed(1)
    estimate = iwae_log_likelihood(model, images, samples=5000, batch_size=50)
    assert abs(estimate.mean().item() - exact.mean().item()) < 0.5
    assert (estimate - exact).abs().max().item() < 0.5


def test_bounds_grow_with_k_and_the_elbo_is_lowest() -> None:
    model, images, exact = _linear_gaussian(inflate=4.0)
    torch.manual_seed(2)
    bounds = [iwae_log_likelihood(model, images, samples=k).mean().item() for k in (1, 10, 100, 1000)]
    elbo = elbo_terms(model, images)["elbo"]
    assert elbo == pytest.approx(bounds[0], abs=0.15)
    assert bounds[0] < bounds[1] < bounds[2] < bounds[3] <= exact.mean().item() + 0.02


def test_chunked_bound_matches_the_one_chunk_bound() -> None:
    model, images, exact = _linear_gaussian()
    torch.manual_seed(3)
    whole = iwae_log_likelihood(model, images[:20], samples=2000)
    torch.manual_seed(4)
    chunked = iwae_log_likelihood(model, images[:20], samples=2000, budget=20 * 4 * 7)  # chunks of 7 samples
    # Different draws, the same estimator: equal up to Monte-Carlo noise, and both at the exact value.
    assert abs(whole.mean().item() - chunked.mean().item()) < 0.03
    assert (whole - exact[:20]).abs().max().item() < 0.15 and (chunked - exact[:20]).abs().max().item() < 0.15


def test_iwae_bound_is_log_mean_exp() -> None:
    log_weights = torch.randn(7, 3) * 5
    expected = torch.log(torch.exp(log_weights.double()).mean(0)).float()
    assert torch.allclose(iwae_bound(log_weights), expected, atol=1e-5)


def test_bernoulli_likelihood_and_kl_match_their_definitions() -> None:
    model = VAE(VAEModelConfig(hidden=[8], latent=3), (1, 2, 3))
    images = (torch.rand(5, 1, 2, 3) > 0.5).float()
    logits = torch.randn(4, 5, 6)
    probabilities = torch.sigmoid(logits)
    flat = images.view(5, 6)
    by_hand = (flat * probabilities.log() + (1 - flat) * (1 - probabilities).log()).sum(-1)
    assert torch.allclose(model.log_likelihood(flat, logits), by_hand, atol=1e-5)
    mean, log_var = torch.randn(5, 3), torch.randn(5, 3)
    reference = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl(mean, log_var), reference, atol=1e-5)


def test_log_weights_are_the_three_densities() -> None:
    model = VAE(VAEModelConfig(hidden=[8], latent=3), (1, 2, 3))
    images = (torch.rand(5, 1, 2, 3) > 0.5).float()
    torch.manual_seed(5)
    weights = model.log_weights(images, 4)
    torch.manual_seed(5)
    mean, log_var = model.encode(images)
    z = mean + (0.5 * log_var).exp() * torch.randn(4, 5, 3)
    prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
    posterior = Normal(mean, (0.5 * log_var).exp()).log_prob(z).sum(-1)
    assert torch.allclose(weights.log_prior_ratio, prior - posterior, atol=1e-4)
    assert torch.allclose(weights.log_likelihood, model.log_likelihood(images.view(5, 6), model.decode(z)), atol=1e-5)


def test_active_units_count_latents_the_encoder_uses() -> None:
    model, images, _ = _linear_gaussian()
    assert active_units(model, images) == 2
    with torch.no_grad():
        model.encoder[0].weight[1] = 0.0
    assert active_units(model, images) == 1


def test_conv_network_shapes() -> None:
    model = VAE(VAEModelConfig(network="conv", latent=4, conv_features=16))
    images = torch.rand(3, 1, 28, 28)
    assert model.log_weights(images, 2).total.shape == (2, 3)
    assert model.mean_image(torch.zeros(5, 4)).shape == (5, 1, 28, 28)


def test_the_bound_is_the_same_with_its_progress_lines(monkeypatch, caplog) -> None:
    monkeypatch.setattr("core.progress.DEFAULTS.every_s", 0.0)  # a line at every batch
    caplog.set_level(logging.INFO, logger="rlgen")
    model, images, _ = _linear_gaussian()
    torch.manual_seed(5)
    quiet = iwae_log_likelihood(model, images, samples=50, batch_size=50, budget=4 * 50 * 7, progress=None)
    assert caplog.records == []
    torch.manual_seed(5)
    shown = iwae_log_likelihood(model, images, samples=50, batch_size=50, budget=4 * 50 * 7)
    assert torch.equal(quiet, shown)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("IWAE bound (k=50): 50/200 images (25.0%)") and "eta=" in lines[0]
    assert lines[-1].startswith("IWAE bound (k=50): 200/200 images in ")
