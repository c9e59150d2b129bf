"""Epsilon-greedy exploration for the Q-learning agents: the schedule and the draw, on the device."""
from __future__ import annotations

import torch


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    """`start` at step 0, `end` from `decay_steps` on, linear in between (Mnih et al. 2015's schedule)."""
    fraction = min(step / max(decay_steps, 1), 1.0)
    return start + fraction * (end - start)


def epsilon_greedy(greedy: torch.Tensor, num_actions: int, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """`greedy` (one action per environment) with each entry replaced, with probability `epsilon`, by a uniform
    random action; both draws come from `generator`, so the actions replay from a checkpointed state."""
    count = greedy.shape[0]
    explore = torch.rand(count, device=greedy.device, generator=generator) < epsilon
    random_actions = torch.randint(num_actions, (count,), device=greedy.device, generator=generator)
    return torch.where(explore, random_actions, greedy)
