"""average_into: bit for bit what a per-tensor loop of lerp_ and copy_ gives, on every device at hand."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from core.averaging import average_into

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def network(seed: int, dtype: torch.dtype, device: str) -> nn.Module:
    """Parameters of several shapes and batch-norm buffers (running statistics, an int64 counter)."""
    torch.manual_seed(seed)
    layers = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 5), nn.LayerNorm(5))
    layers.train()(torch.randn(4, 2, 4, 4))  # moves the running statistics away from their initial values
    return layers.to(device=device, dtype=dtype)


@torch.no_grad()
def reference(target: nn.Module, source: nn.Module, weight: float) -> None:
    """The update as DQN and the GAN wrote it before they shared one helper."""
    for average, current in zip(target.parameters(), source.parameters()):
        if weight >= 1.0:
            average.copy_(current)
        else:
            average.lerp_(current, weight)
    for average, current in zip(target.buffers(), source.buffers()):
        average.copy_(current)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("weight", [1 - 0.999, 0.005, 0.3, 0.5, 0.75, 1.0], ids=lambda w: f"{w:g}")
def test_average_matches_a_per_tensor_lerp_bit_for_bit(device: str, dtype: torch.dtype, weight: float) -> None:
    source = network(0, dtype, device)
    averaged, expected = network(1, dtype, device), network(1, dtype, device)
    for _ in range(3):  # repeated updates, as training makes them
        average_into(averaged, source, weight)
        reference(expected, source, weight)
        with torch.no_grad():
            for tensor in source.parameters():
                tensor.add_(0.1)
    for got, want in zip(averaged.state_dict().values(), expected.state_dict().values(), strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_weight_one_copies_and_buffers_are_copied_never_averaged() -> None:
    source, target = network(0, torch.float32, "cpu"), network(1, torch.float32, "cpu")
    average_into(target, source, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))
    source, target = network(0, torch.float32, "cpu"), network(1, torch.float32, "cpu")
    average_into(target, source, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(target.buffers(), source.buffers()))
    assert not torch.equal(next(target.parameters()), next(source.parameters()))


def test_average_leaves_the_source_and_gradients_alone() -> None:
    source, target = network(0, torch.float32, "cpu"), network(1, torch.float32, "cpu")
    before = copy.deepcopy(source.state_dict())
    average_into(target, source, 0.3)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), before.values()))
    assert all(p.grad is None and p.grad_fn is None for p in target.parameters())


def test_networks_of_different_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot average"):
        average_into(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 0.5)


def test_networks_without_parameters_or_buffers_are_fine() -> None:
    average_into(nn.ReLU(), nn.ReLU(), 0.5)
