"""Deep Q-learning (Mnih et al. 2015) with the switches of its successors, each off by default:
Double DQN (van Hasselt et al. 2016), dueling head (Wang et al. 2016), prioritized replay weights
(Schaul et al. 2016), n-step returns, Huber or MSE loss, soft (tau) target updates, and DrQ's image
augmentation of replayed observations (Kostrikov et al. 2020).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, List, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from agents.augmentation import make_augmentation
from agents.exploration import epsilon_greedy
from core.averaging import average_into
from core.errors import UserError
from core.nets import MLP, NORMS, DuelingHead, NatureTorso, init_weights
from core.optim import OptimConfig, Optimizer
from core.precision import Precision
from core.registry import unknown_name_message


@dataclass
class DQNAgentConfig:
    """The Q-network and the learning rule; defaults are the Nature DQN's."""

    network: str = "nature"  # nature (conv torso, pixel stacks) | mlp (vector observations)
    mlp_hidden: List[int] = field(default_factory=lambda: [120, 84])  # hidden widths of the mlp network
    norm: str = "none"  # none | layer: LayerNorm after every torso layer (PQN's network, Gallici et al. 2024)
    padding: str = "valid"  # valid (the Nature net: 7x7x64 into the dense layer) | same (flax's, Dopamine's: 11x11x64)
    dueling: bool = False  # dueling head: Q = V + A - mean(A)
    dueling_hidden: int = 512  # hidden units in each dueling stream (Wang et al.); 0: linear streams (Dopamine)
    init: str = "default"  # weight initialisation (core.nets.INIT_SCHEMES): default (torch's) | xavier_uniform (Dopamine's) | ...
    double: bool = False  # Double DQN: the online net picks the next action, the target net values it
    loss: str = "huber"  # huber (Nature's error clipping to [-1, 1]) | mse
    gamma: float = 0.99  # discount factor
    n_step: int = 1  # rewards summed before bootstrapping (1 = plain DQN)
    target_update_every: int = 10000  # updates between target syncs (Nature: 10,000)
    tau: float = 1.0  # 1 = hard copy; < 1 = soft update target <- tau*online + (1-tau)*target
    clip_rewards: bool = True  # learn from sign(reward), Nature's clipping to [-1, 1]
    augmentation: str = "none"  # none | shift | shift_intensity: DrQ's random shifts of obs and next_obs per update


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
            torso: nn.Module = NatureTorso(in_channels=obs_shape[0], norm=config.norm, padding=config.padding)
            features = torso.out_features
        elif config.network == "mlp":
            features = config.mlp_hidden[-1]
            size = 1
            for dim in obs_shape:
                size *= dim
            if config.norm not in NORMS:
                raise UserError(unknown_name_message("agent.norm", config.norm, list(NORMS)))
            # LayerNorm after every hidden layer, the last (the torso's output) included.
            norm = [nn.LayerNorm(features)] if config.norm == "layer" else []
            torso = nn.Sequential(nn.Flatten(), MLP(size, config.mlp_hidden[:-1], features,
                                                    layer_norm=config.norm == "layer"), *norm, nn.ReLU())
        else:
            raise UserError(f"agent.network: unknown network {config.network!r}; valid: mlp, nature")
        if config.dueling_hidden < 0:
            raise UserError(f"agent.dueling_hidden must be >= 0 (0: linear streams), got {config.dueling_hidden}")
        self.torso = torso
        self.head = (DuelingHead(features, num_actions, hidden=config.dueling_hidden) if config.dueling
                     else nn.Linear(features, num_actions))
        init_weights(self, config.init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values in float32 also under a bfloat16 autocast: TD targets and losses are computed from them."""
        return self.head(self.torso(obs)).float()


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
        total_updates: int, device: torch.device, seed: int, precision: Precision = Precision(),
    ) -> None:
        if config.loss not in ("huber", "mse"):
            raise UserError(f"agent.loss: unknown loss {config.loss!r}; valid: huber, mse")
        if not 0.0 < config.tau <= 1.0:
            raise UserError(f"agent.tau must be in (0, 1], got {config.tau}")
        self.config = config
        self.num_actions = num_actions
        self.online = precision.prepare(QNetwork(config, obs_shape, num_actions).to(device))
        # Synced after every update (DrQ), the target would be a copy of the online net whenever it is used: the
        # online net serves as the target, which saves a copy of the weights and of their bfloat16 casts a step.
        self.target_is_online = config.target_update_every == 1 and config.tau == 1.0
        self.target = self.online if self.target_is_online else copy.deepcopy(self.online).requires_grad_(False)
        # Compiled after the copy: a copied compiled module would still call the original's forward.
        precision.compile(self.online)
        if not self.target_is_online:
            precision.compile(self.target)
        self.optimizer = Optimizer(optim, self.online.parameters(), total_steps=max(total_updates, 1))
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.augmentation = make_augmentation(config.augmentation, obs_shape, device, seed)
        # With the online net as the target, Double DQN's online argmax over next_obs is the target's own: one
        # forward pass of next_obs gives the same targets as two.
        self.double_forward = config.double and not self.target_is_online
        self.updates = 0

    @torch.no_grad()
    def act(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Epsilon-greedy actions for all environments from one batched forward pass."""
        return epsilon_greedy(self.online(obs).argmax(dim=1), self.num_actions, epsilon, self.generator)

    def update(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One gradient step; returns the figures to log and the TD errors (for new priorities)."""
        if self.augmentation is not None:
            # Independent shifts for both ends of the transition, as DrQ (K = M = 1) and Dopamine draw them.
            batch = batch._replace(obs=self.augmentation(batch.obs), next_obs=self.augmentation(batch.next_obs))
        loss, td_error, q_mean = td_loss(self.online, self.target, batch, self.double_forward, self.config.loss)
        optimizer_figures = self.optimizer.step(loss)
        self.updates += 1
        if not self.target_is_online and (self.updates % self.config.target_update_every == 0 or self.config.tau < 1.0):
            self.sync_target()
        return {"losses/td_loss": loss.detach(), "losses/q_values": q_mean, **optimizer_figures}, td_error

    def sync_target(self) -> None:
        """Hard copy (tau = 1) or Polyak average of the online weights into the target network."""
        average_into(self.target, self.online, self.config.tau)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "updates": self.updates,
        }
        if self.augmentation is not None:
            state["augmentation"] = self.augmentation.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.online.load_state_dict(state["online"])
        if not self.target_is_online:
            self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.updates = state["updates"]
        # Checkpoints written before augmentation existed have no state for it: it goes on as seeded.
        if self.augmentation is not None and "augmentation" in state:
            self.augmentation.load_state_dict(state["augmentation"])
