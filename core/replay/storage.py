"""Ring storage of what N environments saw and did, one row per step of all of them, on the device.

Row r, column e holds environment e's newest frame (or its whole observation when it is a plain vector)
at one step, the action taken from it, the reward and termination that followed, and two episode marks:
`is_first` (an episode's first observation: stack slots before it show the env's reset padding) and
`is_last` (an episode's last observation: no action was taken from it, so it is not a transition, only
the observation a truncated episode bootstraps from). Each environment's history is its column, so a
frame stack or an n-step window is a run of consecutive rows. Readers address a step by its flat
position `row * num_envs + env`, so the same env k rows later is `k * num_envs` further (mod capacity).
"""
from __future__ import annotations

import math

import torch

PADDINGS = ("zeros", "first")


class StepStorage:
    """Frames, actions, rewards, terminations and episode marks in `[rows, num_envs]` ring tensors."""

    def __init__(
        self, rows: int, num_envs: int, frame_shape: tuple[int, ...], frame_dtype: torch.dtype,
        frame_stack: int, padding: str, device: torch.device,
    ) -> None:
        self.rows = rows
        self.num_envs = num_envs
        self.capacity = rows * num_envs
        self.frame_stack = frame_stack
        self.padding = padding
        # One blank frame after the ring: zero padding in a stack is a gather from it, not a second pass.
        self.frames_and_blank = torch.zeros((rows * num_envs + 1, *frame_shape), dtype=frame_dtype, device=device)
        self.frames = self.frames_and_blank[:-1].view(rows, num_envs, *frame_shape)
        self.blank_index = self.capacity
        self.action = torch.zeros((rows, num_envs), dtype=torch.int64, device=device)
        self.reward = torch.zeros((rows, num_envs), dtype=torch.float32, device=device)
        self.terminated = torch.zeros((rows, num_envs), dtype=torch.bool, device=device)
        self.is_first = torch.zeros((rows, num_envs), dtype=torch.bool, device=device)
        self.is_last = torch.zeros((rows, num_envs), dtype=torch.bool, device=device)
        self._stack_offsets = torch.arange(1 - frame_stack, 1, device=device) * num_envs
        self._stack_slots = torch.arange(frame_stack, device=device)

    @staticmethod
    def bytes_needed(
        rows: int, num_envs: int, frame_shape: tuple[int, ...], frame_dtype: torch.dtype, frame_stack: int
    ) -> int:
        """Bytes the storage allocates, known before allocating it."""
        frame_bytes = math.prod(frame_shape) * torch.empty((), dtype=frame_dtype).element_size()
        per_step = 8 + 4 + 1 + 1 + 1  # action, reward, terminated, is_first, is_last
        return (rows * num_envs + 1) * frame_bytes + rows * num_envs * per_step + 2 * frame_stack * 8

    def write_frames(self, row: int, frames: torch.Tensor, is_first: torch.Tensor) -> None:
        """Store every environment's newest frame in `row`; `is_first` marks those that start an episode."""
        self.frames[row] = frames
        self.is_first[row] = is_first
        self.is_last[row] = False

    def write_step(
        self, row: int, action: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor, is_last: torch.Tensor
    ) -> None:
        """Store what followed the frames of `row`; `is_last` marks environments whose episode had ended there."""
        self.action[row] = action
        self.reward[row] = reward
        self.terminated[row] = terminated
        self.is_last[row] = is_last

    def observations(self, positions: torch.Tensor) -> torch.Tensor:
        """The observations at flat `positions` (any shape, taken mod capacity) as the env showed them, shaped
        `[*positions.shape, *obs_shape]`; stacks are rebuilt with one gather."""
        window = torch.remainder(positions.unsqueeze(-1) + self._stack_offsets, self.capacity)
        if self.frame_stack > 1:
            # The newest episode start inside the window; the slots before it belong to an older episode.
            starts = torch.take(self.is_first, window[..., 1:])
            start = (starts * self._stack_slots[1:]).amax(dim=-1, keepdim=True)
            older = self._stack_slots < start
            if self.padding == "zeros":
                window = torch.where(older, self.blank_index, window)
            else:
                window = torch.where(older, window.gather(-1, start), window)
        frames = self.frames_and_blank.index_select(0, window.view(-1))
        shape = window.shape if self.frame_stack > 1 else positions.shape
        return frames.view(*shape, *frames.shape[1:])

    def state_dict(self, rows: int | None = None) -> dict[str, torch.Tensor]:
        """The storage tensors themselves, not copies: saving 1M frames needs no second copy in memory.

        With `rows`, copies of only the first `rows` rows instead (a ring not yet half full saves what it
        holds rather than gigabytes of zeros).
        """
        tensors = {
            "frames": self.frames_and_blank,
            "action": self.action,
            "reward": self.reward,
            "terminated": self.terminated,
            "is_first": self.is_first,
            "is_last": self.is_last,
        }
        if rows is None:
            return tensors
        return {name: tensor[: rows * self.num_envs if name == "frames" else rows].clone()
                for name, tensor in tensors.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a `state_dict` into the allocated tensors: whole, or into the leading rows it holds."""
        for name, tensor in self.state_dict().items():
            saved = state[name]
            tensor[: saved.shape[0]].copy_(saved)
