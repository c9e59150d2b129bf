"""DrQ's random shift is a crop of the replicate-padded stack, per sample, reproducible, checkpointed."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from agents.augmentation import INTENSITY_CLIP, INTENSITY_SCALE, RandomShift, make_augmentation
from agents.dqn import Batch, DQNAgent, DQNAgentConfig
from core.errors import UserError
from core.optim import OptimConfig

PAD = 4


def _stacks(batch: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8, generator=generator)


def _crops_of_padded(images: torch.Tensor, shifted: torch.Tensor, pad: int) -> list[tuple[int, int]]:
    """For each sample, the (top, left) of the crop of its replicate-padded image that equals `shifted`,
    found by trying every crop one sample at a time (the naive reference); fails where none matches."""
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="replicate")
    height, width = images.shape[-2:]
    positions = []
    for index in range(images.shape[0]):
        matches = [(top, left) for top in range(2 * pad + 1) for left in range(2 * pad + 1)
                   if torch.equal(padded[index, :, top:top + height, left:left + width], shifted[index].float())]
        assert matches, f"sample {index} is no crop of its padded image"
        positions.append(matches[0])
    return positions


def test_each_shifted_stack_is_a_crop_of_its_replicate_padded_input() -> None:
    images = _stacks()
    shifted = RandomShift(torch.device("cpu"), seed=1, pad=PAD)(images)
    assert shifted.dtype == torch.uint8 and shifted.shape == images.shape
    positions = _crops_of_padded(images, shifted, PAD)
    assert len(set(positions)) > 1  # every sample draws its own shift


def test_pad_zero_is_the_identity() -> None:
    images = _stacks()
    assert torch.equal(RandomShift(torch.device("cpu"), seed=1, pad=0)(images), images)


def test_shifts_are_deterministic_under_a_seed_and_differ_across_seeds() -> None:
    images = _stacks()
    first = RandomShift(torch.device("cpu"), seed=3)(images)
    assert torch.equal(first, RandomShift(torch.device("cpu"), seed=3)(images))
    assert not torch.equal(first, RandomShift(torch.device("cpu"), seed=4)(images))


def test_all_offsets_up_to_the_pad_occur() -> None:
    images = _stacks(batch=400)[:, :1, :12, :12].contiguous()
    positions = _crops_of_padded(images, RandomShift(torch.device("cpu"), seed=0, pad=2)(images), 2)
    assert {top for top, _ in positions} == set(range(5)) and {left for _, left in positions} == set(range(5))


def test_intensity_scales_each_sample_within_the_clip() -> None:
    images = torch.full((256, 4, 84, 84), 255, dtype=torch.uint8)
    augmented = RandomShift(torch.device("cpu"), seed=0, intensity=True)(images)
    assert augmented.dtype == torch.float32
    factors = augmented.flatten(1)
    assert torch.allclose(factors, factors[:, :1].expand_as(factors))  # one factor per sample
    limit = INTENSITY_SCALE * INTENSITY_CLIP
    assert factors.min() >= 1 - limit - 1e-6 and factors.max() <= 1 + limit + 1e-6
    assert factors[:, 0].std() == pytest.approx(INTENSITY_SCALE, rel=0.2)


def test_unknown_name_and_vector_observations_are_user_errors() -> None:
    with pytest.raises(UserError, match="shift_intensity"):
        make_augmentation("shfit", (4, 84, 84), torch.device("cpu"), seed=0)
    with pytest.raises(UserError, match="images"):
        make_augmentation("shift", (4,), torch.device("cpu"), seed=0)
    assert make_augmentation("none", (4,), torch.device("cpu"), seed=0) is None


def _agent(augmentation: str) -> DQNAgent:
    torch.manual_seed(0)
    return DQNAgent(DQNAgentConfig(augmentation=augmentation), OptimConfig(name="adam", lr=1e-4), (4, 84, 84), 4,
                    total_updates=10, device=torch.device("cpu"), seed=0)


def _batch() -> Batch:
    frames = _stacks(batch=8)
    return Batch(frames, torch.zeros(8, dtype=torch.int64), torch.ones(8), frames.flip(0), torch.full((8,), 0.99),
                 torch.ones(8))


def test_agent_checkpoints_the_augmentation_and_loads_checkpoints_without_it() -> None:
    agent = _agent("shift_intensity")
    agent.update(_batch())
    state = copy.deepcopy(agent.state_dict())  # the live tensors move on with the next update
    agent.update(_batch())
    resumed = _agent("shift_intensity")
    resumed.load_state_dict(state)
    resumed.update(_batch())
    for trained, restored in zip(agent.online.parameters(), resumed.online.parameters()):
        assert torch.equal(trained, restored)
    older = {key: value for key, value in state.items() if key != "augmentation"}
    _agent("shift").load_state_dict(older)  # a checkpoint from before augmentation existed
    assert "augmentation" not in _agent("none").state_dict()
