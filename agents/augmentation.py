"""Image augmentation of replayed frame stacks for Q-learning from pixels (DrQ, Kostrikov et al. 2020).

`shift`: each stack is padded by 4 pixels with replicated borders and cropped back to its size at a random
offset, one offset per sample shared by its frames. `shift_intensity` then scales each sample by
1 + 0.05 * clip(N(0, 1), -2, 2), the intensity noise of SPR (Schwarzer et al. 2020) that Dopamine's DrQ
applies. The crop of a replicate-padded image is a gather with clamped indices, so the shift is one gather
on the device, keeps uint8 frames as bytes and never builds the padded copy.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from core.errors import UserError
from core.registry import unknown_name_message

AUGMENTATIONS = ("none", "shift", "shift_intensity")
SHIFT_PAD = 4  # pixels of replicated border: shifts of -4..4 in each direction (DrQ's +-4)
INTENSITY_SCALE = 0.05  # standard deviation of the per-sample intensity factor
INTENSITY_CLIP = 2.0  # the factor's normal draw is clipped to +-2 standard deviations
_STREAM = 0xA06  # seeds the augmentation apart from the agent's other random streams


class RandomShift:
    """Random shifts (and optionally intensity noise) of (B, C, H, W) image batches, drawn from its own generator,
    whose state checkpoints so a resumed run augments as an uninterrupted one would."""

    def __init__(self, device: torch.device, seed: int, pad: int = SHIFT_PAD, intensity: bool = False) -> None:
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.pad = pad
        self.intensity = intensity
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(np.random.SeedSequence([seed, _STREAM]).generate_state(1)[0]))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Shifted copies in the input's dtype; with intensity noise, float32 in [0, 1]-scale (bytes / 255)."""
        batch, channels, height, width = images.shape
        device = images.device
        offsets = torch.randint(-self.pad, self.pad + 1, (2, batch, 1), device=device, generator=self.generator)
        # Clamping the source index is what reading a replicate-padded image at that offset amounts to.
        rows = (torch.arange(height, device=device) + offsets[0]).clamp_(0, height - 1)
        cols = (torch.arange(width, device=device) + offsets[1]).clamp_(0, width - 1)
        source = (rows.unsqueeze(2) * width + cols.unsqueeze(1)).view(batch, 1, height * width)
        shifted = images.reshape(batch, channels, height * width).gather(
            2, source.expand(batch, channels, height * width)
        ).view(batch, channels, height, width)
        if not self.intensity:
            return shifted
        noise = torch.randn(batch, 1, 1, 1, device=device, generator=self.generator)
        factor = 1.0 + INTENSITY_SCALE * noise.clamp_(-INTENSITY_CLIP, INTENSITY_CLIP)
        if images.dtype == torch.uint8:
            factor = factor / 255.0  # the network reads float input as [0, 1]
        return shifted.to(torch.float32).mul_(factor)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())


def make_augmentation(name: str, obs_shape: tuple[int, ...], device: torch.device, seed: int) -> Optional[RandomShift]:
    """The augmentation `agent.augmentation` names, or None for `none`; a UserError for an unknown name or
    for observations that are not images."""
    if name not in AUGMENTATIONS:
        raise UserError(unknown_name_message("agent.augmentation", name, list(AUGMENTATIONS)))
    if name == "none":
        return None
    if len(obs_shape) != 3:
        raise UserError(f"agent.augmentation {name!r} shifts images; the observations have shape {obs_shape}: "
                        f"use agent.augmentation: none")
    return RandomShift(device, seed, intensity=name == "shift_intensity")
