"""Scatter images: each point lands on the pixel its coordinates name, in its class's colour, and a region
boundary is drawn where the regions' function changes."""
from __future__ import annotations

import numpy as np
import torch

from core.scatter import PALETTE, TINT, scatter_image


def test_points_land_at_their_pixels_in_their_colours() -> None:
    points = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    image = scatter_image(points, np.array([0, 1, 2]), size=10, radius=0, margin=0.0)
    assert image.shape == (3, 10, 10) and image.dtype == torch.float32
    # No margin: x = 0 is column 0, y = 1 (the top) is row 0; the maximum falls on the last pixel.
    expected = {(9, 0): 0, (0, 9): 1, (0, 0): 2}
    for (row, column), label in expected.items():
        assert np.allclose(image[:, row, column].numpy(), PALETTE[label]), (row, column)
    painted = (image < 1).any(dim=0)
    assert int(painted.sum()) == 3


def test_regions_tint_the_background_and_draw_their_boundary() -> None:
    points = np.array([[0.0, 0.0], [1.0, 1.0]])
    image = scatter_image(points, np.array([0, 1]), size=20, radius=0, margin=0.0,
                          regions=lambda xy: (xy[:, 0] > 0.5).astype(np.int64))
    black = (image == 0).all(dim=0)
    # Pixel centres at x = (c + 0.5) / 20: columns 0-9 lie left of 0.5 and 10-19 right, so the boundary is column 9.
    assert black[:, 9].all() and int(black.sum()) == 20
    assert np.allclose(image[:, 5, 3].numpy(), 1 - TINT + TINT * PALETTE[0])
    assert np.allclose(image[:, 5, 15].numpy(), 1 - TINT + TINT * PALETTE[1])


def test_clip_keeps_outliers_from_shrinking_the_view() -> None:
    points = np.concatenate([np.random.default_rng(0).uniform(0, 1, (999, 2)), [[1000.0, 1000.0]]])
    image = scatter_image(points, np.zeros(1000, dtype=np.int64), size=50, radius=0, clip=0.01)
    assert int((image < 1).any(dim=0).sum()) > 500  # spread over the picture, not squeezed into one corner
