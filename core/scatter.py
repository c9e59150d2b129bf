"""Two-dimensional points as a small RGB image for TensorBoard, drawn with numpy (no plotting library): points
coloured by class over an optional background tinted by a classifier's decision regions, their boundary in black.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

# matplotlib's tab10 colours, so class k looks as it would in a matplotlib figure.
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], dtype=np.float32) / 255.0
TINT = 0.25  # share of a region's class colour in its background (the rest is white)


def scatter_image(points: np.ndarray, labels: np.ndarray, size: int = 256, radius: int = 1, margin: float = 0.05,
                  clip: float = 0.0, outline: bool = False,
                  regions: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> torch.Tensor:
    """(N, 2) points, each a disc coloured by its integer label, as a (3, size, size) float image in [0, 1], the
    second coordinate pointing up. The view spans the points' range (from the `clip` to the 1 - `clip` quantile,
    so a few outliers do not shrink the rest) widened by `margin` on each side. `regions` maps (M, 2) coordinates
    to integer labels; each pixel's background is then tinted by its region and boundaries between regions are
    black. `outline` rings each disc in black, for a few large points on tinted ground."""
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    low, high = np.quantile(points, [clip, 1.0 - clip], axis=0)
    span = np.maximum(high - low, 1e-9)
    low, high = low - margin * span, high + margin * span
    span = high - low
    centres = (np.arange(size) + 0.5) / size
    image = np.ones((size, size, 3), dtype=np.float32)
    if regions is not None:
        xs, ys = np.meshgrid(low[0] + centres * span[0], high[1] - centres * span[1])
        region = np.asarray(regions(np.stack([xs.ravel(), ys.ravel()], axis=1))).reshape(size, size)
        image = (1.0 - TINT) + TINT * PALETTE[region % len(PALETTE)]
        boundary = np.zeros((size, size), dtype=bool)
        boundary[:, :-1] |= region[:, :-1] != region[:, 1:]
        boundary[:-1, :] |= region[:-1, :] != region[1:, :]
        image[boundary] = 0.0
    columns = _pixel((points[:, 0] - low[0]) / span[0], size)
    rows = _pixel((high[1] - points[:, 1]) / span[1], size)
    if outline:
        _discs(image, rows, columns, radius + 1, np.zeros((len(labels), 3), dtype=np.float32))
    _discs(image, rows, columns, radius, PALETTE[labels % len(PALETTE)])
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _pixel(fractions: np.ndarray, size: int) -> np.ndarray:
    """Pixel index of each position given as a fraction of the view; the view's far edge (1) is its last pixel,
    and positions outside [0, 1] get indices outside the image."""
    indices = np.floor(fractions * size).astype(np.int64)
    return np.where(fractions == 1.0, size - 1, indices)


def _discs(image: np.ndarray, rows: np.ndarray, columns: np.ndarray, radius: int, colours: np.ndarray) -> None:
    """Paint a disc of `radius` pixels at each (row, column) in its colour (where discs overlap, either may show);
    the parts outside the image are left out."""
    size = image.shape[0]
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius:
                continue
            r, c = rows + dy, columns + dx
            inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            image[r[inside], c[inside]] = colours[inside]
