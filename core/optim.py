"""Optimizers, learning-rate schedules and gradient clipping from config, all wrapping torch.optim."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, List, Optional

import torch
from torch.optim import lr_scheduler

from core.errors import UserError
from core.registry import unknown_name_message

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
SCHEDULES = ("constant", "linear", "cosine", "step")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule over the run's optimizer steps, after an optional linear warm-up."""

    name: str = "constant"  # constant | linear | cosine | step
    warmup_steps: int = 0  # steps of linear warm-up from warmup_start_factor * lr to lr
    warmup_start_factor: float = 0.01  # LR at the first warm-up step, as a fraction of lr
    final_factor: float = 0.0  # linear and cosine: LR at the last step, as a fraction of lr
    step_size: int = 1000  # step: steps between decays
    gamma: float = 0.1  # step: factor of each decay


@dataclass
class OptimConfig:
    """A torch optimizer by name; None leaves an argument at torch's default for that optimizer."""

    name: str = "adam"  # sgd | rmsprop | adam | adamw
    lr: float = 1e-3  # base learning rate
    momentum: Optional[float] = None  # sgd, rmsprop
    dampening: Optional[float] = None  # sgd
    nesterov: Optional[bool] = None  # sgd
    alpha: Optional[float] = None  # rmsprop: decay of the squared-gradient average
    centered: Optional[bool] = None  # rmsprop: divide by the gradient's variance, not its second moment
    betas: Optional[List[float]] = None  # adam, adamw: decays of the first and second moments
    eps: Optional[float] = None  # rmsprop, adam, adamw: added to the denominator
    weight_decay: Optional[float] = None  # all: L2 penalty (decoupled in adamw)
    amsgrad: Optional[bool] = None  # adam, adamw
    maximize: Optional[bool] = None  # all: ascend instead of descend
    foreach: Optional[bool] = None  # all: torch's multi-tensor implementation
    fused: Optional[bool] = None  # all: torch's fused kernels
    capturable: Optional[bool] = None  # rmsprop, adam, adamw: safe to capture in CUDA graphs
    differentiable: Optional[bool] = None  # all: let autograd through the step
    grad_clip_norm: Optional[float] = None  # clip the global gradient norm to this value before each step
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


def _torch_arguments(optimizer: type[torch.optim.Optimizer]) -> list[str]:
    return [name for name in inspect.signature(optimizer.__init__).parameters if name not in ("self", "params")]


def build_optimizer(config: OptimConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The torch optimizer `config` names, given only the arguments that are set."""
    if config.name not in OPTIMIZERS:
        raise UserError(f"optim.name: {unknown_name_message('optimizer', config.name, list(OPTIMIZERS))}")
    optimizer = OPTIMIZERS[config.name]
    accepted = _torch_arguments(optimizer)
    arguments: dict[str, Any] = {}
    for item in fields(config):
        value = getattr(config, item.name)
        if item.name in ("name", "grad_clip_norm", "schedule") or value is None:
            continue
        if item.name not in accepted:
            raise UserError(
                f"optim.{item.name}: {config.name} takes no argument {item.name!r}; its arguments: {', '.join(accepted)}"
            )
        arguments[item.name] = tuple(value) if item.name == "betas" else value
    return optimizer(params, **arguments)


def build_scheduler(config: ScheduleConfig, optimizer: torch.optim.Optimizer,
                    total_steps: int) -> lr_scheduler.LRScheduler:
    """torch's schedulers for `config`, over `total_steps` optimizer steps, warm-up included."""
    if config.name not in SCHEDULES:
        raise UserError(f"optim.schedule.name: {unknown_name_message('schedule', config.name, list(SCHEDULES))}")
    if config.warmup_steps < 0 or config.warmup_steps >= max(total_steps, 1) and config.warmup_steps > 0:
        raise UserError(f"optim.schedule.warmup_steps must lie in [0, {total_steps}), got {config.warmup_steps}")
    main_steps = max(total_steps - config.warmup_steps, 1)
    if config.name == "constant":
        main: lr_scheduler.LRScheduler = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif config.name == "linear":
        main = lr_scheduler.LinearLR(optimizer, 1.0, config.final_factor, total_iters=main_steps)
    elif config.name == "cosine":
        base = optimizer.param_groups[0]["lr"]
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=main_steps, eta_min=base * config.final_factor)
    else:
        main = lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.warmup_steps == 0:
        return main
    warmup = lr_scheduler.LinearLR(optimizer, config.warmup_start_factor, 1.0, total_iters=config.warmup_steps)
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[config.warmup_steps])


class Optimizer:
    """Optimizer, schedule and clipping as one step: `step(loss)` does backward, clip, update, schedule."""

    def __init__(self, config: OptimConfig, params: Iterable[torch.nn.Parameter], total_steps: int) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.clip = math.inf if config.grad_clip_norm is None else config.grad_clip_norm
        if self.clip <= 0:
            raise UserError(f"optim.grad_clip_norm must be positive, got {config.grad_clip_norm}")
        self.optimizer = build_optimizer(config, self.params)
        self.scheduler = build_scheduler(config.schedule, self.optimizer, total_steps)

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        """One update from `loss`; returns the gradient norm before clipping, on the device (no sync)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.scheduler.step()
        return grad_norm.detach()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
