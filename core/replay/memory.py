"""The replay memory of off-policy agents, on the training device, fed one step of N environments at a time.

Protocol, for environments that autoreset on the next step (ale-py's and Gymnasium's default):

    obs = env.reset();            memory.add_reset(obs)
    each step:  next_obs, reward, terminated, first = env.step(action)
                memory.add(action, reward, terminated, next_obs, first)

`first` marks the autoreset step: the env ignored the action, returned reward 0 and the new episode's
first observation. The memory then records the observation it already held for that env as the
episode's last one (not a transition) and `next_obs` as the next episode's first. A truncated episode
therefore bootstraps from its last real observation and never from the next episode. A life loss is
`terminated` without `first`: the TD target stops there, the frame stack goes on, as the env's does.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Union

import numpy as np
import torch

from core.errors import UserError
from core.replay.budget import require_bytes
from core.replay.nstep import n_step_targets
from core.replay.samplers import PrioritizedSampler, Sampler, UniformSampler
from core.replay.storage import PADDINGS, StepStorage
from core.replay.sum_tree import SumTree

ArrayLike = Union[np.ndarray, torch.Tensor]
DType = Union[torch.dtype, np.dtype, type]


class ReplayBatch(NamedTuple):
    """A sampled minibatch, all device tensors with the batch first."""

    obs: torch.Tensor  # observations (uint8 frame stacks for pixels)
    action: torch.Tensor  # int64
    reward: torch.Tensor  # float32 discounted sum of up to n rewards
    next_obs: torch.Tensor  # the observation k <= n steps later, or the episode's last real one
    discount: torch.Tensor  # float32 gamma^k to bootstrap with; 0 where the episode terminated
    weights: torch.Tensor  # float32 importance weights (ones for uniform sampling)
    indices: torch.Tensor  # int64 positions, for update_priorities


def _torch_dtype(dtype: DType) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


class ReplayMemory:
    """Uniform or proportional prioritized replay with n-step returns; pixel stacks stored one frame each.

    `capacity` counts transitions over all environments: each environment keeps the last
    `capacity // num_envs` of its steps. Pixel observations (uint8 `(frame_stack, H, W)`) are stored as
    their newest frame and rebuilt at sample time, the slots before an episode's first frame padded as
    `stack_padding` says (`zeros` as ale-py does, or `first`: repeats of the first frame); any other
    observation is stored whole. The memory writes steps into its storage and tells its sampler which
    transitions become sampleable; the sampler (`prioritized` picks which, see core.replay.samplers, where
    alpha, beta_start, beta_steps and eps are explained) chooses what `sample` returns. Construction
    refuses (UserError) when the device has less free memory than the memory needs.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: DType,
        device: torch.device | str,
        frame_stack: int = 4,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.6,
        beta_start: float = 0.4,
        beta_steps: int = 1_000_000,
        eps: float = 1e-6,
        stack_padding: str = "zeros",
        seed: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.num_envs = num_envs
        self.obs_shape = tuple(obs_shape)
        self.obs_dtype = _torch_dtype(obs_dtype)
        self.stacked = frame_stack > 1 and len(self.obs_shape) == 3 and self.obs_dtype == torch.uint8
        self.frame_stack = frame_stack if self.stacked else 1
        self.n_step = n_step
        self.gamma = gamma
        self.prioritized = prioritized
        self.rows = capacity // max(num_envs, 1)
        self.capacity = self.rows * num_envs
        self._check_settings(capacity, stack_padding)

        self.bytes_allocated = self.bytes_needed(capacity, num_envs, obs_shape, obs_dtype, frame_stack, n_step)
        require_bytes(self.bytes_allocated, self.device, f"the replay memory ({self.capacity:,} transitions)")
        frame_shape = self.obs_shape[1:] if self.stacked else self.obs_shape
        self.sampler: Sampler = (
            PrioritizedSampler(self.capacity, self.device, seed, alpha, beta_start, beta_steps, eps)
            if prioritized else UniformSampler(self.capacity, self.device, seed)
        )
        self.storage = StepStorage(
            self.rows, num_envs, frame_shape, self.obs_dtype, self.frame_stack, stack_padding, self.device
        )
        self._discounts = gamma ** torch.arange(n_step + 1, dtype=torch.float32, device=self.device)
        self._window_offsets = torch.arange(n_step, device=self.device) * num_envs
        self._this_and_next_row = torch.tensor([[0], [num_envs]], device=self.device)
        self._env_ids = torch.arange(num_envs, device=self.device)
        self._next_row = 0
        self._rows_written = 0

    def _check_settings(self, capacity: int, stack_padding: str) -> None:
        if self.num_envs < 1 or self.n_step < 1:
            raise UserError(f"replay: num_envs and n_step must be at least 1, got {self.num_envs} and {self.n_step}")
        if self.stacked and self.obs_shape[0] != self.frame_stack:
            raise UserError(
                f"replay: pixel observations of shape {self.obs_shape} are not stacks of frame_stack={self.frame_stack}"
            )
        minimum_rows = self.n_step + self.frame_stack + 1
        if self.rows < minimum_rows:
            raise UserError(
                f"replay: capacity {capacity} is too small for {self.num_envs} envs, n_step={self.n_step} and "
                f"frame_stack={self.frame_stack}; it must be at least {minimum_rows * self.num_envs}"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise UserError(f"replay: need 0 <= gamma <= 1, got gamma={self.gamma}")
        if stack_padding not in PADDINGS:
            raise UserError(f"replay: unknown stack_padding {stack_padding!r}; valid: {', '.join(PADDINGS)}")

    @staticmethod
    def bytes_needed(
        capacity: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: DType, frame_stack: int = 4,
        n_step: int = 1,
    ) -> int:
        """Every byte a memory with these settings allocates on its device, known before allocating."""
        dtype = _torch_dtype(obs_dtype)
        stacked = frame_stack > 1 and len(obs_shape) == 3 and dtype == torch.uint8
        frame_shape = tuple(obs_shape[1:]) if stacked else tuple(obs_shape)
        rows = capacity // num_envs
        storage = StepStorage.bytes_needed(rows, num_envs, frame_shape, dtype, frame_stack if stacked else 1)
        # discounts, window offsets, next-row offsets, env ids
        small = (n_step + 1) * 4 + n_step * 8 + 2 * 8 + num_envs * 8
        return storage + Sampler.bytes_needed(rows * num_envs) + small

    @property
    def bytes_per_transition(self) -> float:
        """Bytes allocated per transition of capacity, everything included."""
        return self.bytes_allocated / self.capacity

    def __len__(self) -> int:
        """Environment steps held (over all environments), at most the capacity."""
        return min(self._rows_written, self.rows) * self.num_envs

    def _newest_frames(self, obs: ArrayLike) -> torch.Tensor:
        expected = (self.num_envs, *self.obs_shape)
        if tuple(obs.shape) != expected:
            raise ValueError(f"replay: expected observations of shape {expected}, got {tuple(obs.shape)}")
        # Only the newest frame of a stack travels to the device; the older ones are already stored.
        newest = obs[:, -1] if self.stacked else obs
        return torch.as_tensor(newest, device=self.device).to(self.obs_dtype)

    def _as_device(self, values: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(values, device=self.device).to(dtype)

    def add_reset(self, obs: ArrayLike) -> None:
        """Record the first observations of new episodes in every env (after `env.reset()`, also on resume).

        The observation held before it, if any, becomes its episode's last: an episode cut by a reset is
        truncated there and bootstraps from it.
        """
        if self._rows_written > 0:
            self.storage.is_last[self._newest_row] = True
        is_first = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self._write_frames(self._newest_frames(obs), is_first)

    def add(
        self, action: ArrayLike, reward: ArrayLike, terminated: ArrayLike, next_obs: ArrayLike, first: ArrayLike
    ) -> None:
        """Record one step of all envs: the action taken in the observations held, what followed, the new ones.

        `first[e]` marks env e's autoreset step (the action was ignored and `next_obs[e]` starts a new
        episode); `terminated[e]` says the TD target must not bootstrap (game over or life loss).
        Accepts numpy arrays or tensors of shape `(num_envs, ...)`.
        """
        if self._rows_written == 0:
            raise ValueError("replay: call add_reset(obs) with the environments' first observations before add")
        first = self._as_device(first, torch.bool)
        self.storage.write_step(
            self._newest_row,
            self._as_device(action, torch.int64),
            self._as_device(reward, torch.float32),
            self._as_device(terminated, torch.bool),
            is_last=first,
        )
        self._write_frames(self._newest_frames(next_obs), is_first=first)

    @property
    def _newest_row(self) -> int:
        return (self._next_row - 1) % self.rows

    def _write_frames(self, frames: torch.Tensor, is_first: torch.Tensor) -> None:
        row = self._next_row
        self.storage.write_frames(row, frames, is_first)
        self._next_row = (row + 1) % self.rows
        self._rows_written += 1
        # Which rows may be sampled changes at both ends of the ring. The row just written and the row
        # whose oldest stack frame was just overwritten drop out; the row whose n-step window this write
        # completes comes in, unless it is an episode's last observation.
        overwritten_history = (row + self.frame_stack - 1) % self.rows
        indices = [self._env_ids + row * self.num_envs, self._env_ids + overwritten_history * self.num_envs]
        excluded = [torch.ones(2 * self.num_envs, dtype=torch.bool, device=self.device)]
        if self._rows_written > self.n_step:
            complete = (row - self.n_step) % self.rows
            indices.append(self._env_ids + complete * self.num_envs)
            excluded.append(self.storage.is_last[complete])
        # One call for both ends: the sampler's tree is updated once per step, not twice.
        self.sampler.set_sampleable(torch.cat(indices), torch.cat(excluded))

    @property
    def tree(self) -> SumTree:
        """The sampler's sum tree: a transition with weight 0 is not sampleable."""
        return self.sampler.tree

    @property
    def eps(self) -> float:
        """The prioritized sampler's priority floor (|td_error| + eps)."""
        return self.sampler.eps

    def beta(self) -> float:
        """The prioritized sampler's importance-weight exponent now."""
        return self.sampler.beta()

    @property
    def can_sample(self) -> bool:
        """Whether enough steps are stored for `sample` to find complete transitions."""
        return self._rows_written - self.n_step >= 2

    def sample(self, batch_size: int) -> ReplayBatch:
        """Draw `batch_size` transitions (uniformly, or in proportion to priority^alpha) with their n-step targets."""
        if not self.can_sample:
            raise UserError(f"replay: sample() needs at least n_step + 2 = {self.n_step + 2} steps added first")
        indices, weights = self.sampler.sample(batch_size)
        batch = self.transitions(indices)
        return batch if weights is None else batch._replace(weights=weights)

    def transitions(self, indices: torch.Tensor) -> ReplayBatch:
        """The transitions at sampleable flat `indices` (int64 device tensor), importance weights all one."""
        storage = self.storage
        if self.n_step == 1:
            # The one-step target needs no window: a fifth of the operations of the general case.
            reward = torch.take(storage.reward, indices)
            discount = torch.where(torch.take(storage.terminated, indices), 0.0, self._discounts[1])
            positions = indices + self._this_and_next_row  # [2, batch]: obs and next_obs
        else:
            window = torch.remainder(indices.unsqueeze(1) + self._window_offsets, self.capacity)
            reward, discount, steps = n_step_targets(
                torch.take(storage.reward, window),
                torch.take(storage.terminated, window),
                torch.take(storage.is_last, torch.remainder(window + self.num_envs, self.capacity)),
                self._discounts,
            )
            positions = torch.stack([indices, indices + steps * self.num_envs])
        both = storage.observations(positions)
        return ReplayBatch(
            obs=both[0],
            action=torch.take(storage.action, indices),
            reward=reward,
            next_obs=both[1],
            discount=discount,
            weights=torch.ones(indices.shape[0], device=self.device),
            indices=indices,
        )

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Set the priorities of sampled transitions to |td_error| + eps (prioritized memories only)."""
        self.sampler.update_priorities(indices, td_errors)

    def _structure(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "num_envs": self.num_envs,
            "obs_shape": list(self.obs_shape),
            "obs_dtype": str(self.obs_dtype),
            "frame_stack": self.frame_stack,
            "n_step": self.n_step,
            "prioritized": self.prioritized,
            **self.sampler.structure(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Contents and sampling state as tensors and primitives; the tensors are the memory's own, not copies,
        except while the ring is at most half full: then copies of the rows written so far.

        The sampler's state sits beside the storage's, not under a key of its own: that is the layout
        checkpoints had before the sampler was a part of its own, and those still load.
        """
        partial = self._rows_written <= self.rows // 2
        return {
            "structure": self._structure(),
            "storage": self.storage.state_dict(rows=self._rows_written if partial else None),
            **self.sampler.state_dict(),
            "next_row": self._next_row,
            "rows_written": self._rows_written,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`; afterwards call `add_reset` with the new episodes' first observations."""
        saved, here = state["structure"], self._structure()
        # Only the settings this memory has are compared: a uniform memory has no alpha, which older
        # checkpoints of uniform memories still record.
        differences = [
            f"{key}={saved.get(key)!r} (this run: {value!r})" for key, value in here.items() if saved.get(key) != value
        ]
        if differences:
            raise UserError(f"replay: the checkpoint's memory differs from this run's: {', '.join(differences)}")
        self.sampler.load_state_dict(state)  # first: it refuses a checkpoint of another kind of device
        self.storage.load_state_dict(state["storage"])
        self._next_row = state["next_row"]
        self._rows_written = state["rows_written"]
