"""Optimizers from config take torch's own steps; schedules follow their closed forms; clipping and
state round trips are exact."""
from __future__ import annotations

import io
import math
import warnings
from typing import Callable

import pytest
import torch
from omegaconf import OmegaConf

from core.errors import UserError
from core.optim import OptimConfig, Optimizer, ScheduleConfig, build_optimizer, build_scheduler


def _quadratic_steps(make_optimizer: Callable, steps: int = 5) -> torch.Tensor:
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
        (OptimConfig(name="sgd", lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.01, maximize=True),
         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.01, maximize=True)),
        (OptimConfig(name="rmsprop", lr=0.01, alpha=0.95, eps=0.01, centered=True, momentum=0.5),
         lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.95, eps=0.01, centered=True, momentum=0.5)),
        (OptimConfig(name="adam", lr=0.05, betas=[0.5, 0.9], amsgrad=True, foreach=False),
         lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.5, 0.9), amsgrad=True, foreach=False)),
        (OptimConfig(name="adamw", lr=0.05, weight_decay=0.1, eps=1e-6),
         lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1, eps=1e-6)),
    ],
)
def test_config_optimizer_steps_like_torch(config: OptimConfig, by_hand: Callable) -> None:
    ours = _quadratic_steps(lambda p: build_optimizer(config, p))
    # rlgen's default fused kernels round differently from torch's per-tensor loop, by float32 ulps.
    torch.testing.assert_close(ours, _quadratic_steps(by_hand), rtol=1e-6, atol=1e-6)
    assert not torch.equal(ours, _quadratic_steps(lambda p: torch.optim.SGD(p, lr=0.0)))


def test_unset_arguments_keep_torch_defaults() -> None:
    optimizer = build_optimizer(OptimConfig(name="adam", lr=0.01), [torch.nn.Parameter(torch.zeros(1))])
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8 and group["weight_decay"] == 0
    assert isinstance(optimizer, torch.optim.Adam) and group["lr"] == 0.01


@pytest.mark.parametrize("name, kernel", [("sgd", "fused"), ("adam", "fused"), ("adamw", "fused"),
                                          ("rmsprop", "foreach")])
def test_fast_kernels_are_on_by_default_unless_set(name: str, kernel: str) -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    assert build_optimizer(OptimConfig(name=name), params).defaults[kernel] is True
    explicit = build_optimizer(OptimConfig(name=name, foreach=False), params).defaults
    assert explicit["foreach"] is False and not explicit.get("fused")


def test_bad_names_and_arguments() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(UserError, match=r"optim.name: unknown optimizer 'adamm' \(did you mean 'adam'.*valid: adam, adamw, radam, rmsprop, sgd"):
        build_optimizer(OptimConfig(name="adamm"), params)
    with pytest.raises(UserError, match=r"optim.betas: sgd takes no argument 'betas'; its arguments: lr, momentum") as sgd:
        build_optimizer(OptimConfig(name="sgd", betas=[0.9, 0.99]), params)
    assert all(name in str(sgd.value) for name in ("dampening", "weight_decay", "nesterov", "maximize"))
    with pytest.raises(UserError, match=r"gen_optim.nesterov: adam takes no argument 'nesterov'") as adam:
        build_optimizer(OptimConfig(name="adam", nesterov=True), params, key="gen_optim")
    assert all(name in str(adam.value) for name in ("betas", "eps", "amsgrad"))
    with pytest.raises(UserError, match=r"optim.betas: expected two values"):
        build_optimizer(OptimConfig(betas=[0.9, 0.99, 0.5]), params)
    with pytest.raises(UserError, match=r"optim: adam: Invalid learning rate"):
        build_optimizer(OptimConfig(lr=-1.0), params)
    with pytest.raises(UserError, match=r"optim.grad_clip_norm must be positive"):
        Optimizer(OptimConfig(grad_clip_norm=0.0), params, total_steps=10)


@pytest.mark.parametrize(
    "schedule, message",
    [
        (ScheduleConfig(name="cosin"), r"optim.schedule.name: unknown schedule 'cosin' \(did you mean 'cosine'"),
        (ScheduleConfig(warmup_steps=11), r"optim.schedule.warmup_steps must lie in \[0, 10\]"),
        (ScheduleConfig(warmup_steps=2, warmup_start_factor=0.0), r"warmup_start_factor must lie in \(0, 1\]"),
        (ScheduleConfig(name="linear", final_factor=2.0), r"final_factor must lie in \[0, 1\]"),
        (ScheduleConfig(name="step", step_size=0), r"step_size must be at least 1"),
        (ScheduleConfig(name="piecewise", milestones=[5, 3], factors=[0.5, 0.1]), r"increasing positive milestones"),
        (ScheduleConfig(name="piecewise", milestones=[3], factors=[0.5, 0.1]), r"as many positive factors"),
    ],
)
def test_bad_schedules(schedule: ScheduleConfig, message: str) -> None:
    optimizer = build_optimizer(OptimConfig(), [torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(UserError, match=message):
        build_scheduler(schedule, optimizer, 10)


def _lrs(schedule: ScheduleConfig, total: int, base: float = 1.0) -> list[float]:
    """The LR each of `total` steps uses, failing on any warning torch emits along the way."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer = build_optimizer(OptimConfig(name="sgd", lr=base), [torch.nn.Parameter(torch.zeros(1))])
        scheduler = build_scheduler(schedule, optimizer, total)
        lrs = []
        for _ in range(total):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    return lrs


def _warmup(start: float, steps: int) -> list[float]:
    return [start + (1 - start) * t / steps for t in range(steps)]


def test_schedules_follow_their_formulas() -> None:
    total, base = 20, 0.5
    assert _lrs(ScheduleConfig(), total, base) == pytest.approx([base] * total)
    assert _lrs(ScheduleConfig(warmup_steps=4, warmup_start_factor=0.1), total, base) == pytest.approx(
        [base * f for f in _warmup(0.1, 4)] + [base] * (total - 4))

    linear = _lrs(ScheduleConfig(name="linear", final_factor=0.1), total, base)
    assert linear == pytest.approx([base * (1.0 + (0.1 - 1.0) * t / total) for t in range(total)])
    warm, main = 5, total - 5
    linear_warm = _lrs(ScheduleConfig(name="linear", warmup_steps=warm, warmup_start_factor=0.2), total, base)
    assert linear_warm == pytest.approx([base * f for f in _warmup(0.2, warm) + [1 - t / main for t in range(main)]])

    cosine = _lrs(ScheduleConfig(name="cosine", warmup_steps=warm, warmup_start_factor=0.2, final_factor=0.1),
                  total, base)
    expected = _warmup(0.2, warm) + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / main)) for t in range(main)]
    assert cosine == pytest.approx([base * f for f in expected], abs=1e-6)

    step = _lrs(ScheduleConfig(name="step", step_size=6, gamma=0.5), total, base)
    assert step == pytest.approx([base * 0.5 ** (t // 6) for t in range(total)])
    step_warm = _lrs(ScheduleConfig(name="step", step_size=6, gamma=0.5, warmup_steps=3, warmup_start_factor=0.5),
                     total, base)
    assert step_warm == pytest.approx([base * f for f in _warmup(0.5, 3) + [0.5 ** (t // 6) for t in range(total - 3)]])

    # The IWAE paper's stages: 3^i epochs at 10^(-i/7), here one step per epoch.
    stages = [3**i for i in range(3)]
    factors = [10 ** (-i / 7) for i in range(1, 3)]
    milestones = [sum(stages[:i]) for i in range(1, 3)]
    piecewise = _lrs(ScheduleConfig(name="piecewise", milestones=milestones, factors=factors), sum(stages), base)
    assert piecewise == pytest.approx([base * 10 ** (-i / 7) for i, n in enumerate(stages) for _ in range(n)])


def test_linear_and_cosine_reach_the_final_factor_at_the_last_step() -> None:
    for name in ("linear", "cosine"):
        optimizer = Optimizer(OptimConfig(name="sgd", lr=2.0, schedule=ScheduleConfig(name=name, final_factor=0.25)),
                              [torch.nn.Parameter(torch.zeros(1))], total_steps=10)
        for _ in range(10):
            optimizer.step(optimizer.params[0].sum())
        assert optimizer.lr == pytest.approx(0.5)


def test_clipping_bounds_the_update_and_reports_the_raw_norm() -> None:
    weights = torch.nn.Parameter(torch.zeros(4))
    optimizer = Optimizer(OptimConfig(name="sgd", lr=1.0, grad_clip_norm=0.5), [weights], total_steps=1)
    target = torch.tensor([3.0, 0.0, 4.0, 0.0])
    grad_norm = optimizer.step(-(weights * target).sum())["charts/grad_norm"]  # gradient = -target, norm 5
    assert grad_norm.dim() == 0 and grad_norm.item() == pytest.approx(5.0)
    assert weights.detach().norm().item() == pytest.approx(0.5)
    assert torch.allclose(weights.detach(), target / 10)


@pytest.mark.parametrize("clip", [None, 1e-3, 1e6])
def test_grad_norm_matches_one_computed_by_hand(clip: float | None) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    frozen = torch.nn.Linear(3, 5)
    frozen.requires_grad_(False)
    inputs = torch.randn(8, 3)
    before = [p.detach().clone() for p in net.parameters()]
    grads = torch.autograd.grad(net(inputs).pow(2).sum(), list(net.parameters()))
    by_hand = math.sqrt(sum(float((g ** 2).sum()) for g in grads))

    optimizer = Optimizer(OptimConfig(name="sgd", lr=1.0, grad_clip_norm=clip),
                          [*net.parameters(), *frozen.parameters()], total_steps=1)
    grad_norm = optimizer.step(net(inputs).pow(2).sum())["charts/grad_norm"]
    assert grad_norm.dim() == 0 and grad_norm.item() == pytest.approx(by_hand, rel=1e-6)
    scale = 1.0 if clip is None or clip > by_hand else clip / by_hand
    for old, new, grad in zip(before, net.parameters(), grads):
        assert torch.allclose(old - new.detach(), scale * grad, rtol=1e-4, atol=1e-7)


def _train(optimizer: Optimizer, weights: torch.nn.Parameter, steps: range) -> None:
    for step in steps:
        optimizer.step(((weights - step) ** 2).sum() + weights.prod())


def test_state_round_trip_through_weights_only_load_continues_exactly() -> None:
    config = OptimConfig(name="adam", lr=0.1, grad_clip_norm=2.0,
                         schedule=ScheduleConfig(name="cosine", warmup_steps=3, final_factor=0.1))
    torch.manual_seed(1)
    straight = torch.nn.Parameter(torch.randn(5))
    resumed = torch.nn.Parameter(straight.detach().clone())
    reference = Optimizer(config, [straight], total_steps=20)
    _train(reference, straight, range(20))

    first = Optimizer(config, [resumed], total_steps=20)
    _train(first, resumed, range(8))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = Optimizer(config, [resumed], total_steps=20)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    assert second.lr == pytest.approx(first.lr)
    _train(second, resumed, range(8, 20))
    assert torch.equal(resumed, straight)
    assert second.lr == pytest.approx(reference.lr)


def test_configs_are_omegaconf_structured() -> None:
    schema = OmegaConf.structured(OptimConfig)
    merged = OmegaConf.merge(schema, OmegaConf.create({"name": "sgd", "momentum": 0.9, "betas": [0.5, 0.9],
                                                       "schedule": {"name": "step", "gamma": 0.5}}))
    config = OmegaConf.to_object(merged)
    assert isinstance(config, OptimConfig) and isinstance(config.schedule, ScheduleConfig)
    assert config.momentum == 0.9 and config.betas == [0.5, 0.9] and config.schedule.gamma == 0.5
    assert config.nesterov is None and config.schedule.step_size == 1000


def test_grad_norm_is_reported_every_norm_every_steps_unless_clipping() -> None:
    weights = torch.nn.Parameter(torch.ones(3))
    plain = Optimizer(OptimConfig(name="sgd", lr=0.1), [weights], total_steps=10, norm_every=4)
    reported = [bool(plain.step(weights.sum())) for _ in range(9)]
    assert reported == [True, False, False, False, True, False, False, False, True]
    clipping = Optimizer(OptimConfig(name="sgd", lr=0.1, grad_clip_norm=1.0), [weights], total_steps=10, norm_every=4)
    assert all("charts/grad_norm" in clipping.step(weights.sum()) for _ in range(5))


def _two_bf16_steps(one_context: bool) -> torch.Tensor:
    """Two SGD steps of a linear layer under a bfloat16 autocast, in one context or one context each."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 1)
    optimizer = Optimizer(OptimConfig(name="sgd", lr=0.5), layer.parameters(), total_steps=2)
    inputs, target = torch.randn(16, 8), torch.randn(16, 1)

    def step() -> None:
        optimizer.step(((layer(inputs).float() - target) ** 2).mean())

    if one_context:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            step()
            step()
    else:
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                step()
    return layer.weight.detach().clone()


def test_a_step_inside_a_bf16_autocast_is_seen_by_the_next_forward_pass() -> None:
    # The autocast keeps its bfloat16 copy of each weight until the context exits; the optimizer drops it, so
    # several steps in one training step (PQN's minibatches) each see the weights the last one left.
    assert torch.equal(_two_bf16_steps(one_context=True), _two_bf16_steps(one_context=False))
