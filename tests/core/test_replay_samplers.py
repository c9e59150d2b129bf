"""The replay samplers on their own: their state round-trips through a checkpoint file to the same draws."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.replay import PrioritizedSampler, Sampler, UniformSampler
from test_replay_nstep import DEVICES

CAPACITY = 60


def _sampler(kind: str, device: str, seed: int) -> Sampler:
    if kind == "uniform":
        return UniformSampler(CAPACITY, torch.device(device), seed)
    return PrioritizedSampler(CAPACITY, torch.device(device), seed, alpha=0.7, beta_steps=20)


def _draw_and_update(sampler: Sampler, step: int, device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One draw and, for a prioritized sampler, its priority update with TD errors fixed by `step`."""
    indices, weights = sampler.sample(16)
    if isinstance(sampler, PrioritizedSampler):
        td_errors = torch.randn(16, generator=torch.Generator().manual_seed(step)) * (step + 1)
        sampler.update_priorities(indices, td_errors.to(device))
    return indices, weights


def _same_draw(first: tuple, second: tuple) -> None:
    assert torch.equal(first[0], second[0])
    assert (first[1] is None and second[1] is None) or torch.equal(first[1], second[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
def test_a_restored_sampler_draws_and_weighs_as_the_saved_one(tmp_path: Path, device: str, kind: str) -> None:
    sampler = _sampler(kind, device, seed=0)
    positions = torch.arange(CAPACITY, device=device)
    sampler.set_sampleable(positions, positions % 4 == 0)
    for step in range(5):
        _draw_and_update(sampler, step, device)
    torch.save(sampler.state_dict(), tmp_path / "sampler.pt")
    restored = _sampler(kind, device, seed=99)
    restored.load_state_dict(torch.load(tmp_path / "sampler.pt", weights_only=True, map_location="cpu"))
    assert torch.equal(restored.tree.leaves, sampler.tree.leaves)
    for step in range(5, 30):  # past the end of the beta schedule
        if isinstance(sampler, PrioritizedSampler):
            assert restored.beta() == sampler.beta()
        _same_draw(_draw_and_update(sampler, step, device), _draw_and_update(restored, step, device))
    # Newly sampleable transitions get the same weight (for priorities: the largest seen before the save and after).
    for target in (sampler, restored):
        target.set_sampleable(positions[::4], torch.zeros(CAPACITY // 4, dtype=torch.bool, device=device))
    assert torch.equal(restored.tree.leaves, sampler.tree.leaves)
    _same_draw(sampler.sample(16), restored.sample(16))


def test_a_uniform_sampler_loads_the_state_memories_saved_before_samplers_were_parts() -> None:
    """Such checkpoints also hold a uniform memory's unused max priority and draw count."""
    sampler = _sampler("uniform", "cpu", seed=0)
    sampler.set_sampleable(torch.arange(CAPACITY), torch.zeros(CAPACITY, dtype=torch.bool))
    sampler.sample(8)
    state = sampler.state_dict() | {"max_priority": torch.ones(()), "samples_drawn": 0}
    restored = _sampler("uniform", "cpu", seed=99)
    restored.load_state_dict(state)
    _same_draw(sampler.sample(16), restored.sample(16))


def test_sampler_state_holds_the_tree_itself_not_copies() -> None:
    sampler = _sampler("prioritized", "cpu", seed=0)
    state = sampler.state_dict()
    assert state["tree"]["leaves"].data_ptr() == sampler.tree.leaves.data_ptr()
    assert set(state) == {"tree", "generator", "max_priority", "samples_drawn"}
