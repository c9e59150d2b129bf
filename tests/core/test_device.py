"""Device choice, seeding, and RNG states that survive a weights_only checkpoint round trip."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from core.checkpoint import atomic_save, load_file
from core.device import resolve_device, rng_state, seed_everything, set_deterministic, set_rng_state
from core.errors import UserError


def _draws() -> tuple:
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), np.random.normal()


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="not one of auto, cpu, cuda, cuda:N"):
        resolve_device("gpu")
    with pytest.raises(UserError):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_same_seed_same_numbers() -> None:
    seed_everything(5)
    first = _draws()
    seed_everything(5)
    assert _draws() == first
    seed_everything(6)
    assert _draws() != first


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    seed_everything(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    path = tmp_path / "rng.pt"
    atomic_save({"rng": rng_state()}, path)
    expected = _draws()
    seed_everything(99)
    set_rng_state(load_file(path)["rng"])
    assert _draws() == expected


def test_deterministic_switch() -> None:
    set_deterministic(True)
    try:
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_flush_denormals_zeroes_values_below_the_smallest_normal_float() -> None:
    from core.device import flush_denormals

    tiny = torch.tensor([1e-39, 1e-30], dtype=torch.float32)
    try:
        flush_denormals()
        assert (tiny * 1.0).tolist() == [0.0, pytest.approx(1e-30)]
    finally:
        torch.set_flush_denormal(False)
