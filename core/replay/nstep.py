"""n-step returns from a window of stored steps, computed at sample time for a whole batch at once."""
from __future__ import annotations

from typing import NamedTuple

import torch


class NStepTargets(NamedTuple):
    """What the TD target needs from the n steps after a transition."""

    returns: torch.Tensor  # sum over the k steps taken of gamma^j * reward_j
    discount: torch.Tensor  # gamma^k to bootstrap from the observation k steps later; 0 after a termination
    steps: torch.Tensor  # k, 1 <= k <= n: where the observation to bootstrap from lies


def n_step_targets(
    rewards: torch.Tensor, terminated: torch.Tensor, next_is_last: torch.Tensor, discounts: torch.Tensor
) -> NStepTargets:
    """Discounted sums over windows `[batch, n]` of rewards, cut after a termination or an episode's end.

    `next_is_last[:, j]` says the observation after step j is its episode's last one (no action was taken
    from it): the window stops there and bootstraps from it, which is how a truncation is handled.
    `discounts` is `gamma ** arange(n + 1)`.
    """
    window = rewards.shape[1]
    ends = terminated | next_is_last
    # Step j counts when no window end came before it; the first step always counts.
    ends_before = torch.cumsum(ends, dim=1) - ends.int()
    taken = ends_before == 0
    steps = taken.sum(dim=1)
    returns = (rewards * discounts[:window] * taken).sum(dim=1)
    terminal = (terminated & taken).any(dim=1)
    discount = torch.where(terminal, 0.0, discounts[steps])
    return NStepTargets(returns, discount, steps)
