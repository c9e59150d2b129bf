"""Device-resident minibatches: epochs are permutations, binarization modes behave as the papers define
them, shards split a global batch, and the sampler resumes exactly."""
from __future__ import annotations

import pytest
import torch

from core.errors import UserError
from core.sampling import DeviceBatches, PersistentChains, fixed_binarization, prepare


def _images(count: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _index_of(batch_images: torch.Tensor, images: torch.Tensor) -> list[int]:
    flat = images.flatten(1)
    return [int((flat == row).all(dim=1).nonzero()[0]) for row in batch_images.flatten(1)]


def test_an_epoch_visits_every_image_once_and_drops_the_remainder() -> None:
    images = _images(50)
    batches = DeviceBatches(images, batch_size=8, mode="none", seed=3)
    assert batches.batches_per_epoch == 6
    seen = torch.cat([batches.next_indices() for _ in range(6)])
    assert len(set(seen.tolist())) == 48 and batches.epoch == 0
    batches.next_indices()
    assert batches.epoch == 1


def test_modes_convert_as_defined() -> None:
    images = _images(20)
    none = DeviceBatches(images, 20, mode="none", seed=1)
    batch = none.next()
    order = none.order[:20]
    assert torch.allclose(batch, images[order].float() / 255)
    threshold = DeviceBatches(images, 20, mode="threshold", threshold=0.5, seed=1)
    assert torch.equal(threshold.next(), (images[order].float() / 255 > 0.5).float())
    levels = torch.tensor([0, 127, 128, 255], dtype=torch.uint8)  # on from grey 128, PyDeep's x >= 0.5
    assert prepare(levels, "threshold", 0.5, torch.Generator()).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert prepare(levels, "threshold", 0.499, torch.Generator()).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_dynamic_redraws_every_epoch_and_fixed_does_not() -> None:
    images = torch.full((10, 1, 8, 8), 128, dtype=torch.uint8)
    images[0] = torch.arange(64, dtype=torch.uint8).view(1, 8, 8) * 4
    for mode, differs in (("dynamic", True), ("fixed", False)):
        batches = DeviceBatches(images, 10, mode=mode, seed=2)
        first = batches.next()[torch.argsort(batches.order)]
        second = batches.next()[torch.argsort(batches.order)]
        assert batches.epoch == 1
        assert set(first.unique().tolist()) <= {0.0, 1.0}
        assert (not torch.equal(first, second)) == differs, mode


def test_dynamic_draws_have_the_grey_level_as_mean() -> None:
    images = torch.full((400, 1, 10, 10), 64, dtype=torch.uint8)
    batches = DeviceBatches(images, 400, mode="dynamic", seed=0)
    assert batches.next().mean().item() == pytest.approx(64 / 255, abs=0.01)


def test_fixed_binarization_depends_only_on_its_seed() -> None:
    images = _images(30)
    assert torch.equal(fixed_binarization(images, 5), fixed_binarization(images, 5))
    assert not torch.equal(fixed_binarization(images, 5), fixed_binarization(images, 6))


def test_state_dict_resumes_the_same_sequence() -> None:
    images = _images(40)
    batches = DeviceBatches(images, 6, mode="dynamic", seed=4)
    for _ in range(9):
        batches.next()
    state = {key: value.clone() if isinstance(value, torch.Tensor) else value
             for key, value in batches.state_dict().items()}
    expected = [batches.next() for _ in range(10)]
    resumed = DeviceBatches(images, 6, mode="dynamic", seed=99)
    resumed.load_state_dict(state)
    for want in expected:
        assert torch.equal(resumed.next(), want)


def test_shards_split_the_global_batch_of_one_process() -> None:
    images = _images(64)
    whole = DeviceBatches(images, 16, mode="none", seed=7)
    halves = [DeviceBatches(images, 8, mode="none", seed=7, shard=(rank, 2)) for rank in range(2)]
    for _ in range(6):  # across an epoch boundary: 4 global batches per epoch
        global_batch = whole.next_indices()
        parts = [half.next_indices() for half in halves]
        assert torch.equal(torch.cat(parts), global_batch)


@pytest.mark.parametrize("mode", ["dynamic", "threshold", "none"])
def test_shards_see_the_images_one_process_would_binarized_alike(mode: str) -> None:
    images = _images(64)
    whole = DeviceBatches(images, 16, mode=mode, seed=7)
    halves = [DeviceBatches(images, 8, mode=mode, seed=7, shard=(rank, 2)) for rank in range(2)]
    for _ in range(6):
        assert torch.equal(torch.cat([half.next() for half in halves]), whole.next())


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown mode 'dinamic'"):
        DeviceBatches(_images(), 4, mode="dinamic")
    with pytest.raises(UserError, match=r"batch_size must lie in \[1, 50\]"):
        DeviceBatches(_images(), 51)
    with pytest.raises(UserError, match="threshold must lie in"):
        DeviceBatches(_images(), 4, mode="threshold", threshold=1.5)


def test_persistent_chains_round_trip_and_refuse_other_shapes() -> None:
    chains = PersistentChains(torch.rand(5, 3))
    copy = PersistentChains(torch.zeros(5, 3))
    copy.load_state_dict(chains.state_dict())
    assert torch.equal(copy.states, chains.states)
    with pytest.raises(UserError, match="persistent chains"):
        PersistentChains(torch.zeros(4, 3)).load_state_dict(chains.state_dict())


def test_bernoulli_draw_has_every_grey_level_as_its_probability() -> None:
    from core.sampling import bernoulli_draw

    levels = torch.arange(256, dtype=torch.uint8).repeat(20000).view(20000, 256)
    frequencies = bernoulli_draw(levels, torch.Generator().manual_seed(0)).mean(0)
    expected = torch.arange(256) / 255
    # Binomial noise of 20,000 draws: std <= 0.0036; 5 std over 256 levels.
    assert (frequencies - expected).abs().max().item() < 0.018
    assert frequencies[0].item() == 0.0 and frequencies[255].item() == 1.0
    assert abs((frequencies - expected).mean().item()) < 0.001
