"""Image grids for TensorBoard (torchvision cannot be installed beside the CPU torch used here)."""
from __future__ import annotations

import math

import torch


def make_grid(images: torch.Tensor, columns: int = 8, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) images -> one (C, rows*(H+p)+p, columns*(W+p)+p) image, filled row by row."""
    if images.dim() != 4:
        raise ValueError(f"make_grid expects (N, C, H, W) images, got shape {tuple(images.shape)}")
    count, channels, height, width = images.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    grid = torch.full(
        (channels, rows * (height + padding) + padding, columns * (width + padding) + padding),
        pad_value, dtype=images.dtype, device=images.device,
    )
    for index in range(count):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index]
    return grid
