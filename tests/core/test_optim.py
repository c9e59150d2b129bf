"""Optimizers from config take torch's own steps; schedules follow their closed forms; clipping and
state round trips are exact."""
from __future__ import annotations

import io
import math

import pytest
import torch

from core.errors import UserError
from core.optim import OptimConfig, Optimizer, ScheduleConfig, build_optimizer, build_scheduler


def _quadratic_steps(make_optimizer, steps: int = 5) -> torch.Tensor:
    torch.manual_seed(0)
    weights = torch.nn.Parameter(torch.randn(6))
    target = torch.arange(6.0)
    optimizer = make_optimizer([weights])
    for _ in range(steps):
        optimizer.zero_grad()
        ((weights - target) ** 2).sum().backward()
        optimizer.step()
    return weights.detach()


@pytest.mark.parametrize(
    "config, by_hand",
    [
        (OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True),
         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
        (OptimConfig(name="rmsprop", lr=0.01, alpha=0.95, eps=0.01, centered=True),
         lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, eps=0.01, centered=True)),
        (OptimConfig(name="adam", lr=0.05, betas=[0.5, 0.9], amsgrad=True),
         lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.5, 0.9), amsgrad=True)),
        (OptimConfig(name="adamw", lr=0.05, weight_decay=0.1),
         lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1)),
    ],
)
def test_config_optimizer_steps_like_torch(config: OptimConfig, by_hand) -> None:
    ours = _quadratic_steps(lambda p: build_optimizer(config, p))
    assert torch.equal(ours, _quadratic_steps(by_hand))


def test_bad_names_and_arguments() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(UserError, match=r"unknown optimizer 'adamm' \(did you mean 'adam'.*valid: adam, adamw, rmsprop, sgd"):
        build_optimizer(OptimConfig(name="adamm"), params)
    with pytest.raises(UserError, match=r"optim.betas: sgd takes no argument 'betas'; its arguments: lr, momentum"):
        build_optimizer(OptimConfig(name="sgd", betas=[0.9, 0.99]), params)
    with pytest.raises(UserError, match=r"unknown schedule 'cosin'"):
        build_scheduler(ScheduleConfig(name="cosin"), build_optimizer(OptimConfig(), params), 10)


def _lrs(schedule: ScheduleConfig, total: int, base: float = 1.0) -> list[float]:
    optimizer = build_optimizer(OptimConfig(name="sgd", lr=base), [torch.nn.Parameter(torch.zeros(1))])
    scheduler = build_scheduler(schedule, optimizer, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules_follow_their_formulas() -> None:
    total = 20
    assert _lrs(ScheduleConfig(), total) == pytest.approx([1.0] * total)
    linear = _lrs(ScheduleConfig(name="linear", final_factor=0.1), total)
    assert linear == pytest.approx([1.0 + (0.1 - 1.0) * t / total for t in range(total)])
    step = _lrs(ScheduleConfig(name="step", step_size=6, gamma=0.5), total)
    assert step == pytest.approx([0.5 ** (t // 6) for t in range(total)])
    warm, main = 5, total - 5
    cosine = _lrs(ScheduleConfig(name="cosine", warmup_steps=warm, warmup_start_factor=0.2, final_factor=0.0), total)
    expected = [0.2 + (1 - 0.2) * t / warm for t in range(warm)]
    expected += [0.5 * (1 + math.cos(math.pi * t / main)) for t in range(main)]
    assert cosine == pytest.approx(expected, abs=1e-6)


def test_clipping_bounds_the_update_and_reports_the_raw_norm() -> None:
    weights = torch.nn.Parameter(torch.zeros(4))
    optimizer = Optimizer(OptimConfig(name="sgd", lr=1.0, grad_clip_norm=0.5), [weights], total_steps=1)
    target = torch.tensor([3.0, 0.0, 4.0, 0.0])
    grad_norm = optimizer.step(-(weights * target).sum())  # gradient = -target, norm 5
    assert grad_norm.item() == pytest.approx(5.0)
    assert weights.detach().norm().item() == pytest.approx(0.5)
    assert torch.allclose(weights.detach(), target / 10)


def _train(optimizer: Optimizer, weights: torch.nn.Parameter, steps: int) -> None:
    for step in range(steps):
        optimizer.step(((weights - step) ** 2).sum())


def test_state_round_trip_through_weights_only_load_continues_exactly() -> None:
    config = OptimConfig(name="adam", lr=0.1, schedule=ScheduleConfig(name="cosine", warmup_steps=3))
    torch.manual_seed(1)
    straight = torch.nn.Parameter(torch.randn(5))
    resumed = torch.nn.Parameter(straight.detach().clone())
    reference = Optimizer(config, [straight], total_steps=20)
    _train(reference, straight, 20)

    first = Optimizer(config, [resumed], total_steps=20)
    _train(first, resumed, 8)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = Optimizer(config, [resumed], total_steps=20)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(8, 20):
        second.step(((resumed - step) ** 2).sum())
    assert torch.equal(resumed, straight)
    assert second.lr == pytest.approx(reference.lr)
