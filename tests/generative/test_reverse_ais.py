"""RAISE against exact enumeration: with few temperatures its weights average to the annealing model's exact
marginal p_ann(v) (computed by multiplying the Gibbs kernels), and with many it comes within a small margin
below the RBM's exact log-likelihood."""
from __future__ import annotations

import itertools

import torch

from generative.metrics.ais import annealing_schedule, base_rate_biases, exact_log_partition, mean_log_likelihood
from generative.metrics.reverse_ais import reverse_ais_log_likelihoods
from generative.rbm import RBM

torch.set_num_threads(1)


def _states(units: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=units)), dtype=torch.float64)


def _gibbs_kernel(rbm: RBM, base: torch.Tensor, beta: float) -> torch.Tensor:
    """T_beta[v, v'] = sum_h p_beta(h | v) p_beta(v' | h) over every visible and hidden state, in float64."""
    weights, visible_bias, hidden_bias = (tensor.double() for tensor in rbm.standard_form())
    visibles, hiddens = _states(rbm.visible), _states(rbm.hidden)
    on_hidden = torch.sigmoid(beta * (hidden_bias + visibles @ weights))  # [V, units]
    p_hidden = (hiddens[None] * on_hidden[:, None] + (1 - hiddens[None]) * (1 - on_hidden[:, None])).prod(-1)
    on_visible = torch.sigmoid((1 - beta) * base.double() + beta * (visible_bias + hiddens @ weights.T))  # [H, units]
    p_visible = (visibles[None] * on_visible[:, None] + (1 - visibles[None]) * (1 - on_visible[:, None])).prod(-1)
    return p_hidden @ p_visible


def test_raise_weights_average_to_the_annealing_models_exact_marginal() -> None:
    generator = torch.Generator().manual_seed(0)
    rbm = RBM(torch.randn(6, 4, generator=generator) * 1.5, torch.randn(6, generator=generator),
              torch.randn(4, generator=generator))
    base = base_rate_biases(torch.full((6,), 0.3))
    temperatures = 3
    # The forward annealing model: v_0 from the base rate, then one Gibbs sweep at each beta_1 ... beta_K.
    visibles = _states(6)
    on = torch.sigmoid(base.double())
    p_ann = (visibles * on + (1 - visibles) * (1 - on)).prod(-1)
    for beta in annealing_schedule(temperatures)[1:].tolist():
        p_ann = p_ann @ _gibbs_kernel(rbm, base, beta)
    exact_p = torch.exp(-rbm.free_energy(visibles.float()).double() - exact_log_partition(rbm))

    # One chain per copy of each state, so the weights' own spread gives each mean its standard error.
    copies = 20_000
    weights = reverse_ais_log_likelihoods(rbm, base, visibles.float().repeat_interleave(copies, dim=0), chains=1,
                                          temperatures=temperatures, generator=torch.Generator().manual_seed(1),
                                          progress=None).exp().view(-1, copies)
    means, errors = weights.mean(1), weights.std(1) / copies ** 0.5
    assert torch.all((means - p_ann).abs() < 4.5 * errors)
    assert abs(means.sum().item() - 1.0) < 4.5 * errors.square().sum().sqrt().item()
    assert torch.any((exact_p - p_ann).abs() > 8 * errors)  # the test tells p_ann from the RBM's own p(v)


def test_raise_with_many_temperatures_lies_just_below_the_exact_log_likelihood() -> None:
    generator = torch.Generator().manual_seed(2)
    rbm = RBM(torch.randn(20, 12, generator=generator) * 0.5, torch.randn(20, generator=generator) - 1.0,
              torch.randn(12, generator=generator) * 0.5)
    data = (torch.rand(200, 20, generator=generator) < torch.sigmoid(rbm.visible_bias)).float()
    exact = mean_log_likelihood(rbm, data, exact_log_partition(rbm).item())
    estimates = reverse_ais_log_likelihoods(rbm, base_rate_biases(data.mean(0)), data, chains=1, temperatures=2000,
                                            generator=torch.Generator().manual_seed(3), progress=None)
    assert estimates.shape == (200,)
    assert exact - 0.1 < estimates.mean().item() < exact + 0.02
