"""PQN's learner (Gallici et al. 2024): one LayerNorm Q-network, no target network, regressed onto Q(lambda)
returns in shuffled minibatches of a rollout."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List

import torch
from torch import nn

from agents.dqn import DQNAgentConfig, QNetwork
from agents.exploration import epsilon_greedy
from core.errors import UserError
from core.nets import NatureTorso
from core.optim import OptimConfig, Optimizer
from core.precision import Precision
from core.registry import unknown_name_message

INITS = ("purejaxql", "torch")
# The standard deviation of a unit normal truncated to [-2, 2]: truncating at two deviations shrinks the
# spread by this factor, which variance-scaling initialisers divide back out.
_TRUNCATED_STD = 0.8796256610342398


@dataclass
class PQNAgentConfig:
    """The Q-network and its Q(lambda) targets; purejaxql's pqn_atari.yaml and CleanRL's pqn_atari_envpool.py agree
    on every default but those whose source is named."""

    network: str = "nature"  # nature (conv torso, pixel stacks) | mlp (vector observations)
    mlp_hidden: List[int] = field(default_factory=lambda: [256, 256])  # mlp widths (purejaxql's gymnax: 2 x 256)
    norm: str = "layer"  # none | layer: LayerNorm after the torso's layers, PQN's stabiliser
    init: str = "purejaxql"  # purejaxql: He-normal conv torso, LeCun-normal MLP and head, zero biases | torch
    gamma: float = 0.99  # discount factor
    q_lambda: float = 0.65  # lambda of the Q(lambda) returns
    clip_rewards: bool = True  # learn from sign(reward) (envpool's reward_clip in both)
    reward_scale: float = 1.0  # multiplies the (clipped) rewards learnt from (purejaxql's REW_SCALE; 1 on Atari)


def _variance_scaling_(weight: torch.Tensor, scale: float) -> None:
    """Fill `weight` from a normal truncated at two deviations with variance scale / fan_in (flax's initialiser)."""
    std = math.sqrt(scale / weight[0].numel()) / _TRUNCATED_STD
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


@torch.no_grad()
def purejaxql_init_(network: QNetwork) -> None:
    """purejaxql's initialisation: He-normal layers in the conv torso (its CNN), LeCun-normal ones (flax's default)
    in the MLP torso and the head, zero biases. CleanRL's PQN uses orthogonal weights instead."""
    conv_torso = isinstance(network.torso, NatureTorso)
    for part, scale in ((network.torso, 2.0 if conv_torso else 1.0), (network.head, 1.0)):
        for module in part.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                _variance_scaling_(module.weight, scale)
                nn.init.zeros_(module.bias)


class PQNAgent:
    """The Q-network, its optimizer and learning-rate schedule, epsilon-greedy acting and the rollout's updates."""

    def __init__(
        self, config: PQNAgentConfig, optim: OptimConfig, obs_shape: tuple[int, ...], num_actions: int,
        total_updates: int, device: torch.device, seed: int, precision: Precision = Precision(),
    ) -> None:
        if config.init not in INITS:
            raise UserError(unknown_name_message("agent.init", config.init, list(INITS)))
        network = QNetwork(DQNAgentConfig(network=config.network, mlp_hidden=list(config.mlp_hidden), norm=config.norm),
                           obs_shape, num_actions)
        if config.init == "purejaxql":
            purejaxql_init_(network)
        self.num_actions = num_actions
        self.network = precision.compile(precision.prepare(network.to(device)))
        self.optimizer = Optimizer(optim, self.network.parameters(), total_steps=total_updates)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    @torch.no_grad()
    def explore(self, obs: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Epsilon-greedy actions for all environments and the max Q of their observations, from one forward."""
        max_q, greedy = self.network(obs).max(dim=1)
        return epsilon_greedy(greedy, self.num_actions, epsilon, self.generator), max_q

    @torch.no_grad()
    def max_q(self, obs: torch.Tensor) -> torch.Tensor:
        """max_a Q(obs, a) of each observation, the value a return bootstraps from."""
        return self.network(obs).max(dim=1).values

    def act(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Epsilon-greedy actions, as the evaluation protocol asks of an agent."""
        return self.explore(obs, epsilon)[0]

    def learn(self, obs: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
              epochs: int, minibatches: int) -> dict[str, torch.Tensor]:
        """`epochs` passes over the transitions in `minibatches` shuffled minibatches, each one gradient step on
        the squared error of Q(s, a) against its target, averaged over the valid (non-autoreset) ones."""
        weights = valid.float()
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for _ in range(epochs):
            order = torch.randperm(obs.shape[0], device=obs.device, generator=self.generator)
            for index in order.view(minibatches, -1):
                weight = weights[index]
                # A minibatch of autoreset steps alone would divide by zero; its loss is then 0.
                count = weight.sum().clamp(min=1.0)
                q_values = self.network(obs[index]).gather(1, actions[index].unsqueeze(1)).squeeze(1)
                loss = (weight * (q_values - targets[index]).square()).sum() / count
                figures = {"losses/td_loss": loss.detach(), "losses/q_values": (weight * q_values.detach()).sum() / count,
                           **self.optimizer.step(loss)}
                for tag, value in figures.items():
                    sums[tag] = sums[tag] + value if tag in sums else value
                    counts[tag] = counts.get(tag, 0) + 1
        return {tag: total / counts[tag] for tag, total in sums.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
