"""The DBN's variational bound against exact enumeration of a tiny two-layer net, its propagation and sampling,
and per-layer settings from a YAML list."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import generative.rbm_task  # noqa: F401  (registers the dbn task)
from core.config import load_config
from core.task import schema_for
from generative.dbn import DBN, DBNLayerConfig, layer_train_config
from generative.metrics.ais import exact_log_partition
from generative.rbm import RBM, RBMTrainConfig

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


def _states(units: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=units)), dtype=torch.float64)


def _rbm(visible: int, hidden: int, seed: int) -> RBM:
    generator = torch.Generator().manual_seed(seed)
    return RBM(torch.randn(visible, hidden, generator=generator, dtype=torch.float64),
               torch.randn(visible, generator=generator, dtype=torch.float64),
               torch.randn(hidden, generator=generator, dtype=torch.float64))


def _bernoulli_log_probability(states: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    return (states * probabilities.log() + (1 - states) * (1 - probabilities).log()).sum(-1)


def test_one_layer_bound_is_the_rbm_log_likelihood() -> None:
    rbm = _rbm(6, 4, seed=0)
    images = _states(6)
    log_z = exact_log_partition(rbm).item()
    assert torch.allclose(DBN([rbm]).log_likelihood_bound(images, log_z), -rbm.free_energy(images) - log_z)


def test_two_layer_bound_is_unbiased_for_its_enumerated_expectation_which_lies_below_log_p() -> None:
    bottom, top = _rbm(6, 5, seed=1), _rbm(5, 4, seed=2)
    dbn = DBN([bottom, top])
    image = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    hidden = _states(5)
    log_z = exact_log_partition(top).item()
    log_prior = -top.free_energy(hidden) - log_z
    log_likelihood = _bernoulli_log_probability(image, bottom.visible_probabilities(hidden))
    log_p = torch.logsumexp(log_likelihood + log_prior, dim=0).item()
    posterior = bottom.hidden_probabilities(image)
    log_q = _bernoulli_log_probability(hidden, posterior)
    expected_bound = (log_q.exp() * (log_likelihood + log_prior - log_q)).sum().item()
    assert expected_bound < log_p
    estimates = dbn.log_likelihood_bound(image.repeat(100_000, 1), log_z, torch.Generator().manual_seed(3))
    assert estimates.mean().item() == pytest.approx(expected_bound, abs=4 * estimates.std().item() / 300)


def test_up_propagates_probabilities_or_samples_and_sample_passes_down() -> None:
    dbn = DBN([_rbm(6, 5, seed=4), _rbm(5, 3, seed=5)])
    images = _states(6)[:8]
    assert torch.allclose(dbn.up(images, 1), dbn.layers[0].hidden_probabilities(images))
    drawn = dbn.up(images, 2, sample=True, generator=torch.Generator().manual_seed(6))
    assert drawn.shape == (8, 3) and set(drawn.unique().tolist()) <= {0.0, 1.0}
    samples = dbn.sample(torch.ones(8, 5, dtype=torch.float64), 10, torch.Generator().manual_seed(7))
    assert samples.shape == (8, 6) and 0 <= samples.min() and samples.max() <= 1
    means = dbn.mean_input(images, 1, batch_size=3)
    assert torch.allclose(means, dbn.layers[0].hidden_probabilities(images).mean(0))


def test_layers_from_a_yaml_list_override_the_shared_training_settings() -> None:
    config = load_config(ROOT / "experiments" / "dbn_mnist.yaml",
                         ["model.layers=[{hidden: 7, lr: 0.3, method: pcd}, {hidden: 5, epochs: 2}]"], schema_for)
    first, second = config.model.layers
    assert (first.hidden, second.hidden) == (7, 5)
    trained = layer_train_config(config.train, first)
    assert (trained.lr, trained.method, trained.epochs) == (0.3, "pcd", config.train.epochs)
    assert layer_train_config(config.train, second).epochs == 2
    paper = load_config(ROOT / "experiments" / "dbn_mnist.yaml", [], schema_for)
    assert [layer.hidden for layer in paper.model.layers] == [500, 500, 2000]
    assert layer_train_config(RBMTrainConfig(lr=0.1), DBNLayerConfig()).lr == 0.1
