"""Averaging one network's weights toward another's: DQN's soft target update, the GAN generator's EMA."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def average_into(target: nn.Module, source: nn.Module, weight: float) -> None:
    """target <- target + weight * (source - target) for every parameter (`Tensor.lerp_`); weight >= 1 copies
    them exactly. Buffers (batch-norm statistics) are always copied: an average of running statistics would
    describe no network. The two modules must have the same structure."""
    targets, sources = list(target.parameters()), list(source.parameters())
    if len(targets) != len(sources):
        raise ValueError(f"cannot average {len(sources)} parameters into {len(targets)}")
    if weight >= 1.0:
        for average, current in zip(targets, sources):
            average.copy_(current)
    elif targets:
        # One fused call instead of a kernel launch per tensor; it runs the same lerp on each tensor.
        torch._foreach_lerp_(targets, sources, weight)
    for average, current in zip(target.buffers(), source.buffers(), strict=True):
        average.copy_(current)
