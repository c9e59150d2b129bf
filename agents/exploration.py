"""Epsilon-greedy exploration for the Q-learning agents: the schedule and the draw, on the device."""
from __future__ import annotations

import torch


def linear_epsilon(step: int, start: float, end: float, decay_steps: int, warmup_steps: int = 0) -> float:
    """`start` until `warmup_steps`, then linear to `end` over `decay_steps` (Mnih et al. 2015's schedule with no
    warm-up; Dopamine's linearly_decaying_epsilon holds 1 for its min_replay_history first)."""
    fraction = min(max(step - warmup_steps, 0) / max(decay_steps, 1), 1.0)
    return start + fraction * (end - start)


def epsilon_greedy(greedy: torch.Tensor, num_actions: int, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """`greedy` (one action per environment) with each entry replaced, with probability `epsilon`, by a uniform
    random action; both draws come from `generator`, so the actions replay from a checkpointed state."""
    count = greedy.shape[0]
    explore = torch.rand(count, device=greedy.device, generator=generator) < epsilon
    random_actions = torch.randint(num_actions, (count,), device=greedy.device, generator=generator)
    return torch.where(explore, random_actions, greedy)
