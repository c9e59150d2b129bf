"""Optimizers, learning-rate schedules and gradient clipping from config, all wrapping torch.optim."""
from __future__ import annotations

import bisect
import inspect
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
    "radam": torch.optim.RAdam,  # Liu et al. 2020; PQN's optimizer (Gallici et al. 2024)
}
SCHEDULES = ("constant", "linear", "cosine", "step", "piecewise")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule over the run's optimizer steps, after an optional linear warm-up."""

    name: str = "constant"  # constant | linear | cosine | step | piecewise
    warmup_steps: int = 0  # steps of linear warm-up from warmup_start_factor * lr to lr, before the schedule
    warmup_start_factor: float = 0.01  # LR at the first warm-up step, as a fraction of lr; in (0, 1]
    final_factor: float = 0.0  # linear and cosine: LR at the last step, as a fraction of lr; in [0, 1]
    step_size: int = 1000  # step: optimizer steps between decays
    gamma: float = 0.1  # step: factor of each decay
    milestones: List[int] = field(default_factory=list)  # piecewise: steps (after warm-up) where a new factor starts
    factors: List[float] = field(default_factory=list)  # piecewise: the LR factor from each milestone on


@dataclass
class OptimConfig:
    """A torch optimizer by name; None leaves an argument at torch's default for that optimizer."""

    name: str = "adam"  # sgd | rmsprop | adam | adamw | radam
    lr: float = 1e-3  # base learning rate
    momentum: Optional[float] = None  # sgd, rmsprop
    dampening: Optional[float] = None  # sgd
    nesterov: Optional[bool] = None  # sgd
    alpha: Optional[float] = None  # rmsprop: decay of the squared-gradient average
    centered: Optional[bool] = None  # rmsprop: divide by the gradient's variance, not its second moment
    betas: Optional[List[float]] = None  # adam, adamw, radam: decays of the first and second moments
    eps: Optional[float] = None  # rmsprop, adam, adamw, radam: added to the denominator
    weight_decay: Optional[float] = None  # all: L2 penalty (decoupled in adamw)
    amsgrad: Optional[bool] = None  # adam, adamw: use the maximum of past second moments
    maximize: Optional[bool] = None  # all: ascend instead of descend
    foreach: Optional[bool] = None  # all: multi-tensor kernels; null = on where fused kernels are missing (rmsprop, radam)
    fused: Optional[bool] = None  # sgd, adam, adamw: one kernel per tensor; null = on unless foreach is set
    capturable: Optional[bool] = None  # rmsprop, adam, adamw, radam: safe to capture in CUDA graphs
    differentiable: Optional[bool] = None  # all: let autograd through the step
    grad_clip_norm: Optional[float] = None  # clip the global gradient norm to this value before each step
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # learning-rate schedule


# OptimConfig fields that are not arguments of the torch optimizer.
_NOT_TORCH_ARGUMENTS = ("name", "grad_clip_norm", "schedule")


def _torch_arguments(optimizer: type[torch.optim.Optimizer]) -> list[str]:
    """The keyword arguments torch's optimizer class takes, read from its signature."""
    return [name for name in inspect.signature(optimizer.__init__).parameters if name not in ("self", "params")]


def build_optimizer(config: OptimConfig, params: Iterable[torch.nn.Parameter], *,
                    key: str = "optim") -> torch.optim.Optimizer:
    """The torch optimizer `config` names, given only the arguments that are set (not None).

    `key` is where `config` sits in the experiment's config, for error messages.
    """
    if config.name not in OPTIMIZERS:
        raise UserError(f"{key}.name: {unknown_name_message('optimizer', config.name, list(OPTIMIZERS))}")
    optimizer = OPTIMIZERS[config.name]
    accepted = _torch_arguments(optimizer)
    arguments: dict[str, Any] = {}
    for item in fields(config):
        value = getattr(config, item.name)
        if item.name in _NOT_TORCH_ARGUMENTS or value is None:
            continue
        if item.name not in accepted:
            raise UserError(
                f"{key}.{item.name}: {config.name} takes no argument {item.name!r}; its arguments: {', '.join(accepted)}"
            )
        arguments[item.name] = value
    if config.foreach is None and config.fused is None and not config.differentiable:
        # torch leaves both off on a CPU. Fused kernels (one pass per tensor) where the optimizer has them:
        # Adam's step of a 650k-parameter VAE takes 0.55 ms fused, 2.4 ms foreach, 3.6 ms per tensor here.
        if "fused" in accepted:
            arguments["fused"] = True
        elif "foreach" in accepted:
            arguments["foreach"] = True
    if "betas" in arguments:
        if len(arguments["betas"]) != 2:
            raise UserError(f"{key}.betas: expected two values, got {list(arguments['betas'])}")
        arguments["betas"] = tuple(arguments["betas"])
    try:
        return optimizer(params, **arguments)
    except ValueError as error:  # torch's own range checks: lr < 0, beta >= 1, nesterov without momentum, ...
        raise UserError(f"{key}: {config.name}: {error}") from error


def _check_schedule(config: ScheduleConfig, total_steps: int, key: str) -> None:
    """UserErrors for values torch would reject with a traceback, or that make no schedule."""
    if config.name not in SCHEDULES:
        raise UserError(f"{key}.name: {unknown_name_message('schedule', config.name, list(SCHEDULES))}")
    if not 0 <= config.warmup_steps <= max(total_steps, 0):
        raise UserError(f"{key}.warmup_steps must lie in [0, {total_steps}] (the run's optimizer steps), "
                        f"got {config.warmup_steps}")
    if config.warmup_steps > 0 and not 0 < config.warmup_start_factor <= 1:
        raise UserError(f"{key}.warmup_start_factor must lie in (0, 1], got {config.warmup_start_factor}")
    if config.name in ("linear", "cosine") and not 0 <= config.final_factor <= 1:
        raise UserError(f"{key}.final_factor must lie in [0, 1], got {config.final_factor}")
    if config.name == "step" and (config.step_size < 1 or config.gamma <= 0):
        raise UserError(f"{key}: step_size must be at least 1 and gamma positive, "
                        f"got step_size={config.step_size}, gamma={config.gamma}")
    if config.name == "piecewise":
        milestones = list(config.milestones)
        if len(milestones) != len(config.factors) or milestones != sorted(set(milestones)) or \
                any(step < 1 for step in milestones) or any(factor <= 0 for factor in config.factors):
            raise UserError(f"{key}: piecewise needs increasing positive milestones and as many positive factors, "
                            f"got milestones={milestones}, factors={list(config.factors)}")


def build_scheduler(config: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int, *,
                    key: str = "optim.schedule") -> lr_scheduler.LRScheduler:
    """torch's schedulers for `config` over `total_steps` optimizer steps, warm-up included.

    linear and cosine reach final_factor * lr at total_steps; cosine's floor is taken from the first
    parameter group's lr. Step the scheduler once after each optimizer step.
    """
    _check_schedule(config, total_steps, key)
    main_steps = max(total_steps - config.warmup_steps, 1)
    if config.name == "constant":
        main: lr_scheduler.LRScheduler = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif config.name == "linear":
        main = lr_scheduler.LinearLR(optimizer, 1.0, config.final_factor, total_iters=main_steps)
    elif config.name == "cosine":
        floor = optimizer.param_groups[0]["lr"] * config.final_factor
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=main_steps, eta_min=floor)
    elif config.name == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    else:
        milestones, factors = list(config.milestones), [1.0, *config.factors]
        main = lr_scheduler.LambdaLR(optimizer, lambda step: factors[bisect.bisect_right(milestones, step)])
    if config.warmup_steps == 0:
        return main
    warmup = lr_scheduler.LinearLR(optimizer, config.warmup_start_factor, 1.0, total_iters=config.warmup_steps)
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[config.warmup_steps])


class Optimizer:
    """Optimizer, schedule and gradient clipping as one call: `step(loss)` does backward, clip, update,
    schedule, and returns the gradient norm for the charts without leaving the device."""

    def __init__(self, config: OptimConfig, params: Iterable[torch.nn.Parameter], total_steps: int, *,
                 key: str = "optim", norm_every: int = 10) -> None:
        self.params = [p for p in params if p.requires_grad]
        if config.grad_clip_norm is not None and not config.grad_clip_norm > 0:
            raise UserError(f"{key}.grad_clip_norm must be positive or null, got {config.grad_clip_norm}")
        self.grad_clip_norm = config.grad_clip_norm
        self.optimizer = build_optimizer(config, self.params, key=key)
        self.scheduler = build_scheduler(config.schedule, self.optimizer, total_steps, key=f"{key}.schedule")
        self.norm_every = norm_every
        self.steps = 0

    def step(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update from `loss`. Returns `{"charts/grad_norm": norm}` (the global norm before clipping, a
        0-dim device tensor) on every `norm_every`-th step, and on every step when clipping needs the norm
        anyway; else `{}`: a norm costs a pass over all gradients, 4% of a small model's step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        figures = {}
        if self.grad_clip_norm is not None:
            figures["charts/grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip_norm)
        elif self.steps % self.norm_every == 0:
            # Only the norm: clip_grad_norm_(..., inf) would also multiply every gradient by 1.
            grads = [p.grad for p in self.params if p.grad is not None]
            figures["charts/grad_norm"] = torch.nn.utils.get_total_norm(grads)
        self.optimizer.step()
        # A bfloat16 autocast keeps one cast of each weight until its context exits; weights changed in place
        # would otherwise reach later forward passes of the same step (PQN's minibatches, the GAN's critic
        # steps) as their old values.
        torch.clear_autocast_cache()
        self.scheduler.step()
        self.steps += 1
        return figures

    @property
    def lr(self) -> float:
        """The learning rate the next step will use (first parameter group's)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """Optimizer and scheduler state; plain tensors and Python values, loadable with weights_only=True."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, so training continues exactly where it stopped."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.steps = state["steps"]
