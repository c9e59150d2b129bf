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
from core.replay.storage import PADDINGS, StepStorage
from core.replay.sum_tree import SumTree

ArrayLike = Union[np.ndarray, torch.Tensor]
DType = Union[torch.dtype, np.dtype, type]

# Settings a checkpointed memory must share with the memory it is loaded into.
_STRUCTURE = ("capacity", "num_envs", "obs_shape", "obs_dtype", "frame_stack", "n_step", "prioritized", "alpha")


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
    observation is stored whole. Prioritized: priority = |td_error| + eps, sampled in proportion to
    priority^alpha, importance weights with beta annealed from beta_start to 1 over `beta_steps` calls of
    `sample`. Construction refuses (UserError) when the device has less free memory than the memory needs.
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
        self.alpha = alpha
        self.beta_start = beta_start
        self.beta_steps = beta_steps
        self.eps = eps
        self.rows = capacity // max(num_envs, 1)
        self.capacity = self.rows * num_envs
        self._check_settings(capacity, stack_padding)

        self.bytes_allocated = self.bytes_needed(capacity, num_envs, obs_shape, obs_dtype, frame_stack, n_step)
        require_bytes(self.bytes_allocated, self.device, f"the replay memory ({self.capacity:,} transitions)")
        frame_shape = self.obs_shape[1:] if self.stacked else self.obs_shape
        self.storage = StepStorage(
            self.rows, num_envs, frame_shape, self.obs_dtype, self.frame_stack, stack_padding, self.device
        )
        self.tree = SumTree(self.capacity, self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.max_priority = torch.ones((), dtype=torch.float32, device=self.device)
        self._discounts = gamma ** torch.arange(n_step + 1, dtype=torch.float32, device=self.device)
        self._window_offsets = torch.arange(n_step, device=self.device) * num_envs
        self._this_and_next_row = torch.tensor([[0], [num_envs]], device=self.device)
        self._env_ids = torch.arange(num_envs, device=self.device)
        self._next_row = 0
        self._rows_written = 0
        self._samples_drawn = 0

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
        if not 0.0 <= self.gamma <= 1.0 or self.alpha < 0.0 or not 0.0 <= self.beta_start <= 1.0 or self.eps <= 0.0:
            raise UserError(
                f"replay: need 0 <= gamma <= 1, alpha >= 0, 0 <= beta_start <= 1 and eps > 0; got gamma={self.gamma}, "
                f"alpha={self.alpha}, beta_start={self.beta_start}, eps={self.eps}"
            )
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
        # max priority, discounts, window offsets, next-row offsets, env ids
        small = 4 + (n_step + 1) * 4 + n_step * 8 + 2 * 8 + num_envs * 8
        return storage + SumTree.bytes_needed(rows * num_envs) + small

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
        values = [torch.zeros(2 * self.num_envs, device=self.device)]
        if self._rows_written > self.n_step:
            complete = (row - self.n_step) % self.rows
            indices.append(self._env_ids + complete * self.num_envs)
            new_weight = self.max_priority**self.alpha if self.prioritized else torch.ones((), device=self.device)
            values.append(torch.where(self.storage.is_last[complete], 0.0, new_weight))
        self.tree.set(torch.cat(indices), torch.cat(values))

    def beta(self) -> float:
        """The importance-weight exponent now: beta_start annealed linearly to 1 over beta_steps samples."""
        if self.beta_steps <= 0:
            return 1.0
        return self.beta_start + (1.0 - self.beta_start) * min(1.0, self._samples_drawn / self.beta_steps)

    @property
    def can_sample(self) -> bool:
        """Whether enough steps are stored for `sample` to find complete transitions."""
        return self._rows_written - self.n_step >= 2

    def sample(self, batch_size: int) -> ReplayBatch:
        """Draw `batch_size` transitions (uniformly, or in proportion to priority^alpha) with their n-step targets."""
        if not self.can_sample:
            raise UserError(f"replay: sample() needs at least n_step + 2 = {self.n_step + 2} steps added first")
        indices = self.tree.sample(batch_size, self.generator)
        batch = self.transitions(indices)
        if not self.prioritized:
            return batch
        # w_i = (N P_i)^-beta / max_j (N P_j)^-beta = (p_i^alpha / min_j p_j^alpha)^-beta
        weights = (self.tree.leaves.index_select(0, indices) / self.tree.min_positive()) ** -self.beta()
        self._samples_drawn += 1
        return batch._replace(weights=weights)

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
        if not self.prioritized:
            raise ValueError("replay: update_priorities on a memory built with prioritized=False")
        priorities = td_errors.detach().abs().to(torch.float32) + self.eps
        self.max_priority = torch.maximum(self.max_priority, priorities.max())
        # A transition overwritten since it was sampled has weight 0 and must stay unsampleable.
        current = self.tree.leaves.index_select(0, indices)
        self.tree.set(indices, torch.where(current > 0, priorities**self.alpha, 0.0))

    def _structure(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "num_envs": self.num_envs,
            "obs_shape": list(self.obs_shape),
            "obs_dtype": str(self.obs_dtype),
            "frame_stack": self.frame_stack,
            "n_step": self.n_step,
            "prioritized": self.prioritized,
            "alpha": self.alpha,
        }

    def state_dict(self) -> dict[str, Any]:
        """Contents and sampling state as tensors and primitives; the tensors are the memory's own, not copies,
        except while the ring is at most half full: then copies of the rows written so far."""
        partial = self._rows_written <= self.rows // 2
        return {
            "structure": self._structure(),
            "storage": self.storage.state_dict(rows=self._rows_written if partial else None),
            "tree": self.tree.state_dict(),
            "max_priority": self.max_priority,
            "generator": self.generator.get_state(),
            "next_row": self._next_row,
            "rows_written": self._rows_written,
            "samples_drawn": self._samples_drawn,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`; afterwards call `add_reset` with the new episodes' first observations."""
        saved, here = state["structure"], self._structure()
        differences = [
            f"{key}={saved.get(key)!r} (this run: {here[key]!r})" for key in _STRUCTURE if saved.get(key) != here[key]
        ]
        if differences:
            raise UserError(f"replay: the checkpoint's memory differs from this run's: {', '.join(differences)}")
        try:
            self.generator.set_state(state["generator"].cpu())
        except RuntimeError:
            raise UserError(
                f"replay: the checkpoint's sampling state belongs to another kind of device than {self.device}; "
                f"resume on the kind of device the run was saved from"
            ) from None
        self.storage.load_state_dict(state["storage"])
        self.tree.load_state_dict(state["tree"])
        self.max_priority.copy_(state["max_priority"])
        self._next_row = state["next_row"]
        self._rows_written = state["rows_written"]
        self._samples_drawn = state["samples_drawn"]
