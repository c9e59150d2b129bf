"""Proportional prioritized replay: the sum tree, sampling frequencies, importance weights, new priorities."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from core.replay import ReplayMemory, SumTree
from test_replay_nstep import DEVICES, ToyVectorEnv, run


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 4099])
def test_sum_tree_root_is_the_sum_of_its_leaves_after_many_updates(size: int) -> None:
    """Random batches (with repeated indices) of weights spanning ten orders of magnitude, zeros included."""
    tree = SumTree(size, torch.device("cpu"))
    rng = torch.Generator().manual_seed(size)
    for _ in range(300):
        indices = torch.randint(size, (17,), generator=rng)
        scales = 10.0 ** torch.randint(-6, 4, (17,), generator=rng) * (torch.rand(17, generator=rng) > 0.2)
        values = torch.rand(17, generator=rng) * scales
        tree.set(indices, values)
    leaves = tree.leaves[:size].double()
    assert torch.allclose(tree.total(), leaves.sum(), rtol=1e-12, atol=0)
    blocks = tree.leaves.view(tree.num_blocks, tree.fanout)
    assert torch.equal(tree.block_sums, blocks.sum(dim=1, dtype=torch.float64))
    positive = leaves[leaves > 0]
    assert tree.min_positive().item() == (positive.min().item() if positive.numel() else float("inf"))


def test_sum_tree_samples_in_proportion_and_never_a_zero_leaf() -> None:
    tree = SumTree(5000, torch.device("cpu"))
    weights = torch.rand(5000, generator=torch.Generator().manual_seed(0)) ** 3
    weights[torch.arange(0, 5000, 3)] = 0.0  # a third of the leaves can never be drawn
    tree.set(torch.arange(5000), weights)
    counts = torch.bincount(tree.sample(500_000, torch.Generator().manual_seed(1)), minlength=5000).double()
    assert counts[weights == 0].sum() == 0
    expected = weights.double() / weights.double().sum() * counts.sum()
    drawn = weights > 0
    _, p_value = stats.chisquare(counts[drawn].numpy(), expected[drawn].numpy())
    assert p_value > 1e-3


def _filled(device: str, alpha: float = 0.6, capacity: int = 3 * 60) -> ReplayMemory:
    memory = ReplayMemory(
        capacity, 3, (4,), torch.float32, device, n_step=2, prioritized=True, alpha=alpha, beta_steps=100
    )
    run(memory, ToyVectorEnv(num_envs=3, pixels=False, seed=3), steps=100, check_every=1000)
    return memory


def _sampleable(memory: ReplayMemory) -> torch.Tensor:
    return torch.nonzero(memory.tree.leaves > 0).flatten()


@pytest.mark.parametrize("device", DEVICES)
def test_sampling_frequencies_follow_priority_to_the_alpha(device: str) -> None:
    memory = _filled(device, alpha=0.7)
    valid = _sampleable(memory)
    td_errors = torch.rand(valid.numel(), generator=torch.Generator().manual_seed(2)) * 5
    memory.update_priorities(valid, td_errors.to(device))
    counts = torch.zeros(memory.capacity, dtype=torch.float64)
    for _ in range(50):
        counts += torch.bincount(memory.sample(4000).indices.cpu(), minlength=memory.capacity).double()
    valid = valid.cpu()
    assert counts.sum() == counts[valid].sum()  # nothing outside the sampleable transitions
    p = (td_errors.double().abs() + memory.eps) ** 0.7
    expected = p / p.sum() * counts.sum()
    _, p_value = stats.chisquare(counts[valid].numpy(), expected.numpy())
    assert p_value > 1e-3


def test_importance_weights_follow_the_formula_and_beta_anneals() -> None:
    memory = _filled("cpu")
    valid = _sampleable(memory)
    td_errors = torch.linspace(0.1, 3.0, valid.numel())
    memory.update_priorities(valid, td_errors)
    probabilities = torch.zeros(memory.capacity, dtype=torch.float64)
    probabilities[valid] = (td_errors.double() + memory.eps) ** 0.6
    probabilities /= probabilities.sum()
    for calls in range(120):
        beta = 0.4 + 0.6 * min(1.0, calls / 100)
        assert memory.beta() == pytest.approx(beta)
        batch = memory.sample(64)
        n = valid.numel()
        weights = (n * probabilities[batch.indices]) ** -beta
        max_weight = (n * probabilities[valid].min()) ** -beta
        torch.testing.assert_close(batch.weights.double(), weights / max_weight, rtol=1e-5, atol=0)


def test_new_transitions_get_the_largest_priority_seen() -> None:
    memory = _filled("cpu", alpha=0.5)
    valid = _sampleable(memory)
    memory.update_priorities(valid, torch.full((valid.numel(),), 0.25))
    memory.update_priorities(valid[:1], torch.tensor([-8.0]))  # |td| counts
    run_more = ToyVectorEnv(num_envs=3, pixels=False, seed=9)
    obs = run_more.reset()
    memory.add_reset(obs)
    for _ in range(5):
        next_obs, reward, terminated, first = run_more.step(np.zeros(3, np.int64))
        memory.add(np.zeros(3, np.int64), reward, terminated, next_obs, first)
    newest = set(_sampleable(memory).tolist()) - set(valid.tolist())
    assert newest
    for index in newest:
        assert memory.tree.leaves[index].item() == pytest.approx((8.0 + memory.eps) ** 0.5)


def test_priority_updates_never_revive_an_overwritten_transition() -> None:
    memory = _filled("cpu")
    batch = memory.sample(32)
    env = ToyVectorEnv(num_envs=3, pixels=False, seed=4)
    memory.add_reset(env.reset())
    for _ in range(memory.rows):  # one whole lap: everything sampled above is gone or replaced
        next_obs, reward, terminated, first = env.step(np.zeros(3, np.int64))
        memory.add(np.zeros(3, np.int64), reward, terminated, next_obs, first)
    before = memory.tree.leaves.clone()
    memory.update_priorities(batch.indices, torch.ones(32))
    changed = memory.tree.leaves != before
    assert not (changed & (before == 0)).any()


def test_uniform_memory_refuses_priorities_and_returns_unit_weights() -> None:
    memory = ReplayMemory(3 * 40, 3, (4,), torch.float32, "cpu", n_step=1)
    run(memory, ToyVectorEnv(num_envs=3, pixels=False, seed=5), steps=60, check_every=1000)
    batch = memory.sample(16)
    assert torch.equal(batch.weights, torch.ones(16))
    with pytest.raises(ValueError, match="prioritized=False"):
        memory.update_priorities(batch.indices, torch.ones(16))
