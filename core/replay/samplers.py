"""Which stored transitions a replay memory draws: uniformly, or in proportion to priority^alpha.

A sampler sees only flat positions (`row * num_envs + env`), never the storage. The memory's writer tells
it which positions become sampleable or stop being so; the sampler keeps that as weights in a sum tree
(0: never drawn) and owns everything its draws depend on: the tree, the random generator and, when
prioritized, the priorities and the importance-weight schedule. Its `state_dict` is that state, so a
checkpoint restores the exact sequence of draws.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from core.errors import UserError
from core.replay.sum_tree import SumTree


class Sampler(ABC):
    """What both samplers share: a sum tree over the memory's flat positions and the generator of the draws."""

    def __init__(self, capacity: int, device: torch.device, seed: int) -> None:
        self.tree = SumTree(capacity, device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    @staticmethod
    def bytes_needed(capacity: int) -> int:
        """Device bytes a sampler of `capacity` positions allocates: its tree and its one float32 scalar."""
        return SumTree.bytes_needed(capacity) + 4

    @abstractmethod
    def new_weight(self) -> torch.Tensor:
        """The weight (0-dim float32 device tensor) a newly sampleable transition gets."""

    def set_sampleable(self, indices: torch.Tensor, excluded: torch.Tensor) -> None:
        """Make the transitions at `indices` drawable at the new weight, except where `excluded` (bool): never drawn."""
        self.tree.set(indices, torch.where(excluded, 0.0, self.new_weight()))

    @abstractmethod
    def sample(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`count` positions (int64) and their importance weights (float32; None where all are one)."""

    @abstractmethod
    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Reweigh drawn transitions by their TD errors (prioritized sampling only)."""

    def structure(self) -> dict[str, Any]:
        """Settings a checkpointed sampler must share with the sampler it is loaded into."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The tree (its own tensors, not copies) and the generator's state."""
        return {"tree": self.tree.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`; keys of other samplers' state are ignored (a uniform one skips priorities)."""
        try:
            self.generator.set_state(state["generator"].cpu())
        except RuntimeError:
            raise UserError(
                f"replay: the checkpoint's sampling state belongs to another kind of device than "
                f"{self.generator.device}; resume on the kind of device the run was saved from"
            ) from None
        self.tree.load_state_dict(state["tree"])


class UniformSampler(Sampler):
    """Every sampleable transition equally likely: tree weights 1 or 0, so a draw never lands on a stale slot."""

    def __init__(self, capacity: int, device: torch.device, seed: int) -> None:
        super().__init__(capacity, device, seed)
        self._one = torch.ones((), dtype=torch.float32, device=device)

    def new_weight(self) -> torch.Tensor:
        return self._one

    def sample(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.tree.sample(count, self.generator), None

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        raise ValueError("replay: update_priorities on a memory built with prioritized=False")


class PrioritizedSampler(Sampler):
    """Proportional prioritized sampling (Schaul et al. 2016): priority = |td_error| + eps, drawn in proportion
    to priority^alpha, importance weights with beta annealed from beta_start to 1 over `beta_steps` draws;
    a new transition gets the largest priority seen so far."""

    def __init__(
        self, capacity: int, device: torch.device, seed: int, alpha: float = 0.6, beta_start: float = 0.4,
        beta_steps: int = 1_000_000, eps: float = 1e-6,
    ) -> None:
        if alpha < 0.0 or not 0.0 <= beta_start <= 1.0 or eps <= 0.0:
            raise UserError(
                f"replay: need alpha >= 0, 0 <= beta_start <= 1 and eps > 0; got alpha={alpha}, "
                f"beta_start={beta_start}, eps={eps}"
            )
        super().__init__(capacity, device, seed)
        self.alpha = alpha
        self.beta_start = beta_start
        self.beta_steps = beta_steps
        self.eps = eps
        self.max_priority = torch.ones((), dtype=torch.float32, device=device)
        self._samples_drawn = 0

    def new_weight(self) -> torch.Tensor:
        return self.max_priority**self.alpha

    def beta(self) -> float:
        """The importance-weight exponent now: beta_start annealed linearly to 1 over beta_steps draws."""
        if self.beta_steps <= 0:
            return 1.0
        return self.beta_start + (1.0 - self.beta_start) * min(1.0, self._samples_drawn / self.beta_steps)

    def sample(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        indices = self.tree.sample(count, self.generator)
        # w_i = (N P_i)^-beta / max_j (N P_j)^-beta = (p_i^alpha / min_j p_j^alpha)^-beta
        weights = (self.tree.leaves.index_select(0, indices) / self.tree.min_positive()) ** -self.beta()
        self._samples_drawn += 1
        return indices, weights

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Set the priorities of drawn transitions to |td_error| + eps."""
        priorities = td_errors.detach().abs().to(torch.float32) + self.eps
        self.max_priority = torch.maximum(self.max_priority, priorities.max())
        # A transition overwritten since it was drawn has weight 0 and must stay unsampleable.
        current = self.tree.leaves.index_select(0, indices)
        self.tree.set(indices, torch.where(current > 0, priorities**self.alpha, 0.0))

    def structure(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def state_dict(self) -> dict[str, Any]:
        """The shared state, the largest priority seen and the draws counted for the beta schedule."""
        return {**super().state_dict(), "max_priority": self.max_priority, "samples_drawn": self._samples_drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.max_priority.copy_(state["max_priority"])
        self._samples_drawn = state["samples_drawn"]
