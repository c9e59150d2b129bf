"""Each DQN switch changes the loss the way its paper says, on small hand-computed cases."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from agents.dqn import Batch, DQNAgent, DQNAgentConfig, QNetwork, td_loss
from agents.exploration import linear_epsilon
from core.errors import UserError
from core.optim import OptimConfig


class _Table(nn.Module):
    """Q-values read from a table: observation i (one-hot) -> row i. Exact numbers, no function fitting."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs @ self.table


def _one_hot(index: int, size: int = 3) -> list[float]:
    return [1.0 if i == index else 0.0 for i in range(size)]


def _batch(reward: float = 1.0, discount: float = 0.9, weight: float = 1.0) -> Batch:
    return Batch(
        obs=torch.tensor([_one_hot(0)]),
        action=torch.tensor([1]),
        reward=torch.tensor([reward]),
        next_obs=torch.tensor([_one_hot(1)]),
        discount=torch.tensor([discount]),
        weights=torch.tensor([weight]),
    )


# Online: Q(s0) = [0, 2], Q(s1) = [5, 1].  Target: Q(s1) = [3, 4].
ONLINE = [[0.0, 2.0], [5.0, 1.0], [0.0, 0.0]]
TARGET = [[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]]


def test_nature_target_uses_the_target_nets_max() -> None:
    loss, td_error, q_mean = td_loss(_Table(ONLINE), _Table(TARGET), _batch(), double=False, loss="mse")
    target = 1.0 + 0.9 * 4.0  # max_a Q_target(s1, a) = 4
    assert td_error.item() == pytest.approx(target - 2.0)
    assert loss.item() == pytest.approx((target - 2.0) ** 2)
    assert q_mean.item() == pytest.approx(2.0)


def test_double_dqn_values_the_online_argmax_with_the_target_net() -> None:
    _, td_error, _ = td_loss(_Table(ONLINE), _Table(TARGET), _batch(), double=True, loss="mse")
    target = 1.0 + 0.9 * 3.0  # online argmax at s1 is action 0; the target net values it at 3
    assert td_error.item() == pytest.approx(target - 2.0)


def test_huber_is_quadratic_inside_and_linear_outside_one() -> None:
    big, _, _ = td_loss(_Table(ONLINE), _Table(TARGET), _batch(), double=False, loss="huber")
    assert big.item() == pytest.approx(abs(4.6 - 2.0) - 0.5)
    small, _, _ = td_loss(_Table(ONLINE), _Table(TARGET), _batch(reward=-2.0, discount=1.0), double=False, loss="huber")
    assert small.item() == pytest.approx(0.5 * (2.0 - 2.0) ** 2)
    near, _, _ = td_loss(_Table(ONLINE), _Table(TARGET), _batch(reward=-1.5, discount=1.0), double=False, loss="huber")
    assert near.item() == pytest.approx(0.5 * 0.5**2)


def test_terminal_and_n_step_discounts() -> None:
    _, td_error, _ = td_loss(_Table(ONLINE), _Table(TARGET), _batch(reward=1.7, discount=0.0), double=False, loss="mse")
    assert td_error.item() == pytest.approx(1.7 - 2.0)  # no bootstrap after termination
    gamma = 0.99
    three_step_reward = 1.0 + gamma * 0.0 + gamma**2 * 1.0
    _, td_error, _ = td_loss(_Table(ONLINE), _Table(TARGET), _batch(three_step_reward, gamma**3), double=False, loss="mse")
    assert td_error.item() == pytest.approx(three_step_reward + gamma**3 * 4.0 - 2.0)


def test_prioritized_importance_weights_scale_each_sample() -> None:
    weighted, _, _ = td_loss(_Table(ONLINE), _Table(TARGET), _batch(weight=0.25), double=False, loss="mse")
    plain, _, _ = td_loss(_Table(ONLINE), _Table(TARGET), _batch(weight=1.0), double=False, loss="mse")
    assert weighted.item() == pytest.approx(0.25 * plain.item())


def test_dueling_switch_puts_a_dueling_head_on_the_torso() -> None:
    net = QNetwork(DQNAgentConfig(network="mlp", mlp_hidden=[16], dueling=True), (4,), 3)
    obs = torch.randn(5, 4)
    features = net.torso(obs)
    assert torch.allclose(net(obs).mean(dim=1, keepdim=True), net.head.value(features), atol=1e-5)
    assert isinstance(QNetwork(DQNAgentConfig(network="mlp", mlp_hidden=[16]), (4,), 3).head, nn.Linear)


def _agent(**switches) -> DQNAgent:
    config = DQNAgentConfig(network="mlp", mlp_hidden=[8], **switches)
    return DQNAgent(config, OptimConfig(name="adam", lr=1e-2), (4,), 2, total_updates=100,
                    device=torch.device("cpu"), seed=0)


def test_hard_target_sync_only_every_n_updates() -> None:
    agent = _agent(target_update_every=3)
    batch = Batch(torch.randn(8, 4), torch.randint(2, (8,)), torch.randn(8), torch.randn(8, 4), torch.full((8,), 0.9),
                  torch.ones(8))
    initial = [p.clone() for p in agent.target.parameters()]
    for _ in range(2):
        agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(initial, agent.target.parameters()))
    agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(agent.online.parameters(), agent.target.parameters()))


def test_synced_every_update_the_online_net_is_the_target_and_learns_as_a_synced_copy_does() -> None:
    """DrQ's target is the online net of the last update: the online net serves as the target, and one next_obs
    forward gives Double DQN's targets, as a separate target net copied after every update and two passes do."""
    shared, reference = _agent(double=True, target_update_every=1), _agent(double=True, target_update_every=1)
    reference.load_state_dict(shared.state_dict())
    # The full computation: a target net of its own, synced after every update; the online argmax, then its value.
    reference.target, reference.target_is_online, reference.double_forward = copy.deepcopy(reference.online), False, True
    calls = []
    shared.online.register_forward_hook(lambda module, inputs, output: calls.append(len(output)))
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        batch = Batch(torch.randn(8, 4, generator=generator), torch.randint(2, (8,), generator=generator),
                      torch.randn(8, generator=generator), torch.randn(8, 4, generator=generator),
                      torch.full((8,), 0.9), torch.ones(8))
        figures, _ = shared.update(batch)
        expected, _ = reference.update(batch)
        assert torch.equal(figures["losses/td_loss"], expected["losses/td_loss"])
    assert shared.target is shared.online and calls == [8, 8] * 5  # obs, then next_obs once
    assert all(torch.equal(a, b) for a, b in zip(shared.online.parameters(), reference.online.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(shared.online.parameters(), reference.target.parameters()))
    # A checkpoint holds the target as before: a run saved with a separate copy resumes into the alias.
    assert all(torch.equal(shared.state_dict()["target"][name], value)
               for name, value in reference.state_dict()["target"].items())
    assert _agent(double=True, target_update_every=2).double_forward and not _agent().double_forward
    assert not _agent(target_update_every=1, tau=0.5).target_is_online


def test_soft_target_update_is_polyak_average() -> None:
    agent = _agent(tau=0.1)
    batch = Batch(torch.randn(8, 4), torch.randint(2, (8,)), torch.randn(8), torch.randn(8, 4), torch.full((8,), 0.9),
                  torch.ones(8))
    before = [p.clone() for p in agent.target.parameters()]
    agent.update(batch)
    for old, target, online in zip(before, agent.target.parameters(), agent.online.parameters()):
        assert torch.allclose(target, 0.9 * old + 0.1 * online, atol=1e-6)


def test_epsilon_greedy_acting() -> None:
    agent = _agent()
    obs = torch.randn(1000, 4)
    greedy = agent.online(obs).argmax(dim=1)
    assert torch.equal(agent.act(obs, epsilon=0.0), greedy)
    exploring = agent.act(obs, epsilon=1.0)
    assert 0.4 < (exploring == 0).float().mean().item() < 0.6


def test_dopamines_network_by_hand() -> None:
    """agent.padding=same, dueling_hidden=0, init=xavier_uniform: the parameters of Dopamine's FullRainbowNetwork
    without distributions or noise (flax SAME convolutions, one 512 dense layer, two linear dueling outputs)."""
    config = DQNAgentConfig(padding="same", dueling=True, dueling_hidden=0, init="xavier_uniform")
    net = QNetwork(config, (4, 84, 84), 4)
    convs = (4 * 32 * 8 * 8 + 32) + (32 * 64 * 4 * 4 + 64) + (64 * 64 * 3 * 3 + 64)
    assert sum(p.numel() for p in net.parameters()) == convs + (64 * 11 * 11 * 512 + 512) + (512 + 1) + (512 * 4 + 4)
    for layer in net.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            fan_in, fan_out = layer.weight[0].numel(), layer.weight.shape[0] * layer.weight[0, 0].numel()
            bound = (6 / (fan_in + fan_out)) ** 0.5  # Glorot & Bengio's uniform limit
            assert 0.95 * bound < layer.weight.abs().max().item() <= bound
            assert not layer.bias.any()
    assert net(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 4)
    with pytest.raises(UserError, match="dueling_hidden"):
        QNetwork(DQNAgentConfig(dueling=True, dueling_hidden=-1), (4, 84, 84), 4)


@pytest.mark.parametrize("warmup, decay", [(0, 1000), (1600, 5000)])
def test_epsilon_warmup_matches_dopamines_schedule(warmup: int, decay: int) -> None:
    """linear_epsilon against dopamine.jax.agents.dqn.dqn_agent.linearly_decaying_epsilon's formula, written out:
    epsilon + clip((1 - epsilon) * (decay + warmup - step) / decay, 0, 1 - epsilon)."""
    floor = 0.01
    for step in range(0, warmup + decay + 500, 7):
        bonus = min(max((1.0 - floor) * (decay + warmup - step) / decay, 0.0), 1.0 - floor)
        assert linear_epsilon(step, 1.0, floor, decay, warmup) == pytest.approx(floor + bonus, abs=1e-12)
