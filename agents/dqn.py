"""Deep Q-learning (Mnih et al. 2015) with the switches of its successors, each off by default:
Double DQN (van Hasselt et al. 2016), dueling head (Wang et al. 2016), prioritized replay weights
(Schaul et al. 2016), n-step returns, Huber or MSE loss, soft (tau) target updates.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, List, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from core.nets import MLP, DuelingHead, NatureTorso
from core.optim import OptimConfig, Optimizer


@dataclass
class DQNAgentConfig:
    """The Q-network and the learning rule; defaults are the Nature DQN's."""

    network: str = "nature"  # nature (conv torso, pixel stacks) | mlp (vector observations)
    mlp_hidden: List[int] = field(default_factory=lambda: [120, 84])  # hidden widths of the mlp network
    dueling: bool = False  # dueling head: Q = V + A - mean(A)
    double: bool = False  # Double DQN: the online net picks the next action, the target net values it
    loss: str = "huber"  # huber (Nature's error clipping to [-1, 1]) | mse
    gamma: float = 0.99  # discount factor
    n_step: int = 1  # rewards summed before bootstrapping (1 = plain DQN)
    target_update_every: int = 10000  # updates between target syncs (Nature: 10,000)
    tau: float = 1.0  # 1 = hard copy; < 1 = soft update target <- tau*online + (1-tau)*target
    clip_rewards: bool = True  # learn from sign(reward), Nature's clipping to [-1, 1]


class Batch(NamedTuple):
    """What an update needs, as device tensors: a minibatch from the replay memory."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor  # (discounted n-step) sum of rewards
    next_obs: torch.Tensor
    discount: torch.Tensor  # gamma^k for the bootstrap, 0 where the episode terminated
    weights: torch.Tensor  # importance weights (ones for uniform sampling)


class QNetwork(nn.Module):
    """A torso (conv or MLP) and a plain or dueling head: one Q-value per action."""

    def __init__(self, config: DQNAgentConfig, obs_shape: tuple[int, ...], num_actions: int) -> None:
        super().__init__()
        if config.network == "nature":
            torso: nn.Module = NatureTorso(in_channels=obs_shape[0])
            features = torso.out_features
        elif config.network == "mlp":
            features = config.mlp_hidden[-1]
            size = 1
            for dim in obs_shape:
                size *= dim
            torso = nn.Sequential(nn.Flatten(), MLP(size, config.mlp_hidden[:-1], features, output_activation="relu"))
        else:
            raise UserError(f"agent.network: unknown network {config.network!r}; valid: mlp, nature")
        self.torso = torso
        self.head = DuelingHead(features, num_actions) if config.dueling else nn.Linear(features, num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs))


def td_loss(
    online: nn.Module, target: nn.Module, batch: Batch, double: bool, loss: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The weighted TD loss, the per-sample TD errors (for priorities) and the mean Q of the taken actions."""
    q_values = online(batch.obs).gather(1, batch.action.long().unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        next_target = target(batch.next_obs)
        if double:
            next_action = online(batch.next_obs).argmax(dim=1, keepdim=True)
        else:
            next_action = next_target.argmax(dim=1, keepdim=True)
        next_value = next_target.gather(1, next_action).squeeze(1)
        td_target = batch.reward + batch.discount * next_value
    td_error = td_target - q_values
    if loss == "huber":
        elementwise = F.smooth_l1_loss(q_values, td_target, reduction="none")
    elif loss == "mse":
        elementwise = F.mse_loss(q_values, td_target, reduction="none")
    else:
        raise UserError(f"agent.loss: unknown loss {loss!r}; valid: huber, mse")
    return (batch.weights * elementwise).mean(), td_error.detach(), q_values.detach().mean()


class DQNAgent:
    """Online and target Q-networks, their optimizer, epsilon-greedy acting and the update."""

    def __init__(
        self, config: DQNAgentConfig, optim: OptimConfig, obs_shape: tuple[int, ...], num_actions: int,
        total_updates: int, device: torch.device, seed: int,
    ) -> None:
        if config.loss not in ("huber", "mse"):
            raise UserError(f"agent.loss: unknown loss {config.loss!r}; valid: huber, mse")
        if not 0.0 < config.tau <= 1.0:
            raise UserError(f"agent.tau must be in (0, 1], got {config.tau}")
        self.config = config
        self.num_actions = num_actions
        self.online = QNetwork(config, obs_shape, num_actions).to(device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = Optimizer(optim, self.online.parameters(), total_steps=max(total_updates, 1))
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.updates = 0

    @torch.no_grad()
    def act(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Epsilon-greedy actions for all environments from one batched forward pass."""
        greedy = self.online(obs).argmax(dim=1)
        count = obs.shape[0]
        explore = torch.rand(count, device=obs.device, generator=self.generator) < epsilon
        random_actions = torch.randint(self.num_actions, (count,), device=obs.device, generator=self.generator)
        return torch.where(explore, random_actions, greedy)

    def update(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One gradient step; returns the figures to log and the TD errors (for new priorities)."""
        loss, td_error, q_mean = td_loss(self.online, self.target, batch, self.config.double, self.config.loss)
        optimizer_figures = self.optimizer.step(loss)
        self.updates += 1
        if self.updates % self.config.target_update_every == 0 or self.config.tau < 1.0:
            self.sync_target()
        return {"losses/td_loss": loss.detach(), "losses/q_values": q_mean, **optimizer_figures}, td_error

    @torch.no_grad()
    def sync_target(self) -> None:
        """Hard copy (tau = 1) or Polyak average of the online weights into the target network."""
        tau = self.config.tau
        for target, online in zip(self.target.parameters(), self.online.parameters()):
            if tau >= 1.0:
                target.copy_(online)
            else:
                target.lerp_(online, tau)
        for target, online in zip(self.target.buffers(), self.online.buffers()):
            target.copy_(online)

    def state_dict(self) -> dict[str, Any]:
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.updates = state["updates"]
