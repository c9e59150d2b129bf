"""Figures summed over the steps of a window and averaged once at its end: the driver's logging windows and any
task that takes several updates in one step (the GAN's critic updates) average the same way."""
from __future__ import annotations

from typing import Mapping

import torch

Figure = torch.Tensor | float


class FigureWindow:
    """Sums and counts of each tag's figures, kept on the device until the window's averages are read."""

    def __init__(self, sums: Mapping[str, Figure] = (), counts: Mapping[str, int] = ()) -> None:
        self.sums: dict[str, Figure] = dict(sums)
        self.counts: dict[str, int] = dict(counts)

    def add(self, figures: Mapping[str, Figure]) -> None:
        """Add one step's figures (detached: a window never holds a graph)."""
        for tag, value in figures.items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            self.sums[tag] = self.sums[tag] + value if tag in self.sums else value
            self.counts[tag] = self.counts.get(tag, 0) + 1

    def means(self) -> dict[str, Figure]:
        """Each tag's mean, left on the device."""
        return {tag: value / self.counts[tag] for tag, value in self.sums.items()}

    def averages(self) -> dict[str, float]:
        """Each tag's mean as a Python float (one read off the device per tag)."""
        return {tag: float(value) / self.counts[tag] for tag, value in self.sums.items()}

    def clear(self) -> None:
        self.sums.clear()
        self.counts.clear()
