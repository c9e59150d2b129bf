"""The RBM's free energy, conditionals and gradient statistics against brute-force enumeration of tiny models,
in the ordinary and the centered parameterisation."""
from __future__ import annotations

import itertools

import pytest
import torch

from generative.metrics.ais import exact_log_partition
from generative.rbm import (RBM, MomentumUpdate, RBMConfig, gradient_statistics, logit, phase_statistics,
                            reconstruction_error)

torch.set_num_threads(1)


def _all_states(units: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=units)), dtype=torch.float64)


def _tiny_rbm(visible: int, hidden: int, centered: bool, seed: int = 0, scale: float = 1.0) -> RBM:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(visible, hidden, generator=generator, dtype=torch.float64) * scale
    visible_bias = torch.randn(visible, generator=generator, dtype=torch.float64)
    hidden_bias = torch.randn(hidden, generator=generator, dtype=torch.float64)
    if not centered:
        return RBM(weights, visible_bias, hidden_bias)
    offsets = (torch.rand(visible, generator=generator, dtype=torch.float64),
               torch.rand(hidden, generator=generator, dtype=torch.float64))
    return RBM(weights, visible_bias, hidden_bias, *offsets)


def _centered_energy(rbm: RBM, visible: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """E(v, h) for every pair of rows, `[visible rows, hidden rows]`, straight from the definition."""
    v, h = visible - rbm.visible_offset, hidden - rbm.hidden_offset
    return -(v @ rbm.weights @ h.T) - (v @ rbm.visible_bias).unsqueeze(1) - (h @ rbm.hidden_bias).unsqueeze(0)


def _exact_log_probabilities(rbm: RBM, visible: torch.Tensor) -> torch.Tensor:
    """log p(v) by summing exp(-E) over every joint state."""
    hidden = _all_states(rbm.hidden)
    log_joint = -_centered_energy(rbm, _all_states(rbm.visible), hidden)
    log_z = torch.logsumexp(log_joint.flatten(), dim=0)
    return torch.logsumexp(-_centered_energy(rbm, visible, hidden), dim=1) - log_z


@pytest.mark.parametrize("centered", [False, True])
def test_free_energy_and_log_z_match_brute_force_marginalisation(centered: bool) -> None:
    rbm = _tiny_rbm(6, 5, centered)
    visible = _all_states(6)
    log_probabilities = _exact_log_probabilities(rbm, visible)
    assert torch.allclose(-rbm.free_energy(visible) - exact_log_partition(rbm), log_probabilities, atol=1e-10)
    if not centered:  # the ordinary free energy is -log sum_h exp(-E(v, h)) itself, not just up to a constant
        free_energy = -torch.logsumexp(-_centered_energy(rbm, visible, _all_states(5)), dim=1)
        assert torch.allclose(rbm.free_energy(visible), free_energy, atol=1e-10)


@pytest.mark.parametrize("centered", [False, True])
def test_conditionals_match_the_joint(centered: bool) -> None:
    rbm = _tiny_rbm(5, 4, centered, seed=1)
    visible, hidden = _all_states(5), _all_states(4)
    joint = torch.softmax(-_centered_energy(rbm, visible, hidden).flatten(), dim=0).view(32, 16)
    hidden_given_visible = joint / joint.sum(dim=1, keepdim=True)
    assert torch.allclose(rbm.hidden_probabilities(visible), hidden_given_visible @ hidden, atol=1e-12)
    visible_given_hidden = joint / joint.sum(dim=0, keepdim=True)
    assert torch.allclose(rbm.visible_probabilities(hidden), visible_given_hidden.T @ visible, atol=1e-12)


def _exact_gradient(rbm: RBM, data: torch.Tensor) -> list[torch.Tensor]:
    """d mean log p(data) / d(W, b, c) by autograd through exact enumeration."""
    parameters = [rbm.weights.clone().requires_grad_(), rbm.visible_bias.clone().requires_grad_(),
                  rbm.hidden_bias.clone().requires_grad_()]
    model = RBM(*parameters, rbm.visible_offset, rbm.hidden_offset)
    mean_log_likelihood = -model.free_energy(data).mean() - exact_log_partition(model)
    return list(torch.autograd.grad(mean_log_likelihood, parameters))


def _model_distribution(rbm: RBM) -> tuple[torch.Tensor, torch.Tensor]:
    states = _all_states(rbm.visible)
    return states, torch.softmax(-rbm.free_energy(states), dim=0)


@pytest.mark.parametrize("centered", [False, True])
def test_positive_minus_exact_negative_phase_is_the_exact_gradient(centered: bool) -> None:
    rbm = _tiny_rbm(10, 6, centered, seed=2)
    data = (torch.rand(40, 10, generator=torch.Generator().manual_seed(3)) < 0.3).double()
    states, probabilities = _model_distribution(rbm)
    positive = phase_statistics(rbm, data)
    negative = phase_statistics(rbm, states, weights=probabilities)
    written = [positive.weights - negative.weights, positive.visible - negative.visible,
               positive.hidden - negative.hidden]
    for mine, exact in zip(written, _exact_gradient(rbm, data)):
        assert torch.allclose(mine, exact, atol=1e-10)


@pytest.mark.parametrize("centered", [False, True])
def test_cd1_gradient_from_model_distributed_starts_matches_the_exact_gradient_in_expectation(centered: bool) -> None:
    """The negative phase after one Gibbs step from exact model samples is unbiased (the chain is stationary),
    so the CD-1 estimate averaged over 200,000 chains lies within 0.01 of the exact gradient; the standard
    error of each entry is below 1.2e-3, so 0.01 is over 8 standard errors."""
    rbm = _tiny_rbm(10, 6, centered, seed=4, scale=0.7)
    generator = torch.Generator().manual_seed(5)
    data = (torch.rand(40, 10, generator=generator) < 0.3).double()
    states, probabilities = _model_distribution(rbm)
    starts = states[torch.multinomial(probabilities, 200_000, replacement=True, generator=generator)]
    after_one_step = rbm.gibbs(starts, 1, generator)
    estimate = gradient_statistics(rbm, data, after_one_step)
    exact = _exact_gradient(rbm, data)
    for mine, truth in zip(estimate[:3], exact):
        assert (mine - truth).abs().max() < 0.01
    # The same test has power: CD-1 started at the data is biased by far more than 0.01 here.
    biased = gradient_statistics(rbm, data, rbm.gibbs(data.repeat(5000, 1), 1, generator))
    assert (biased.weights - exact[0]).abs().max() > 0.03


def test_initialisation_follows_the_practical_guide() -> None:
    means = torch.tensor([0.0, 0.25, 0.5, 1.0])
    rbm = RBM.initialise(means, RBMConfig(hidden=2000, init_std=0.01), torch.Generator().manual_seed(0))
    assert torch.allclose(rbm.visible_bias, logit(means, 1e-3))
    assert torch.allclose(rbm.visible_bias[1], torch.log(torch.tensor(1 / 3)))
    assert torch.isfinite(rbm.visible_bias).all() and rbm.hidden_bias.abs().max() == 0
    assert abs(rbm.weights.std().item() - 0.01) < 0.001
    centered = RBM.initialise(means, RBMConfig(hidden=3, centered=True))
    assert torch.allclose(centered.visible_offset, means.clamp(1e-3, 1 - 1e-3))
    assert torch.all(centered.hidden_offset == 0.5)


@pytest.mark.parametrize("centered", [False, True])
def test_update_moves_with_momentum_and_recentering_keeps_the_distribution(centered: bool) -> None:
    rbm = _tiny_rbm(8, 5, centered, seed=6)
    data = (torch.rand(30, 8, generator=torch.Generator().manual_seed(7)) < 0.5).double()
    gradient = gradient_statistics(rbm, data, rbm.gibbs(data, 1, torch.Generator().manual_seed(8)))
    update = MomentumUpdate(rbm)
    before = rbm.weights.clone()
    update.apply(rbm, gradient, lr=0.1, momentum=0.5, weight_decay=0.01)
    first = 0.1 * (gradient.weights - 0.01 * before)
    assert torch.allclose(rbm.weights, before + first)
    middle = rbm.weights.clone()
    update.apply(rbm, gradient, lr=0.1, momentum=0.5, weight_decay=0.01)
    assert torch.allclose(rbm.weights, middle + 0.5 * first + 0.1 * (gradient.weights - 0.01 * middle))

    states = _all_states(8)
    log_probabilities = -rbm.free_energy(states) - exact_log_partition(rbm)
    update.velocity = {name: torch.zeros_like(tensor) for name, tensor in update.velocity.items()}
    offsets = rbm.visible_offset.clone(), rbm.hidden_offset.clone()
    update.apply(rbm, gradient, lr=0.0, momentum=0.0, weight_decay=0.0, centering_rate=0.3)
    assert torch.allclose(rbm.visible_offset, offsets[0] + 0.3 * (gradient.data_visible - offsets[0]))
    assert torch.allclose(rbm.hidden_offset, offsets[1] + 0.3 * (gradient.data_hidden - offsets[1]))
    assert torch.allclose(-rbm.free_energy(states) - exact_log_partition(rbm), log_probabilities, atol=1e-10)


def test_gibbs_sampling_reaches_the_model_distribution() -> None:
    rbm = _tiny_rbm(4, 3, centered=True, seed=9)
    states, probabilities = _model_distribution(rbm)
    generator = torch.Generator().manual_seed(10)
    samples = rbm.gibbs(torch.zeros(50_000, 4, dtype=torch.float64), 20, generator)
    codes = (samples * 2 ** torch.arange(3, -1, -1, dtype=torch.float64)).sum(1).long()
    frequencies = torch.bincount(codes, minlength=16).double() / 50_000
    assert (frequencies - probabilities).abs().max() < 0.01


def test_reconstruction_error_is_a_mean_summed_square() -> None:
    rbm = _tiny_rbm(6, 4, centered=False, seed=11)
    data = _all_states(6)
    generator = torch.Generator().manual_seed(12)
    error = reconstruction_error(rbm, data, torch.ones(64, 4, dtype=torch.float64), generator)
    expected = (data - rbm.visible_probabilities(torch.ones(1, 4, dtype=torch.float64))).square().sum(1).mean()
    assert torch.allclose(error, expected)
