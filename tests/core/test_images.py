"""Image grids: every image lands at its place, padding between them."""
from __future__ import annotations

import pytest
import torch

from core.images import make_grid


def test_grid_places_each_image_row_by_row() -> None:
    images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 1, 3, 2).clone()
    grid = make_grid(images, columns=2, padding=1, pad_value=-1.0)
    assert grid.shape == (1, 3 * (3 + 1) + 1, 2 * (2 + 1) + 1)
    for index in range(5):
        top, left = 1 + (index // 2) * 4, 1 + (index % 2) * 3
        assert torch.all(grid[0, top : top + 3, left : left + 2] == index)
    assert torch.all(grid[0, 0, :] == -1.0)
    assert torch.all(grid[0, 9:12, 4:6] == -1.0)  # the empty sixth cell


def test_grid_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        make_grid(torch.zeros(3, 28, 28))
