"""AIS against exact enumeration on a tiny RBM, the paper's schedule, exact log Z over either layer, and the
pseudo-likelihood against its definition."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from generative.metrics import ais
from generative.metrics.ais import (annealing_schedule, ais_log_partition, base_rate_biases, exact_log_partition,
                                    mean_log_likelihood, mean_reconstruction_error, pseudo_log_likelihood)
from generative.rbm import RBM

torch.set_num_threads(1)


def _tiny_rbm(seed: int = 0) -> RBM:
    """20 visible, 12 hidden units with weights of a trained MNIST RBM's scale (std 0.5, biases around -1 and 0),
    so the model is far from the base rate and the annealing has work to do."""
    generator = torch.Generator().manual_seed(seed)
    return RBM(torch.randn(20, 12, generator=generator) * 0.5, torch.randn(20, generator=generator) - 1.0,
               torch.randn(12, generator=generator) * 0.5)


def test_schedule_is_salakhutdinov_and_murrays() -> None:
    betas = annealing_schedule()
    assert betas.numel() == 14_501 and betas[0] == 0 and betas[-1] == 1
    steps = betas.diff()
    assert torch.allclose(steps[:500], torch.tensor(1e-3, dtype=torch.float64))
    assert torch.allclose(steps[500:4500], torch.tensor(1e-4, dtype=torch.float64))
    assert torch.allclose(steps[4500:], torch.tensor(1e-5, dtype=torch.float64))
    coarse = annealing_schedule(145)
    assert coarse.numel() == 146 and torch.all(coarse.diff() > 0)
    assert coarse[5].item() == pytest.approx(0.5) and coarse[45].item() == pytest.approx(0.9)


def test_ais_log_z_within_005_nats_of_exact_and_the_test_log_likelihoods_agree() -> None:
    rbm = _tiny_rbm()
    generator = torch.Generator().manual_seed(1)
    data = (torch.rand(500, 20, generator=generator) < torch.sigmoid(rbm.visible_bias)).float()
    exact = exact_log_partition(rbm).item()
    estimate = ais_log_partition(rbm, base_rate_biases(data.mean(0)), runs=100, generator=generator)
    assert abs(estimate.log_z - exact) < 0.05
    assert estimate.low < exact < estimate.high and estimate.high - estimate.low < 0.2
    assert (estimate.runs, estimate.temperatures) == (100, 14_500)
    exact_loglik = mean_log_likelihood(rbm, data, exact)
    assert abs(mean_log_likelihood(rbm, data, estimate.log_z) - exact_loglik) < 0.05
    assert -20 * math.log(2) < exact_loglik < 0


def test_centered_rbm_has_the_log_z_of_its_standard_form() -> None:
    rbm = _tiny_rbm(2)
    centered = RBM(rbm.weights, rbm.visible_bias.clone(), rbm.hidden_bias.clone(),
                   torch.full((20,), 0.3), torch.full((12,), 0.5))
    standard = RBM(*centered.standard_form())
    assert exact_log_partition(centered).item() == pytest.approx(exact_log_partition(standard).item(), abs=1e-9)
    base = base_rate_biases(torch.full((20,), 0.3))
    first = ais_log_partition(centered, base, runs=10, temperatures=300, generator=torch.Generator().manual_seed(3))
    second = ais_log_partition(standard, base, runs=10, temperatures=300, generator=torch.Generator().manual_seed(3))
    assert first.log_z == pytest.approx(second.log_z, abs=1e-3)


def test_exact_log_z_over_visible_units_chunked_matches_over_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(4)
    wide = RBM(torch.randn(9, 30, generator=generator), torch.randn(9, generator=generator),
               torch.randn(30, generator=generator))  # enumerates the 2^9 visible states
    transposed = RBM(wide.weights.T.contiguous(), wide.hidden_bias, wide.visible_bias)  # enumerates 2^9 hiddens
    reference = exact_log_partition(transposed).item()
    assert exact_log_partition(wide).item() == pytest.approx(reference, abs=1e-9)
    monkeypatch.setattr(ais, "ENUMERATION_CHUNK", 100)
    assert exact_log_partition(wide).item() == pytest.approx(reference, abs=1e-9)
    with pytest.raises(ValueError, match="<= 20 units"):
        exact_log_partition(RBM(torch.zeros(21, 22), torch.zeros(21), torch.zeros(22)))


def test_pseudo_likelihood_averages_to_the_sum_of_one_bit_conditionals() -> None:
    """scikit-learn's score: D log sigmoid(F(v with bit i flipped) - F(v)) for a random i; its mean over i is
    sum_i log p(v_i | v_-i), computed here from the enumerated distribution."""
    rbm = _tiny_rbm(5)
    generator = torch.Generator().manual_seed(6)
    image = (torch.rand(1, 20, generator=generator) < 0.4).float()
    free_energy = rbm.free_energy(image)
    conditionals = 0.0
    for bit in range(20):
        flipped = image.clone()
        flipped[0, bit] = 1 - flipped[0, bit]
        conditionals += torch.nn.functional.logsigmoid(rbm.free_energy(flipped) - free_energy).item()
    estimate = pseudo_log_likelihood(rbm, image.repeat(40_000, 1), generator)
    assert estimate == pytest.approx(conditionals, abs=0.05 * abs(conditionals) + 0.05)
    assert mean_reconstruction_error(rbm, image, generator) >= 0


def test_pseudo_likelihood_one_bit_conditional_is_exact() -> None:
    """On one-bit data the flipped bit is always bit 0, so the score is log p(v_0 | nothing) = log p(v)."""
    rbm = RBM(torch.randn(1, 3, generator=torch.Generator().manual_seed(7)), torch.zeros(1), torch.zeros(3))
    states = torch.tensor([[0.0], [1.0]])
    log_p = -rbm.free_energy(states) - exact_log_partition(rbm).float()
    for state, expected in zip(states, log_p):
        assert pseudo_log_likelihood(rbm, state.unsqueeze(0)) == pytest.approx(expected.item(), abs=1e-5)


def test_ais_is_the_same_with_its_progress_lines(monkeypatch, caplog) -> None:
    monkeypatch.setattr("core.progress.DEFAULTS.every_s", 0.0)  # a line at every temperature
    caplog.set_level(logging.INFO, logger="rlgen")
    rbm, base = _tiny_rbm(6), base_rate_biases(torch.full((20,), 0.3))
    quiet = ais_log_partition(rbm, base, runs=5, temperatures=30, generator=torch.Generator().manual_seed(7),
                              progress=None)
    assert caplog.records == []
    shown = ais_log_partition(rbm, base, runs=5, temperatures=30, generator=torch.Generator().manual_seed(7))
    assert shown == quiet
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 30 and lines[0].startswith("AIS (5 runs): 1/30 temperatures (3.3%)")
    assert lines[-1].startswith("AIS (5 runs): 30/30 temperatures in ")


def test_weight_spread_figures_match_their_definitions() -> None:
    log_weights = torch.tensor([0.0, math.log(3.0), -2.0, 1.5], dtype=torch.float64)
    estimate = ais._estimate(log_weights, log_z_base=10.0, temperatures=5)
    weights = log_weights.exp()
    assert estimate.log_z == pytest.approx(10.0 + math.log(weights.mean().item()), abs=1e-12)
    assert estimate.log_weight_std == pytest.approx(log_weights.std().item(), abs=1e-12)
    assert estimate.effective_runs == pytest.approx((weights.sum() ** 2 / (weights ** 2).sum()).item(), abs=1e-12)
    # Equal weights count every run; one weight far above the rest counts as one run.
    assert ais._estimate(torch.zeros(8, dtype=torch.float64), 0.0, 5).effective_runs == pytest.approx(8.0)
    assert ais._estimate(torch.tensor([50.0, 0.0, 0.0], dtype=torch.float64), 0.0, 5).effective_runs == \
        pytest.approx(1.0, abs=1e-12)
